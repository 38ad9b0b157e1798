//! The verbs that ask and print: `list-transfers`, `list-images`, `cancel-transfer`, with
//! upstream's tables, footers, JSON and messages.

use dbus::arg::AppendAll;
use dbus::Message;

use super::client;
use super::options::Settings;
use super::table::{self, Cell, Column, Json, JsonMode};
use crate::bus::import1::{ImageClass, ImageRow};
use crate::bus::BusError;
use crate::util::format::{format_bytes, format_timestamp};

/// A row of `ListTransfersEx` (`ussssdo`): id, type, remote, local, class, progress, path.
type TransferRow = (
    u32,
    String,
    String,
    String,
    String,
    f64,
    dbus::Path<'static>,
);
/// A row of `ListTransfers` (`usssdo`): the same without the class.
type LegacyTransferRow = (u32, String, String, String, f64, dbus::Path<'static>);

fn with_args<A: AppendAll>(member: &str, args: A) -> Message {
    let mut msg = client::manager_call(member);
    msg.append_all(args);
    msg
}

/// Print the table (or JSON) and the footer, as upstream: an empty table prints only
/// the footer, `--no-legend` and JSON drop header and footer.
fn print(settings: &Settings, columns: &[Column], rows: &[Vec<Cell>], what: &str, none: &str) {
    let mut out = String::new();
    if !rows.is_empty() {
        out.push_str(&match settings.json {
            JsonMode::Off => table::render(columns, rows, settings.legend),
            mode => table::render_json(columns, rows, mode),
        });
    }
    if settings.legend {
        if rows.is_empty() {
            out.push_str(&format!("{none}\n"));
        } else {
            out.push_str(&format!("\n{} {what} listed.\n", rows.len()));
        }
    }
    print!("{out}");
}

/// The reply's one argument, or the error logged as `what: message`.
fn read_reply<T>(reply: Result<Message, BusError>, what: &str) -> Result<T, ()>
where
    T: for<'a> dbus::arg::Get<'a> + dbus::arg::Arg,
{
    let reply = reply.map_err(|e| log::error!("{what}: {}", e.message()))?;
    reply
        .read1::<T>()
        .map_err(|e| log::error!("Failed to parse bus message: {e}"))
}

pub fn list_transfers(settings: &Settings) -> i32 {
    i32::from(try_list_transfers(settings).is_err())
}

fn try_list_transfers(settings: &Settings) -> Result<(), ()> {
    const FAILED: &str = "Could not get transfers";
    let (mut lp, mut ctl) = client::connect()?;
    let class = settings.class.map_or("", ImageClass::as_str);
    let ex = with_args("ListTransfersEx", (class, 0u64));
    let mut rows: Vec<TransferRow> = match client::call(&mut lp, &mut ctl, ex, false) {
        Err(e) if client::is_unknown_member(&e) => {
            // A daemon before systemd 256: no classes, so every transfer is a machine's.
            let legacy = client::manager_call("ListTransfers");
            let reply = client::call(&mut lp, &mut ctl, legacy, false);
            let rows: Vec<LegacyTransferRow> = read_reply(reply, FAILED)?;
            let machine = ImageClass::Machine.as_str();
            rows.into_iter()
                .filter(|_| settings.class.is_none_or(|c| c.as_str() == machine))
                .map(|(id, kind, remote, local, progress, path)| {
                    (id, kind, remote, local, machine.into(), progress, path)
                })
                .collect()
        }
        reply => read_reply(reply, FAILED)?,
    };
    rows.sort_by(|a, b| (&a.3, a.0).cmp(&(&b.3, b.0)));
    const COLUMNS: [Column; 6] = [
        Column::right("id"),
        Column::right("progress"),
        Column::left("type"),
        Column::left("class"),
        Column::left("local"),
        Column::left("remote"),
    ];
    let cells: Vec<Vec<Cell>> = rows
        .into_iter()
        .map(|(id, kind, remote, local, class, progress, _)| {
            let percent = (progress >= 0.0).then_some((progress * 100.0) as u64);
            vec![
                Cell::number(u64::from(id)),
                Cell::shown(
                    percent.map_or_else(String::new, |p| format!("{p}%")),
                    percent.map(Json::Number),
                ),
                Cell::str(&kind),
                Cell::str(&class),
                Cell::str(&local),
                Cell::str(&remote),
            ]
        })
        .collect();
    print(settings, &COLUMNS, &cells, "transfers", "No transfers.");
    Ok(())
}

pub fn list_images(settings: &Settings) -> i32 {
    i32::from(try_list_images(settings).is_err())
}

fn try_list_images(settings: &Settings) -> Result<(), ()> {
    let (mut lp, mut ctl) = client::connect()?;
    let class = settings.class.map_or("", ImageClass::as_str);
    let msg = with_args("ListImages", (class, 0u64));
    let reply = client::call(&mut lp, &mut ctl, msg, false);
    let mut rows: Vec<ImageRow> = read_reply(reply, "Could not list images")?;
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    const COLUMNS: [Column; 11] = [
        Column::left("class"),
        Column::left("name"),
        Column::left("type"),
        Column::left("path"),
        Column::left("ro"),
        Column::left("crtime"),
        Column::left("mtime"),
        Column::right("usage"),
        Column::json_only("usage-exclusive"),
        Column::right("limit"),
        Column::json_only("limit-exclusive"),
    ];
    let time = |usec: u64| {
        Cell::shown(
            format_timestamp(usec).unwrap_or_default(),
            (usec != u64::MAX).then_some(Json::Number(usec)),
        )
    };
    let size = |bytes: u64| {
        let known = bytes != u64::MAX;
        Cell::shown(
            if known {
                format_bytes(bytes)
            } else {
                String::new()
            },
            known.then_some(Json::Number(bytes)),
        )
    };
    let cells: Vec<Vec<Cell>> = rows
        .into_iter()
        .map(
            |(class, name, kind, path, ro, crtime, mtime, usage, usage_ex, limit, limit_ex)| {
                vec![
                    Cell::str(&class),
                    Cell::str(&name),
                    Cell::str(&kind),
                    Cell::str(&path),
                    Cell::shown(if ro { "ro" } else { "rw" }.into(), Some(Json::Bool(ro))),
                    time(crtime),
                    time(mtime),
                    size(usage),
                    size(usage_ex),
                    size(limit),
                    size(limit_ex),
                ]
            },
        )
        .collect();
    print(settings, &COLUMNS, &cells, "images", "No images.");
    Ok(())
}

/// systemd's `safe_atou32()` for ids: decimal digits (a leading `+` allowed), no
/// overflow.
fn parse_id(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every id is checked before the first is cancelled.
pub fn cancel_transfer(settings: &Settings, words: &[String]) -> i32 {
    let mut ids = Vec::with_capacity(words.len());
    for word in words {
        let Some(id) = parse_id(word) else {
            log::error!("Failed to parse transfer id: {word}");
            return 1;
        };
        ids.push(id);
    }
    let Ok((mut lp, mut ctl)) = client::connect() else {
        return 1;
    };
    for id in ids {
        let msg = with_args("CancelTransfer", (id,));
        if let Err(e) = client::call(&mut lp, &mut ctl, msg, settings.ask_password) {
            log::error!("Could not cancel transfer: {}", e.message());
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_decimal_u32() {
        assert_eq!(super::parse_id("42"), Some(42));
        assert_eq!(super::parse_id("+7"), Some(7));
        for bad in ["", "-1", "x", "4294967296", "1 ", "0x10"] {
            assert_eq!(super::parse_id(bad), None, "{bad}");
        }
    }
}
