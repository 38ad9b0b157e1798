//! Ranged parallel fetch of a big layer blob (`--download-ranges=`, an extension: systemd
//! has none): a blob larger than one part is fetched as `Range: bytes=a-b` requests of
//! [`RangePlan::part_size`] bytes, at most [`RangePlan::connections`] at once, each its own
//! job on the one loop, each writing its bytes at their offset of the blob's spool file.
//! A free connection takes the earliest part not started, so the spool's contiguous prefix
//! (all that its readers see, [`Spool::extend`]) grows from the start.
//!
//! Verification is the single stream's: a [`follow`] task hashes the spool's prefix in
//! order as it grows, from the page cache right behind the writes; the blob is verified
//! when the hash covered all of it and its digest checks out. Nothing of a part waits in
//! memory beyond the job's bounded queue.
//!
//! What the prefix hash covered is recorded on the spool file ([`PREFIX_XATTR`]) every
//! [`RECORD_EVERY`] bytes: a spool left by a killed pull resumes after that length only
//! (the bytes beyond it may have holes), so a re-run fetches again at most the parts
//! that were in flight plus what the hash had not reached.
//!
//! Fallback: the first response decides ([`Verdict`]). A 206 with the range asked for:
//! ranges work. A 200 (the server ignores Range) is the whole blob: that request becomes
//! the one stream, from byte 0, and the other parts stop; if the fetch resumed a prefix,
//! or a 200 comes after ranges worked, the blob goes back to one stream instead, resumed
//! after the prefix.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::spool::Spool;
use crate::curl_glue::Transport;
use crate::event::TaskHandle;
use crate::import::job::{ImportJob, JobOptions, Sink, StreamConsumer};
use crate::log_error_errno;
use crate::util::error::{Error, Result};
use crate::util::sys;

/// How big blobs are fetched: in parts of `part_size` bytes, `connections` at once. A
/// blob (or what is left of it) no larger than one part goes in one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangePlan {
    pub connections: usize,
    pub part_size: u64,
}

impl RangePlan {
    /// Measured behind a 20 MB/s-per-connection proxy (bench/README.md "Slow links"):
    /// four connections take a 256 MiB layer to four times one's rate; 16 MiB parts keep
    /// the requests few (17 for that layer) and the tail short (the last parts of four
    /// connections end within a part's time of each other).
    pub const DEFAULT: RangePlan = RangePlan {
        connections: 4,
        part_size: 16 << 20,
    };

    /// One stream for everything.
    pub const OFF: RangePlan = RangePlan {
        connections: 1,
        part_size: 16 << 20,
    };

    /// `remaining` bytes of a blob are worth fetching in parts.
    pub fn applies(&self, remaining: u64) -> bool {
        self.connections > 1 && remaining > self.part_size
    }
}

/// The length of a spool's prefix the hash covered, in decimal, on the spool file.
pub const PREFIX_XATTR: &CStr = c"user.systemd_import.prefix";
/// How often the follower records its progress.
pub const RECORD_EVERY: u64 = 4 << 20;
/// How often a waiting follower looks at its cancel flag.
const POLL: Duration = Duration::from_millis(100);
/// Size of the follower's reads.
const CHUNK: usize = 256 << 10;

/// Record on `file` that its first `len` bytes are the blob's (best effort but for the
/// first call of a fetch, whose failure means the file system cannot keep the record).
pub fn record_prefix(file: &File, len: u64) -> Result<()> {
    sys::fsetxattr(file.as_fd(), PREFIX_XATTR, len.to_string().as_bytes()).map_err(Error::from)
}

/// What [`record_prefix`] left on `file`, if anything.
pub fn recorded_prefix(file: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = sys::fgetxattr(file.as_fd(), PREFIX_XATTR, &mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.parse().ok()
}

/// How the server answers the parts: set by the first response (on its job's worker),
/// read by the other parts' workers and the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Unknown,
    /// 206: go on in parts.
    Ranges,
    /// Part `.0` was answered 200 and writes the whole blob: the others stop.
    Whole(usize),
    /// Ranges are not to be used: the blob goes back to one stream.
    Refused,
}

