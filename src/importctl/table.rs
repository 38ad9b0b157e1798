//! Tables and their JSON form, as systemd's format-table prints them: a header of the
//! column names in upper case, cells padded to the widest of their column (numbers
//! right-aligned), one space between columns, no trailing blanks, `-` for an empty cell;
//! or, with `--json=`, an array of objects keyed by the column names (lower case), in
//! column order, compact (`short`) or in systemd's pretty style (tab indentation,
//! `"key" : value`).

use std::fmt::Write as _;

/// How a column's cells line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// The JSON key; the header shows it in upper case.
    pub name: &'static str,
    pub align: Align,
    /// Shown in JSON only.
    pub hidden: bool,
}

impl Column {
    pub const fn left(name: &'static str) -> Column {
        Column {
            name,
            align: Align::Left,
            hidden: false,
        }
    }

    pub const fn right(name: &'static str) -> Column {
        Column {
            name,
            align: Align::Right,
            hidden: false,
        }
    }

    pub const fn json_only(name: &'static str) -> Column {
        Column {
            name,
            align: Align::Right,
            hidden: true,
        }
    }
}

/// A JSON value of a cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(u64),
    Str(String),
}

/// One cell: what the table shows (`""` shows as `-`) and what JSON carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub text: String,
    pub json: Json,
}

impl Cell {
    pub fn str(s: &str) -> Cell {
        Cell {
            text: s.to_string(),
            json: Json::Str(s.to_string()),
        }
    }

    pub fn number(n: u64) -> Cell {
        Cell {
            text: n.to_string(),
            json: Json::Number(n),
        }
    }

    /// Shown as `text`, `null` in JSON when `json` is `None`.
    pub fn shown(text: String, json: Option<Json>) -> Cell {
        Cell {
            text,
            json: json.unwrap_or(Json::Null),
        }
    }
}

/// `--json=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonMode {
    Off,
    Short,
    Pretty,
}

/// The table as text; `header` false leaves the header line out.
pub fn render(columns: &[Column], rows: &[Vec<Cell>], header: bool) -> String {
    let shown: Vec<usize> = (0..columns.len()).filter(|&i| !columns[i].hidden).collect();
    let text = |row: &[Cell], i: usize| -> String {
        match row[i].text.as_str() {
            "" => "-".to_string(),
            t => t.to_string(),
        }
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    if header {
        lines.push(
            shown
                .iter()
                .map(|&i| columns[i].name.to_uppercase())
                .collect(),
        );
    }
    for row in rows {
        lines.push(shown.iter().map(|&i| text(row, i)).collect());
    }
    let widths: Vec<usize> = (0..shown.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (n, line) in lines.iter().enumerate() {
        let mut s = String::new();
        for (c, cell) in line.iter().enumerate() {
            if c > 0 {
                s.push(' ');
            }
            let pad = widths[c] - cell.chars().count();
            // Header cells are left-aligned; data cells follow their column.
            let right = columns[shown[c]].align == Align::Right && !(header && n == 0);
            if right {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

fn json_value(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::Str(s) => serde_json::to_string(s).expect("strings serialize"),
    }
}

fn json_key(name: &str) -> String {
    serde_json::to_string(name).expect("strings serialize")
}

/// The rows as a JSON array of objects, with a final newline.
pub fn render_json(columns: &[Column], rows: &[Vec<Cell>], mode: JsonMode) -> String {
    let mut out = String::new();
    if mode == JsonMode::Short {
        out.push('[');
        for (r, row) in rows.iter().enumerate() {
            if r > 0 {
                out.push(',');
            }
            out.push('{');
            for (i, col) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:{}", json_key(col.name), json_value(&row[i].json));
            }
            out.push('}');
        }
        out.push_str("]\n");
        return out;
    }
    out.push_str("[\n");
    for (r, row) in rows.iter().enumerate() {
        out.push_str("\t{\n");
        for (i, col) in columns.iter().enumerate() {
            let comma = if i + 1 < columns.len() { "," } else { "" };
            let _ = writeln!(
                out,
                "\t\t{} : {}{comma}",
                json_key(col.name),
                json_value(&row[i].json)
            );
        }
        out.push_str(if r + 1 < rows.len() {
            "\t},\n"
        } else {
            "\t}\n"
        });
    }
    out.push_str("]\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 4] = [
        Column::right("id"),
        Column::right("progress"),
        Column::left("local"),
        Column::json_only("secret"),
    ];

    fn rows() -> Vec<Vec<Cell>> {
        vec![
            vec![
                Cell::number(7),
                Cell::shown("42%".into(), Some(Json::Number(42))),
                Cell::str("alpine"),
                Cell::number(1),
            ],
            vec![
                Cell::number(12),
                Cell::shown(String::new(), None),
                Cell::str(""),
                Cell::shown(String::new(), Some(Json::Bool(true))),
            ],
        ]
    }

    #[test]
    fn tables_pad_align_and_trim() {
        assert_eq!(
            render(&COLUMNS, &rows(), true),
            "ID PROGRESS LOCAL\n 7      42% alpine\n12        - -\n"
        );
        assert_eq!(render(&COLUMNS, &rows()[..1], false), "7 42% alpine\n");
    }

    #[test]
    fn json_in_both_styles() {
        assert_eq!(
            render_json(&COLUMNS, &rows(), JsonMode::Short),
            "[{\"id\":7,\"progress\":42,\"local\":\"alpine\",\"secret\":1},\
             {\"id\":12,\"progress\":null,\"local\":\"\",\"secret\":true}]\n"
        );
        assert_eq!(
            render_json(&COLUMNS[..1], &rows()[..1], JsonMode::Pretty),
            "[\n\t{\n\t\t\"id\" : 7\n\t}\n]\n"
        );
    }
}
