//! The worker's output, cut into log lines (spec §6.4).
//!
//! Output is read into a buffer of `LINE_MAX` (2048) bytes and split at `\n` or NUL; runs
//! of separators and empty lines are dropped. A full buffer without any separator is
//! passed on as one line, so an endless line cannot stall the relay; what is left when
//! the worker exits is flushed as the last line. Each line's `<N>` prefix (what
//! `SYSTEMD_LOG_TARGET=console-prefixed` writes) gives its syslog priority, info without
//! one.
//!
//! Deviation: systemd checks "buffer full" before looking for separators, so a read
//! that fills the buffer with several lines becomes one message with newlines inside;
//! here the lines in a full buffer are still split.

use std::os::fd::AsFd;

use crate::util::error::Result;
use crate::util::log::LOG_INFO;

/// systemd's `LINE_MAX`: the relay's buffer size.
pub const LINE_MAX: usize = 2048;

/// One relayed line: its priority and its text without the prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub priority: u8,
    pub text: String,
}

/// The bytes read from a worker that do not form a line yet.
#[derive(Default)]
pub struct LogBuffer {
    buf: Vec<u8>,
}

/// What a read from the pipe gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// Bytes arrived (and were buffered).
    Data,
    /// Nothing to read now.
    Empty,
    /// The worker closed its end.
    Eof,
}

impl LogBuffer {
    /// Read once from `fd` (non-blocking) into the free part of the buffer.
    pub fn read_from(&mut self, fd: impl AsFd) -> Result<Read> {
        let mut chunk = [0u8; LINE_MAX];
        let room = LINE_MAX - self.buf.len();
        match nix::unistd::read(fd, &mut chunk[..room]) {
            Ok(0) => Ok(Read::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Read::Data)
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(Read::Empty),
            Err(e) => Err(e.into()),
        }
    }

    /// Add bytes; at most what fits.
    #[cfg(test)]
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(LINE_MAX - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// Take the complete lines out; with `flush`, the unterminated rest too.
    pub fn lines(&mut self, flush: bool) -> Vec<LogLine> {
        let mut out = Vec::new();
        loop {
            let end = match self.buf.iter().position(|&b| b == b'\n' || b == 0) {
                Some(e) => e,
                None if self.buf.is_empty() => break,
                None if flush || self.buf.len() >= LINE_MAX => self.buf.len(),
                None => break,
            };
            let skip = self.buf[end..]
                .iter()
                .take_while(|&&b| b == b'\n' || b == 0)
                .count();
            let line: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            if !line.is_empty() {
                out.push(parse(&line));
            }
        }
        out
    }
}

/// Split a `<N>` prefix off (N a syslog priority, facility bits allowed, as systemd's
/// `syslog_parse_priority` with facilities).
fn parse(line: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(line);
    let parsed = text
        .strip_prefix('<')
        .and_then(|rest| rest.split_once('>'))
        .filter(|(n, _)| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(n, rest)| {
            n.parse::<u16>()
                .ok()
                .filter(|v| *v <= 191)
                .map(|v| (v, rest))
        });
    match parsed {
        Some((value, rest)) => LogLine {
            priority: (value & 7) as u8,
            text: rest.to_string(),
        },
        None => LogLine {
            priority: LOG_INFO,
            text: text.into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[LogLine]) -> Vec<(u8, &str)> {
        lines
            .iter()
            .map(|l| (l.priority, l.text.as_str()))
            .collect()
    }

    #[test]
    fn lines_split_at_newlines_and_nuls_with_priorities() {
        let mut b = LogBuffer::default();
        b.push(b"<6>Downloading.\n<3>Failed\0\0\n\nplain\n<5>partial");
        assert_eq!(
            texts(&b.lines(false)),
            [(6, "Downloading."), (3, "Failed"), (6, "plain")]
        );
        b.push(b" rest\n");
        assert_eq!(texts(&b.lines(false)), [(5, "partial rest")]);
        b.push(b"<7>unterminated");
        assert!(b.lines(false).is_empty());
        assert_eq!(texts(&b.lines(true)), [(7, "unterminated")]);
        assert!(b.lines(true).is_empty());
    }

    #[test]
    fn odd_prefixes_stay_in_the_text() {
        for odd in ["<>x", "<1234>x", "<192>x", "<a>x", "<6 x", "6>x"] {
            let mut b = LogBuffer::default();
            b.push(odd.as_bytes());
            assert_eq!(texts(&b.lines(true)), [(LOG_INFO, odd)], "{odd}");
        }
        let mut b = LogBuffer::default();
        b.push(b"<30>daemon facility\n");
        assert_eq!(texts(&b.lines(false)), [(6, "daemon facility")]);
    }

    #[test]
    fn a_full_buffer_without_separator_is_one_line() {
        let mut b = LogBuffer::default();
        assert_eq!(b.push(&[b'a'; LINE_MAX + 10]), LINE_MAX);
        let lines = b.lines(false);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].text.len(), LINE_MAX);
        // A full buffer with separators is still split into its lines.
        let mut data = b"one\ntwo\n".to_vec();
        data.resize(LINE_MAX, b'z');
        b.push(&data);
        assert_eq!(
            texts(&b.lines(false))[..2],
            [(LOG_INFO, "one"), (LOG_INFO, "two")]
        );
        let rest = b.lines(false);
        assert!(rest.is_empty(), "the rest waits for more");
        assert_eq!(b.lines(true)[0].text.len(), LINE_MAX - 8);
    }

    #[test]
    fn reads_come_from_the_pipe_until_eof() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        let mut b = LogBuffer::default();
        assert_eq!(b.read_from(&r).unwrap(), Read::Empty);
        nix::unistd::write(&w, b"<4>warn\n").unwrap();
        assert_eq!(b.read_from(&r).unwrap(), Read::Data);
        assert_eq!(texts(&b.lines(false)), [(4, "warn")]);
        drop(w);
        assert_eq!(b.read_from(&r).unwrap(), Read::Eof);
    }
}