type Shared = Mutex<Verdict>;

fn verdict(shared: &Shared) -> Verdict {
    *shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PartState {
    Queued,
    /// Its job runs, or waits to be retried.
    Running,
    Done,
}

struct Part {
    start: u64,
    /// Exclusive.
    end: u64,
    /// Bytes of the part on disk, from its start (written by its job's worker).
    done: Arc<AtomicU64>,
    state: PartState,
}

/// A blob being fetched in parts.
pub struct RangedFetch {
    /// Hashes the prefix; dropped (cancelled and joined) when the fetch ends.
    follower: Option<TaskHandle>,
    parts: Vec<Part>,
    connections: usize,
    shared: Arc<Shared>,
}

/// What a part's completion means.
#[derive(Debug, PartialEq, Eq)]
pub enum PartEnd {
    /// All its bytes are on disk.
    Complete,
    /// It was the whole blob's stream (the follower decides).
    Whole,
    /// It ended early without an error: the blob goes back to one stream.
    Short,
}

impl RangedFetch {
    /// Parts for the bytes `from..size` of a blob.
    pub fn new(from: u64, size: u64, plan: RangePlan) -> RangedFetch {
        let step = plan.part_size.max(1);
        let parts = (from..size)
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .map(|start| Part {
                start,
                end: (start + step).min(size),
                done: Arc::new(AtomicU64::new(0)),
                state: PartState::Queued,
            })
            .collect();
        RangedFetch {
            follower: None,
            parts,
            connections: plan.connections.max(1),
            shared: Arc::new(Mutex::new(Verdict::Unknown)),
        }
    }

    pub fn part_count(&self) -> usize {
        self.parts.len()
    }

    pub fn set_follower(&mut self, task: TaskHandle) {
        self.follower = Some(task);
    }

    /// The next part to start on a free connection (the earliest queued), if any.
    pub fn next_part(&mut self) -> Option<usize> {
        if self.is_whole() || self.is_refused() {
            return None;
        }
        let running = self
            .parts
            .iter()
            .filter(|p| p.state == PartState::Running)
            .count();
        if running >= self.connections {
            return None;
        }
        let i = self
            .parts
            .iter()
            .position(|p| p.state == PartState::Queued)?;
        self.parts[i].state = PartState::Running;
        Some(i)
    }

    /// The parts whose jobs may run (to stop them).
    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.parts.len()).filter(|&i| self.parts[i].state == PartState::Running)
    }

    fn is_whole(&self) -> bool {
        self.whole_part().is_some()
    }

    /// The part answered 200 that streams the whole blob.
    pub fn whole_part(&self) -> Option<usize> {
        match verdict(&self.shared) {
            Verdict::Whole(i) => Some(i),
            _ => None,
        }
    }

    pub fn is_refused(&self) -> bool {
        verdict(&self.shared) == Verdict::Refused
    }

    /// Part `i`'s job completed well.
    pub fn part_done(&mut self, i: usize) -> PartEnd {
        if self.whole_part() == Some(i) {
            return PartEnd::Whole;
        }
        let part = &mut self.parts[i];
        if part.start + part.done.load(Ordering::Acquire) != part.end {
            return PartEnd::Short;
        }
        part.state = PartState::Done;
        PartEnd::Complete
    }

    /// Part `i` was stopped because another part streams the whole blob.
    pub fn part_stopped(&mut self, i: usize) {
        self.parts[i].state = PartState::Done;
    }

    /// The job for part `i`'s next attempt (after what its earlier ones put on disk):
    /// from `url`, into `file` (the spool at `path`).
    #[allow(clippy::too_many_arguments)]
    pub fn part_job(
        &self,
        i: usize,
        file: File,
        path: PathBuf,
        spool: Arc<Spool>,
        url: &str,
        headers: Vec<String>,
        transport: Transport,
        queue_limit: usize,
        size: u64,
    ) -> ImportJob {
        let part = &self.parts[i];
        let from = part.start + part.done.load(Ordering::Acquire);
        let target = Target {
            file,
            path,
            spool,
            shared: self.shared.clone(),
            index: i,
            from_zero: self.parts[0].start == 0,
            start: part.start,
            end: part.end,
            done: part.done.clone(),
        };
        let mut options = JobOptions::new(Sink::Stream(target.consumer()));
        options.headers = headers;
        options.transport = transport;
        options.detect_compression = false;
        options.quiet_failures = true;
        options.queue_limit = queue_limit;
        // A 200 may be the whole blob.
        options.compressed_max = size;
        options.uncompressed_max = size;
        options.resume_from = Some(from);
        options.range_end = Some(part.end - 1);
        options.own_connection = true;
        ImportJob::new(url, options)
    }
}

