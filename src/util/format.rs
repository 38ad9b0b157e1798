//! Human-readable sizes and durations for the progress lines, and parsing of HTTP dates
//! (the `Last-Modified` header).

use crate::util::error::{Error, Result};

pub const USEC_PER_MSEC: u64 = 1_000;
pub const USEC_PER_SEC: u64 = 1_000_000;
pub const USEC_PER_MINUTE: u64 = 60 * USEC_PER_SEC;
pub const USEC_PER_HOUR: u64 = 60 * USEC_PER_MINUTE;
pub const USEC_PER_DAY: u64 = 24 * USEC_PER_HOUR;
pub const USEC_PER_WEEK: u64 = 7 * USEC_PER_DAY;
/// systemd's month: 30.44 days.
pub const USEC_PER_MONTH: u64 = 2_629_800 * USEC_PER_SEC;
/// systemd's year: 365.25 days.
pub const USEC_PER_YEAR: u64 = 31_557_600 * USEC_PER_SEC;
/// systemd's `USEC_INFINITY`.
pub const USEC_INFINITY: u64 = u64::MAX;

/// A byte count the way the C tool prints sizes and rates: with the largest binary
/// factor (E, P, T, G, M, K) not above the value, one decimal digit that is truncated
/// rather than rounded (`35.3M`, `1.4K`); below 1024 the plain count (`79B`).
pub fn format_bytes(bytes: u64) -> String {
    const FACTORS: [(&str, u64); 6] = [
        ("E", 1 << 60),
        ("P", 1 << 50),
        ("T", 1 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (suffix, factor) in FACTORS {
        if bytes >= factor {
            // In u128 so that ten times a huge value cannot overflow (the C code's
            // off_t arithmetic could).
            let tenths = (u128::from(bytes) * 10 / u128::from(factor)) % 10;
            return format!("{}.{}{}", bytes / factor, tenths, suffix);
        }
    }
    format!("{bytes}B")
}

/// A duration in µs the way systemd's `format_timespan` writes it: units y, month, w, d,
/// h, min, s, ms, us separated by spaces, `0` for zero, `infinity` for
/// [`USEC_INFINITY`]. Below one minute a remainder is written in dot notation
/// (`1.500s`) with as many decimals as `accuracy` (in µs) leaves; components smaller
/// than `accuracy` are dropped once something has been written.
///
/// With 1 s accuracy (what the progress lines use): `9s`, `1min 5s`, `950ms`.
pub fn format_timespan(usec: u64, accuracy: u64) -> String {
    const UNITS: [(&str, u64); 9] = [
        ("y", USEC_PER_YEAR),
        ("month", USEC_PER_MONTH),
        ("w", USEC_PER_WEEK),
        ("d", USEC_PER_DAY),
        ("h", USEC_PER_HOUR),
        ("min", USEC_PER_MINUTE),
        ("s", USEC_PER_SEC),
        ("ms", USEC_PER_MSEC),
        ("us", 1),
    ];

    if usec == USEC_INFINITY {
        return "infinity".to_string();
    }
    if usec == 0 {
        return "0".to_string();
    }

    let mut out = String::new();
    let mut left = usec;
    for (suffix, unit) in UNITS {
        if left == 0 || (left < accuracy && !out.is_empty()) {
            break;
        }
        if left < unit {
            continue;
        }
        let separator = if out.is_empty() { "" } else { " " };
        let whole = left / unit;
        let mut remainder = left % unit;

        // Below a minute a remainder goes after a decimal point, cut to the digits the
        // accuracy leaves (one digit per power of ten of the unit, minus one per power
        // of ten of the accuracy). When no digit is left, fall through to the plain
        // form and let the next, smaller unit decide.
        if left < USEC_PER_MINUTE && remainder > 0 {
            let mut decimals = decimal_digits(unit) as i32;
            let mut acc = accuracy;
            while acc > 1 {
                remainder /= 10;
                decimals -= 1;
                acc /= 10;
            }
            if decimals > 0 {
                let width = decimals as usize;
                out.push_str(&format!("{separator}{whole}.{remainder:0width$}{suffix}"));
                break;
            }
        }

        out.push_str(&format!("{separator}{whole}{suffix}"));
        left %= unit;
    }
    out
}

/// A point in time (µs since the epoch) as systemd's `format_timestamp()` writes it, in
/// the local time zone: `Sat 2024-01-06 12:34:56 UTC`. `None` for 0 and
/// [`USEC_INFINITY`] (unset) and for times the C library cannot convert.
pub fn format_timestamp(usec: u64) -> Option<String> {
    if usec == 0 || usec == USEC_INFINITY {
        return None;
    }
    let t = crate::util::sys::localtime(i64::try_from(usec / USEC_PER_SEC).ok()?)?;
    let weekday = WEEKDAYS.get(t.weekday as usize)?;
    Some(format!(
        "{} {:04}-{:02}-{:02} {:02}:{:02}:{:02} {}",
        &weekday[..3],
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.zone
    ))
    .map(|s| s.trim_end().to_string())
}

/// How many times `n` can be divided by ten before reaching 1 (6 for a second in µs).
fn decimal_digits(mut n: u64) -> u32 {
    let mut digits = 0;
    while n > 1 {
        n /= 10;
        digits += 1;
    }
    digits
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The three date formats HTTP allows, in `strptime` notation, tried in this order.
const HTTP_DATE_FORMATS: [&str; 3] = [
    // RFC 822/1123: "Sun, 06 Nov 1994 08:49:37 GMT"
    "%a, %d %b %Y %H:%M:%S %Z",
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
    "%A, %d-%b-%y %H:%M:%S %Z",
    // asctime(): "Sun Nov  6 08:49:37 1994"
    "%a %b %d %H:%M:%S %Y",
];

/// Parse an HTTP date (`Last-Modified:`) into µs since the epoch.
///
/// The formats and the matching rules are those of glibc's `strptime` in the C locale
/// as the C tool used it: names match case-insensitively in full or abbreviated form,
/// a space in the format matches any run of whitespace, numbers may be preceded by
/// spaces, the whole string must be consumed, and the weekday is not checked against the
/// date. Out-of-range days and a leap second roll over as `timegm` does. Unlike glibc's
/// `%Z`, which skips any word, the zone must be `GMT` or `UTC`. Dates before 1970 and
/// anything else are EINVAL.
pub fn parse_http_time(s: &str) -> Result<u64> {
    HTTP_DATE_FORMATS
        .iter()
        .find_map(|format| DateFields::scan(s, format))
        .and_then(|fields| fields.to_unix_seconds())
        .and_then(|secs| secs.checked_mul(USEC_PER_SEC))
        .ok_or_else(|| Error::new(libc::EINVAL))
}

/// The fields a date format fills in (`struct tm` without the weekday, which is read
/// but never used).
#[derive(Debug, Default)]
struct DateFields {
    year: i64,
    /// 0-based.
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
}

impl DateFields {
    /// Match `input` against a `strptime` format made of the directives used in
    /// [`HTTP_DATE_FORMATS`]; `None` unless all of `input` is consumed.
    fn scan(input: &str, format: &str) -> Option<DateFields> {
        let mut fields = DateFields::default();
        let mut rest = input.as_bytes();
        let mut directives = format.bytes();
        while let Some(f) = directives.next() {
            match f {
                b'%' => {
                    let directive = directives.next()?;
                    rest = fields.apply(directive, rest)?;
                }
                b' ' => rest = skip_spaces(rest),
                literal => rest = rest.strip_prefix(&[literal])?,
            }
        }
        rest.is_empty().then_some(fields)
    }

    /// Apply one `%` directive to the start of `rest`; returns what is left.
    fn apply<'a>(&mut self, directive: u8, rest: &'a [u8]) -> Option<&'a [u8]> {
        match directive {
            b'a' | b'A' => match_name(rest, &WEEKDAYS).map(|(_, rest)| rest),
            b'b' => {
                let (month, rest) = match_name(rest, &MONTHS)?;
                self.month = month as i64;
                Some(rest)
            }
            b'd' => number(rest, 2, 1, 31, &mut self.day),
            b'H' => number(rest, 2, 0, 23, &mut self.hour),
            b'M' => number(rest, 2, 0, 59, &mut self.minute),
            // glibc allows up to 61 (historical double leap seconds).
            b'S' => number(rest, 2, 0, 61, &mut self.second),
            b'Y' => number(rest, 4, 0, 9999, &mut self.year),
            b'y' => {
                let mut yy = 0;
                let rest = number(rest, 2, 0, 99, &mut yy)?;
                // POSIX: 69–99 are 1969–1999, 00–68 are 2000–2068.
                self.year = if yy >= 69 { 1900 + yy } else { 2000 + yy };
                Some(rest)
            }
            b'Z' => {
                let rest = skip_spaces(rest);
                let zone_len = rest.iter().take_while(|b| !is_space(**b)).count();
                let zone = &rest[..zone_len];
                (zone.eq_ignore_ascii_case(b"GMT") || zone.eq_ignore_ascii_case(b"UTC"))
                    .then_some(&rest[zone_len..])
            }
            _ => None,
        }
    }

    /// Seconds since the epoch, normalising overflowing days and seconds like `timegm`;
    /// `None` before 1970.
    fn to_unix_seconds(&self) -> Option<u64> {
        let days = days_from_civil(self.year, self.month + 1, 1) + self.day - 1;
        let secs = days * 86_400 + self.hour * 3_600 + self.minute * 60 + self.second;
        u64::try_from(secs).ok()
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| is_space(**b)).count();
    &s[n..]
}

/// Match a full name or its three-letter abbreviation, case-insensitively; returns its
/// index and the rest.
fn match_name<'a>(s: &'a [u8], names: &[&str]) -> Option<(usize, &'a [u8])> {
    names.iter().enumerate().find_map(|(index, name)| {
        let name = name.as_bytes();
        [name, &name[..3]].into_iter().find_map(|candidate| {
            let head = s.get(..candidate.len())?;
            head.eq_ignore_ascii_case(candidate)
                .then(|| (index, &s[candidate.len()..]))
        })
    })
}

