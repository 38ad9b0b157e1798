//! Cancellation: a flag set while the stream is being read stops the unpack with
//! ECANCELED, both between members and inside one long member.

mod common;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::tarball::{self, Header};
use systemd_import::import::unpack::{Mode, Options};

/// An endless tar stream of `size`-byte files that raises `cancel` (as the main thread
/// does on SIGINT) once `cancel_after` bytes have been delivered.
struct Endless {
    cancel: Arc<AtomicBool>,
    cancel_after: u64,
    delivered: u64,
    size: u64,
    pending: Vec<u8>,
    left_in_member: u64,
    next: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.delivered >= self.cancel_after {
            self.cancel.store(true, Ordering::Relaxed);
        }
        if self.pending.is_empty() && self.left_in_member == 0 {
            self.pending = Header::file(format!("f{}", self.next))
                .gnu()
                .size(self.size as i64)
                .block(0)
                .to_vec();
            self.next += 1;
            self.left_in_member = self.size.div_ceil(512) * 512;
        }
        let n = if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            n
        } else {
            let n = (buf.len() as u64).min(self.left_in_member).min(64 << 10) as usize;
            buf[..n].fill(b'z');
            self.left_in_member -= n as u64;
            n
        };
        self.delivered += n as u64;
        Ok(n)
    }
}

fn run(size: u64) -> (systemd_import::util::error::Error, u64) {
    let work = tarball::scratch();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut input = Endless {
        cancel: cancel.clone(),
        cancel_after: 8 << 20,
        delivered: 0,
        size,
        pending: Vec::new(),
        left_in_member: 0,
        next: 0,
    };
    let mut options = Options::new(Mode::Plain);
    options.cancel = Some(cancel);
    let err = tarball::unpack_with(work.path(), &mut input, &options).unwrap_err();
    (err, input.delivered)
}

#[test]
fn cancel_between_members() {
    let (err, delivered) = run(1000);
    assert_eq!(err.errno(), libc::ECANCELED);
    // Stopped at the next refill after the flag went up: at most one buffer (1 MiB)
    // plus one read later.
    assert!(
        delivered < (8 << 20) + (2 << 20),
        "read {delivered} bytes after the cancel"
    );
}

#[test]
fn cancel_inside_a_long_member() {
    let (err, delivered) = run(64 << 30);
    assert_eq!(err.errno(), libc::ECANCELED);
    assert!(
        delivered < (8 << 20) + (2 << 20),
        "read {delivered} bytes after the cancel"
    );
}