/// Where one part's bytes go.
struct Target {
    file: File,
    path: PathBuf,
    spool: Arc<Spool>,
    shared: Arc<Shared>,
    index: usize,
    /// The fetch started at the blob's byte 0: a 200 may be its one stream.
    from_zero: bool,
    start: u64,
    end: u64,
    done: Arc<AtomicU64>,
}

impl Target {
    /// The part's stream consumer: its bytes at their offset, each write reported to the
    /// spool.
    fn consumer(self) -> StreamConsumer {
        Box::new(move |ctx, input| {
            let whole = ctx.meta.status != 206;
            {
                let mut v = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                *v = match (*v, whole) {
                    (Verdict::Unknown | Verdict::Ranges, false) => Verdict::Ranges,
                    (Verdict::Unknown, true) if self.from_zero => {
                        log::info!(
                            "{} ignores Range requests, fetching the layer in one stream.",
                            ctx.meta.url
                        );
                        Verdict::Whole(self.index)
                    }
                    (Verdict::Unknown | Verdict::Ranges, true) => Verdict::Refused,
                    (v, _) => v,
                };
                if *v != Verdict::Ranges && *v != Verdict::Whole(self.index) {
                    return Err(stopped());
                }
            }
            let (extent, mut offset, end) = if whole {
                (0, 0, u64::MAX)
            } else {
                let from = self.start + self.done.load(Ordering::Acquire);
                (self.start, from, self.end)
            };
            let mut buf = vec![0u8; CHUNK];
            loop {
                if !whole && verdict(&self.shared) != Verdict::Ranges {
                    return Err(stopped());
                }
                let n = match input.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Error::from(e)),
                };
                if offset + n as u64 > end {
                    return Err(log_error_errno!(
                        Error::new(libc::EPROTO),
                        "{} sent more than the range asked for.",
                        ctx.meta.url
                    ));
                }
                self.file.write_all_at(&buf[..n], offset).map_err(|e| {
                    let e = Error::from(e);
                    log_error_errno!(e.clone(), "Failed to write {}: {}", self.path.display(), e)
                })?;
                offset += n as u64;
                if !whole {
                    self.done.store(offset - self.start, Ordering::Release);
                }
                self.spool.extend(extent, offset);
            }
        })
    }
}

/// A part's job ends so, without a message: the loop decides what follows.
fn stopped() -> Error {
    Error::with_message(libc::ECANCELED, "Range fetch stopped.")
}

