//! Unpacker speed against GNU tar, on the same in-memory input and file system.
//!
//! `cargo bench --bench unpack` builds two uncompressed layers in memory:
//! (a) 50,000 small files in a realistic directory spread, (b) 4 files of 256 MiB.
//! Each run extracts into a fresh directory: ours through a `Cursor`, GNU tar as
//! `tar -x -f - --numeric-owner -p` fed the same bytes through a pipe. The tree is
//! removed and the file system synced between runs (not timed). Prints the median wall
//! time of each and the ratio ours/GNU (below 1.0: we are faster).
//!
//! Environment: `UNPACK_BENCH_DIR` (default /var/tmp), `UNPACK_BENCH_RUNS` (default 5).

use std::fs;
use std::io::{Cursor, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use systemd_import::import::unpack::{unpack, Mode, Options};

const BLOCK: usize = 512;

/// A minimal ustar writer (the bench must not depend on test helpers).
struct Writer {
    data: Vec<u8>,
}

impl Writer {
    fn header(&mut self, name: &str, typeflag: u8, mode: u32, size: usize) {
        let mut b = [0u8; BLOCK];
        b[..name.len()].copy_from_slice(name.as_bytes());
        let put = |b: &mut [u8; BLOCK], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            b[at..at + width].copy_from_slice(s.as_bytes());
        };
        put(&mut b, 100, 8, u64::from(mode));
        put(&mut b, 108, 8, 1000);
        put(&mut b, 116, 8, 1000);
        put(&mut b, 124, 12, size as u64);
        put(&mut b, 136, 12, 1_600_000_000);
        b[156] = typeflag;
        b[257..265].copy_from_slice(b"ustar\x0000");
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.data.extend_from_slice(&b);
    }

    fn file(&mut self, name: &str, content: &[u8]) {
        self.header(name, b'0', 0o644, content.len());
        self.data.extend_from_slice(content);
        let pad = (BLOCK - content.len() % BLOCK) % BLOCK;
        self.data.resize(self.data.len() + pad, 0);
    }

    fn dir(&mut self, name: &str) {
        self.header(&format!("{name}/"), b'5', 0o755, 0);
    }

    fn finish(mut self) -> Vec<u8> {
        self.data.resize(self.data.len() + 2 * BLOCK, 0);
        self.data
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 50,000 files in 20 top directories × 25 subdirectories × (≈100 files each, some in
/// a third level), sizes skewed small (most under 4 KiB, a few up to 64 KiB), like a
/// distribution's /usr.
fn small_files() -> Vec<u8> {
    let mut w = Writer { data: Vec::new() };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let content: Vec<u8> = (0..65536).map(|i| (i * 7 % 251) as u8).collect();
    let mut n = 0;
    'outer: for top in 0..20 {
        let top = format!("usr{top:02}");
        w.dir(&top);
        for sub in 0..25 {
            let sub = format!("{top}/pkg{sub:02}");
            w.dir(&sub);
            for f in 0..100 {
                if n == 50_000 {
                    break 'outer;
                }
                let r = rng.next();
                let size = match r % 100 {
                    0..=59 => (r >> 8) % 2048,
                    60..=94 => 2048 + (r >> 8) % 8192,
                    _ => 10240 + (r >> 8) % 55296,
                } as usize;
                let name = if f % 10 == 9 {
                    let deep = format!("{sub}/share{}", f / 10);
                    w.dir(&deep);
                    format!("{deep}/file{f:03}.dat")
                } else {
                    format!("{sub}/file{f:03}.so")
                };
                w.file(&name, &content[..size]);
                n += 1;
            }
        }
    }
    w.finish()
}

/// Four 256 MiB files of non-repeating data.
fn large_files() -> Vec<u8> {
    let mut w = Writer {
        data: Vec::with_capacity((1 << 30) + (1 << 20)),
    };
    let mut rng = Rng(42);
    let mut content = vec![0u8; 256 << 20];
    for i in 0..4 {
        for chunk in content.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        w.file(&format!("big{i}.img"), &content);
    }
    w.finish()
}

fn fresh_dir(base: &Path, label: &str) -> PathBuf {
    let p = base.join(format!("unpack-bench.{label}.{}", std::process::id()));
    if p.exists() {
        fs::remove_dir_all(&p).unwrap();
    }
    fs::create_dir(&p).unwrap();
    p
}

fn settle(dir: &Path) {
    fs::remove_dir_all(dir).unwrap();
    // SAFETY: sync() has no preconditions.
    unsafe { libc::sync() };
}

fn ours(base: &Path, input: &[u8]) -> Duration {
    let dir = fresh_dir(base, "ours");
    let root = fs::File::open(&dir).unwrap();
    let start = Instant::now();
    unpack(
        root.as_fd(),
        &mut Cursor::new(input),
        &Options::new(Mode::Plain),
    )
    .expect("unpack failed");
    let t = start.elapsed();
    drop(root);
    settle(&dir);
    t
}

fn gnu_tar(base: &Path, input: &[u8]) -> Duration {
    let dir = fresh_dir(base, "gnu");
    let start = Instant::now();
    let mut child = Command::new("tar")
        .args(["-x", "-f", "-", "--numeric-owner", "-p", "-C"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot run GNU tar (apt-get install tar)");
    let mut stdin = child.stdin.take().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || stdin.write_all(input).expect("write to tar"));
        assert!(child.wait().unwrap().success(), "tar failed");
    });
    let t = start.elapsed();
    settle(&dir);
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let base =
        PathBuf::from(std::env::var("UNPACK_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()));
    let runs: usize = std::env::var("UNPACK_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "target: {} ({} runs each, alternating)",
        base.display(),
        runs
    );
    for (label, input) in [
        ("50,000 small files", small_files()),
        ("4 x 256 MiB files", large_files()),
    ] {
        let mut a = Vec::new();
        let mut b = Vec::new();
        for _ in 0..runs {
            a.push(ours(&base, &input));
            b.push(gnu_tar(&base, &input));
        }
        let (ma, mb) = (median(a), median(b));
        println!(
            "{label:20} ({:>5} MiB tar): ours {:>8.3} s   GNU tar {:>8.3} s   ratio {:.2}",
            input.len() >> 20,
            ma.as_secs_f64(),
            mb.as_secs_f64(),
            ma.as_secs_f64() / mb.as_secs_f64()
        );
    }
}