/// Read 1 to `max_digits` decimal digits (after optional whitespace) into `value` if it
/// lies within `min..=max`; returns the rest.
fn number<'a>(
    s: &'a [u8],
    max_digits: usize,
    min: i64,
    max: i64,
    value: &mut i64,
) -> Option<&'a [u8]> {
    let s = skip_spaces(s);
    let len = s
        .iter()
        .take(max_digits)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if len == 0 {
        return None;
    }
    let n = s[..len]
        .iter()
        .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    if !(min..=max).contains(&n) {
        return None;
    }
    *value = n;
    Some(&s[len..])
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (month 1-based), negative
/// before it. Howard Hinnant's `days_from_civil` algorithm.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = (month + 9) % 12; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_systemd_prints_them() {
        assert_eq!(format_timestamp(0), None);
        assert_eq!(format_timestamp(USEC_INFINITY), None);
        // 2023-11-14 22:13:20 UTC; the zone is the machine's, so only the shape is fixed.
        let t = format_timestamp(1_700_000_000 * USEC_PER_SEC).unwrap();
        let (weekday, rest) = t.split_at(3);
        assert!(WEEKDAYS.iter().any(|w| w.starts_with(weekday)), "{t}");
        assert!(rest.starts_with(" 2023-11-1"), "{t}");
        assert_eq!(&rest[14..15], ":", "{t}");
    }

    #[test]
    fn bytes_spec_examples() {
        assert_eq!(format_bytes(79), "79B");
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1.0K");
        // 1.4K: 1500/1024 = 1.46…, truncated, not rounded.
        assert_eq!(format_bytes(1500), "1.4K");
        assert_eq!(format_bytes(37_015_962), "35.3M");
        assert_eq!(format_bytes((1 << 20) - 1), "1023.9K");
        assert_eq!(format_bytes(1 << 30), "1.0G");
        assert_eq!(format_bytes(5 << 40), "5.0T");
        assert_eq!(format_bytes(3 << 50), "3.0P");
        assert_eq!(format_bytes(u64::MAX), "15.9E");
    }

    #[test]
    fn timespan_with_one_second_accuracy() {
        let s = USEC_PER_SEC;
        assert_eq!(format_timespan(0, s), "0");
        assert_eq!(format_timespan(9 * s, s), "9s");
        // The remainder below the accuracy is cut, not rounded.
        assert_eq!(format_timespan(9 * s + 999_999, s), "9s");
        assert_eq!(format_timespan(65 * s, s), "1min 5s");
        assert_eq!(format_timespan(65 * s + 700_000, s), "1min 5s");
        assert_eq!(format_timespan(950 * USEC_PER_MSEC, s), "950ms");
        assert_eq!(format_timespan(950 * USEC_PER_MSEC + 7, s), "950ms");
        assert_eq!(format_timespan(7, s), "7us");
        assert_eq!(format_timespan(60 * s, s), "1min");
        assert_eq!(format_timespan(3 * USEC_PER_HOUR + 5 * s, s), "3h 5s");
        assert_eq!(
            format_timespan(USEC_PER_DAY + USEC_PER_HOUR + USEC_PER_MINUTE + s, s),
            "1d 1h 1min 1s"
        );
        assert_eq!(format_timespan(USEC_PER_WEEK * 2, s), "2w");
        assert_eq!(
            format_timespan(USEC_PER_MONTH + USEC_PER_DAY, s),
            "1month 1d"
        );
        assert_eq!(format_timespan(USEC_PER_YEAR + 3 * s, s), "1y 3s");
        assert_eq!(format_timespan(USEC_INFINITY, s), "infinity");
    }

    #[test]
    fn timespan_dot_notation_follows_the_accuracy() {
        assert_eq!(format_timespan(1_500_000, 1), "1.500000s");
        assert_eq!(format_timespan(1_500_000, USEC_PER_MSEC), "1.500s");
        assert_eq!(format_timespan(1_500_000, 100 * USEC_PER_MSEC), "1.5s");
        assert_eq!(format_timespan(1_050_000, 100 * USEC_PER_MSEC), "1.0s");
        assert_eq!(format_timespan(1_500, 1), "1.500ms");
        assert_eq!(format_timespan(2 * USEC_PER_SEC, 1), "2s");
        // From a minute up components are listed; the rest below a minute is dotted.
        assert_eq!(format_timespan(61_000_001, 1), "1min 1.000001s");
        // The dot form is chosen before the accuracy cuts the decimals (systemd does
        // the same), so the zeros stay.
        assert_eq!(format_timespan(61_000_001, USEC_PER_MSEC), "1min 1.000s");
        assert_eq!(format_timespan(120_000_001, 1), "2min 1us");
        // Accuracy drops the smaller components once something was written.
        assert_eq!(
            format_timespan(USEC_PER_HOUR + 30 * USEC_PER_SEC, USEC_PER_MINUTE),
            "1h"
        );
    }

    #[test]
    fn http_dates_in_all_three_formats() {
        let t = 784_111_777 * USEC_PER_SEC;
        assert_eq!(parse_http_time("Sun, 06 Nov 1994 08:49:37 GMT").unwrap(), t);
        assert_eq!(
            parse_http_time("Sunday, 06-Nov-94 08:49:37 GMT").unwrap(),
            t
        );
        assert_eq!(parse_http_time("Sun Nov  6 08:49:37 1994").unwrap(), t);
        // Case and whitespace leniency of strptime; full names for %a/%b; UTC zone.
        assert_eq!(
            parse_http_time("sunday,  6 november 1994 08:49:37 utc").unwrap(),
            t
        );
        // The weekday is not checked.
        assert_eq!(parse_http_time("Mon, 06 Nov 1994 08:49:37 GMT").unwrap(), t);
        assert_eq!(parse_http_time("Thu, 01 Jan 1970 00:00:00 GMT").unwrap(), 0);
        assert_eq!(
            parse_http_time("Tue, 29 Feb 2000 23:59:59 GMT").unwrap(),
            951_868_799 * USEC_PER_SEC
        );
        assert_eq!(
            parse_http_time("Wed, 21 Oct 2015 07:28:00 GMT").unwrap(),
            1_445_412_480 * USEC_PER_SEC
        );
        // RFC 850 two-digit years: 00–68 are 20xx.
        assert_eq!(
            parse_http_time("Friday, 01-Jan-38 00:00:00 GMT").unwrap(),
            2_145_916_800 * USEC_PER_SEC
        );
        // timegm-style roll-over: 31 Feb is 3 Mar, second 60 is the next minute.
        assert_eq!(
            parse_http_time("Sat, 31 Feb 2001 00:00:00 GMT").unwrap(),
            parse_http_time("Sat, 03 Mar 2001 00:00:00 GMT").unwrap()
        );
        assert_eq!(
            parse_http_time("Sat, 31 Dec 2016 23:59:60 GMT").unwrap(),
            1_483_228_800 * USEC_PER_SEC
        );
    }

    #[test]
    fn http_dates_rejected() {
        for s in [
            "",
            "garbage",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 GMT ",
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",
            "Sun, 06 Nov 19941 08:49:37 GMT",
        ] {
            assert_eq!(
                parse_http_time(s).unwrap_err().errno(),
                libc::EINVAL,
                "input {s:?}"
            );
        }
    }
}