/// Hash the spool at `path` in order as its prefix grows, from `from` (the bytes before
/// it and their hash) to `size`, recording the progress on the file: run on a task while
/// the parts download. Returns the length hashed (`size`) and the hash.
pub fn follow(
    path: &Path,
    spool: &Spool,
    from: (u64, Sha256),
    size: u64,
    cancel: &AtomicBool,
) -> Result<(u64, Sha256)> {
    let file = File::open(path).map_err(|e| {
        let e = Error::from(e);
        log_error_errno!(e.clone(), "Failed to open {}: {}", path.display(), e)
    })?;
    let (mut pos, mut hasher) = from;
    let mut recorded = pos;
    let mut buf = vec![0u8; CHUNK];
    while pos < size {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::new(libc::ECANCELED));
        }
        let Some(prefix) = spool.wait_past(pos, POLL)? else {
            continue;
        };
        let upto = prefix.min(size);
        while pos < upto {
            let want = usize::try_from(upto - pos).unwrap_or(CHUNK).min(CHUNK);
            let n = file.read_at(&mut buf[..want], pos).map_err(|e| {
                let e = Error::from(e);
                log_error_errno!(e.clone(), "Failed to read {}: {}", path.display(), e)
            })?;
            if n == 0 {
                return Err(log_error_errno!(
                    Error::new(libc::EIO),
                    "Failed to read {}: shorter than written",
                    path.display()
                ));
            }
            hasher.update(&buf[..n]);
            pos += n as u64;
        }
        if pos - recorded >= RECORD_EVERY || pos == size {
            // Best effort: a missing record only makes a re-run fetch more.
            let _ = record_prefix(&file, pos);
            recorded = pos;
        }
    }
    Ok((pos, hasher))
}

/// The hex sha256 of what [`follow`] hashed.
pub fn hex(hasher: Sha256) -> String {
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_start_earliest_first_up_to_the_connections() {
        let plan = RangePlan {
            connections: 2,
            part_size: 10,
        };
        assert!(plan.applies(11) && !plan.applies(10) && !RangePlan::OFF.applies(1 << 40));
        let mut f = RangedFetch::new(5, 40, plan);
        assert_eq!(f.part_count(), 4);
        let ends: Vec<_> = f.parts.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(ends, [(5, 15), (15, 25), (25, 35), (35, 40)]);
        assert_eq!(f.next_part(), Some(0));
        assert_eq!(f.next_part(), Some(1));
        assert_eq!(f.next_part(), None, "two connections");
        assert_eq!(f.part_done(1), PartEnd::Short, "nothing written");
        f.parts[1].done.store(10, Ordering::Release);
        assert_eq!(f.part_done(1), PartEnd::Complete);
        assert_eq!(f.next_part(), Some(2));
        assert_eq!(f.running().collect::<Vec<_>>(), [0, 2]);
        *f.shared.lock().unwrap() = Verdict::Whole(2);
        assert_eq!(f.whole_part(), Some(2));
        assert_eq!(f.part_done(2), PartEnd::Whole);
        assert_eq!(f.next_part(), None, "one stream: no more parts");
    }

    #[test]
    fn the_follower_hashes_the_prefix_as_it_grows_and_records_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        let data: Vec<u8> = (0..(RECORD_EVERY as usize + 1000))
            .map(|i| (i % 251) as u8)
            .collect();
        let file = File::create(&path).unwrap();
        let spool = Spool::new();
        // The second half first: nothing of it may be hashed before the first is there.
        let half = data.len() / 2;
        file.write_all_at(&data[half..], half as u64).unwrap();
        spool.extend(half as u64, data.len() as u64);
        let (s, p) = (spool.clone(), path.clone());
        let size = data.len() as u64;
        let follower = std::thread::spawn(move || {
            follow(&p, &s, (0, Sha256::new()), size, &AtomicBool::new(false))
        });
        std::thread::sleep(Duration::from_millis(50));
        file.write_all_at(&data[..half], 0).unwrap();
        spool.extend(0, half as u64);
        let (len, hasher) = follower.join().unwrap().unwrap();
        assert_eq!(len, size);
        assert_eq!(hex(hasher), format!("{:x}", Sha256::digest(&data)));
        assert_eq!(recorded_prefix(&file), Some(size));
        // A cancelled follower stops while it waits.
        let cancel = AtomicBool::new(true);
        let e = follow(&path, &Spool::new(), (0, Sha256::new()), 1, &cancel).unwrap_err();
        assert_eq!(e.errno(), libc::ECANCELED);
    }
}
