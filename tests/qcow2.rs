//! qcow2 → raw conversion (spec §5.5) against qemu-img's own reading of the same images,
//! plus hand-built images for every header check and every hostile offset.
//!
//! Needs `qemu-img` and `qemu-io` (Debian package `qemu-utils`).

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use common::isolate::in_own_process;
use common::qemu::{qemu, qemu_img};
use flate2::{Compress, Compression, FlushCompress, Status};
use systemd_import::import::url::qcow2::{qcow2_convert, qcow2_detect};
use systemd_import::util::error::Error;
use tempfile::TempDir;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

// ---------------------------------------------------------------------------------------
// Tools

/// `qemu-io -c <command>` on a qcow2 image.
fn qemu_io(image: &Path, command: &str) {
    qemu("qemu-io", &["-f", "qcow2", "-c", command, path_str(image)]);
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Our conversion of `qcow2` into a fresh file `raw`.
fn convert(qcow2: &Path, raw: &Path) -> Result<(), Error> {
    convert_with(qcow2, raw, None)
}

fn convert_with(qcow2: &Path, raw: &Path, cancel: Option<&AtomicBool>) -> Result<(), Error> {
    let src = File::open(qcow2).unwrap();
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(raw)
        .unwrap();
    qcow2_convert(src.as_fd(), dst.as_fd(), cancel)
}

/// qemu-img's raw rendering of an image: the reference our output must equal.
fn qemu_raw(qcow2: &Path, raw: &Path) {
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        path_str(qcow2),
        path_str(raw),
    ]);
}

/// Bytes the file system allocated for a file.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// Compare two files chunk by chunk, reporting the first differing offset.
fn assert_same_content(ours: &Path, reference: &Path) {
    let (a, b) = (
        std::fs::metadata(ours).unwrap(),
        std::fs::metadata(reference).unwrap(),
    );
    assert_eq!(
        a.len(),
        b.len(),
        "size of {} vs {}",
        ours.display(),
        reference.display()
    );
    let (mut fa, mut fb) = (File::open(ours).unwrap(), File::open(reference).unwrap());
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    let mut offset = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if n == 0 {
            break;
        }
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} differs from {} at offset {}",
                ours.display(),
                reference.display(),
                offset + i as u64
            );
        }
        offset += n as u64;
    }
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// xorshift64*: reproducible incompressible bytes without a rand crate.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Compressible text.
fn text_bytes(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut n = 0;
    while out.len() < len {
        out.extend_from_slice(format!("systemd-import qcow2 test line {n}\n").as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------------------
// Images made by qemu-img

/// A 64 MiB raw disk with data at the start, middle and end, big holes, a run of
/// written zeros, a 4 KiB island inside a 2 MiB cluster and a 1 KiB island that is not
/// 4 KiB aligned. Returns the path.
fn patterned_raw(dir: &Path) -> PathBuf {
    let path = dir.join("source.raw");
    let f = File::create(&path).unwrap();
    f.set_len(64 * MIB).unwrap();
    f.write_all_at(&random_bytes(1, MIB as usize), 0).unwrap();
    f.write_all_at(&random_bytes(2, 4 * KIB as usize), 9 * MIB)
        .unwrap();
    f.write_all_at(&vec![0u8; 4 * MIB as usize], 16 * MIB)
        .unwrap();
    f.write_all_at(&text_bytes(3 * MIB as usize), 30 * MIB)
        .unwrap();
    f.write_all_at(&random_bytes(3, KIB as usize), 40 * MIB + 512)
        .unwrap();
    f.write_all_at(&random_bytes(4, 64 * KIB as usize), 64 * MIB - 64 * KIB)
        .unwrap();
    path
}

/// Whether `qemu-img map` reports compressed clusters.
fn has_compressed_clusters(qcow2: &Path) -> bool {
    let map = qemu_img(&["map", "--output=json", "-f", "qcow2", path_str(qcow2)]);
    map.contains("\"compressed\": true")
}

fn header_version(qcow2: &Path) -> u32 {
    u32::from_be_bytes(read_at(qcow2, 4, 4).try_into().unwrap())
}

/// Convert the patterned disk with qemu-img into qcow2 (`compat`, `cluster_size`,
/// optionally compressed), then check ours against the source and against qemu-img's
/// raw output, holes included.
fn check_qemu_image(compat: &str, cluster_size: u64, compressed: bool) {
    let dir = TempDir::new().unwrap();
    let source = patterned_raw(dir.path());
    let image = dir.path().join("image.qcow2");
    let options = format!("compat={compat},cluster_size={cluster_size}");
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2", "-o", &options];
    if compressed {
        args.push("-c");
    }
    args.extend([path_str(&source), path_str(&image)]);
    qemu_img(&args);
    assert_eq!(header_version(&image), if compat == "0.10" { 2 } else { 3 });
    assert_eq!(has_compressed_clusters(&image), compressed);

    let ours = convert_like_qemu(&image);
    let reference = image.with_extension("qemu.raw");
    assert_same_content(&ours, &source);
    // About 5 MiB of data in 64 MiB: holes must stay holes. Slack for file-system
    // metadata blocks counted in st_blocks. Where clusters are cloned (btrfs, XFS) the
    // output shares whole clusters with the image, zero parts included, as the C tool's
    // does; that cannot exceed what the image itself allocates.
    let bound = if reflink_supported(dir.path()) {
        allocated(&reference).max(allocated(&image))
    } else {
        allocated(&reference)
    };
    assert!(
        allocated(&ours) <= bound + 256 * KIB,
        "ours allocates {} bytes, qemu-img's raw output {}, the image {}",
        allocated(&ours),
        allocated(&reference),
        allocated(&image)
    );
}

/// Whether files in `dir` can share extents (FICLONE works).
fn reflink_supported(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let (a, b) = (dir.join("reflink-probe-a"), dir.join("reflink-probe-b"));
    std::fs::write(&a, vec![1u8; 4096]).unwrap();
    let src = File::open(&a).unwrap();
    let dst = File::create(&b).unwrap();
    // SAFETY: FICLONE takes the source descriptor as its argument; both files are open.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    r == 0
}

macro_rules! qemu_image_tests {
    ($($name:ident: $compat:expr, $cluster:expr, $compressed:expr;)*) => {$(
        #[test]
        fn $name() {
            check_qemu_image($compat, $cluster, $compressed);
        }
    )*};
}

qemu_image_tests! {
    v2_512_plain: "0.10", 512, false;
    v2_512_compressed: "0.10", 512, true;
    v2_64k_plain: "0.10", 64 * KIB, false;
    v2_64k_compressed: "0.10", 64 * KIB, true;
    v2_2m_plain: "0.10", 2 * MIB, false;
    v2_2m_compressed: "0.10", 2 * MIB, true;
    v3_512_plain: "1.1", 512, false;
    v3_512_compressed: "1.1", 512, true;
    v3_64k_plain: "1.1", 64 * KIB, false;
    v3_64k_compressed: "1.1", 64 * KIB, true;
    v3_2m_plain: "1.1", 2 * MIB, false;
    v3_2m_compressed: "1.1", 2 * MIB, true;
}

/// A compressed cluster that the virtual size ends in is written only up to the virtual
/// size: nothing ever lands past it, not even for a moment before a final truncate.
/// Checked with the file size limit (`RLIMIT_FSIZE`), in a process of its own so the
/// limit touches no other test.
#[test]
fn compressed_last_cluster_is_not_written_past_the_virtual_size() {
    in_own_process(
        "compressed_last_cluster_is_not_written_past_the_virtual_size",
        compressed_last_cluster_in_this_process,
    );
}

fn compressed_last_cluster_in_this_process() {
    // 64 KiB + 512 bytes of text: the second 64 KiB cluster holds 512 bytes of the disk
    // and is stored compressed, like the first.
    let dir = TempDir::new().unwrap();
    let source = dir.path().join("source.raw");
    std::fs::write(&source, text_bytes(64 * KIB as usize + 512)).unwrap();
    let image = dir.path().join("image.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-c",
        "-o",
        "cluster_size=65536",
        path_str(&source),
        path_str(&image),
    ]);
    assert!(has_compressed_clusters(&image));
    let raw = dir.path().join("out.raw");
    // SAFETY: ignoring SIGXFSZ (writes past the limit then fail with EFBIG) and setting
    // the limit, in this child process only.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 64 * KIB + 512,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    convert(&image, &raw).unwrap_or_else(|e| panic!("{e}: {:?}", e.msg()));
    assert_same_content(&raw, &source);
}

/// `qemu-img create -f qcow2 [-o options] <dir>/<name> <size>`.
fn create_image(dir: &Path, name: &str, options: &str, size: &str) -> PathBuf {
    let image = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !options.is_empty() {
        args.extend(["-o", options]);
    }
    args.extend([path_str(&image), size]);
    qemu_img(&args);
    image
}

/// Our conversion of `image` into `<image>.ours.raw`, which is returned.
fn convert_ours(image: &Path) -> PathBuf {
    let ours = image.with_extension("ours.raw");
    convert(image, &ours).unwrap();
    ours
}

/// Our conversion, checked byte for byte against qemu-img's; returns our output.
fn convert_like_qemu(image: &Path) -> PathBuf {
    let ours = convert_ours(image);
    let reference = image.with_extension("qemu.raw");
    qemu_raw(image, &reference);
    assert_same_content(&ours, &reference);
    ours
}

/// `len` bytes at `offset` of `path` are all `byte`.
fn assert_filled(path: &Path, offset: u64, len: u64, byte: u8) {
    let data = read_at(path, offset, len as usize);
    if let Some(i) = data.iter().position(|&b| b != byte) {
        panic!(
            "byte {} of {} is {:#x}, not {byte:#x}",
            offset + i as u64,
            path.display(),
            data[i]
        );
    }
}

#[test]
fn empty_image_converts_to_one_big_hole() {
    let dir = TempDir::new().unwrap();
    let ours = convert_ours(&create_image(dir.path(), "empty.qcow2", "", "4G"));
    assert_eq!(std::fs::metadata(&ours).unwrap().len(), 4 << 30);
    assert_eq!(allocated(&ours), 0);
}

#[test]
fn mostly_empty_image_stays_nearly_unallocated() {
    let dir = TempDir::new().unwrap();
    let image = create_image(dir.path(), "sparse.qcow2", "", "2G");
    qemu_io(&image, "write -P 0xab 1G 64k");
    qemu_io(&image, "write -P 0xcd 2047M 4k");
    let ours = convert_ours(&image);
    assert_eq!(std::fs::metadata(&ours).unwrap().len(), 2 << 30);
    assert_filled(&ours, 1 << 30, 64 * KIB, 0xab);
    assert_filled(&ours, 2047 * MIB, 4 * KIB, 0xcd);
    // The 4 KiB write sits in a 64 KiB cluster; only its non-zero block is written, and
    // nothing but the two written ranges holds data (everything else reads as zeros).
    assert!(
        allocated(&ours) <= 256 * KIB,
        "allocated {}",
        allocated(&ours)
    );
    let expected = [
        (1 << 30, (1 << 30) + 64 * KIB),
        (2047 * MIB, 2047 * MIB + 4 * KIB),
    ];
    assert_eq!(data_segments(&ours), expected);
}

/// The file's data segments, by SEEK_DATA/SEEK_HOLE.
fn data_segments(path: &Path) -> Vec<(u64, u64)> {
    use nix::unistd::{lseek, Whence};
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let mut segments = Vec::new();
    let mut at = 0;
    while at < len {
        let start = match lseek(&f, at, Whence::SeekData) {
            Ok(o) => o,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let end = lseek(&f, start, Whence::SeekHole).unwrap();
        segments.push((start as u64, end as u64));
        at = end;
    }
    segments
}

#[test]
fn zero_flagged_clusters_read_as_zeros_even_with_stale_data() {
    let dir = TempDir::new().unwrap();
    let image = create_image(dir.path(), "zero.qcow2", "compat=1.1", "16M");
    qemu_io(&image, "write -P 0xaa 0 4M");
    // Zero the middle without unmapping: the clusters keep their offsets (and the old
    // 0xaa bytes in the file) but carry the zero flag.
    qemu_io(&image, "write -z 1M 2M");
    let map = qemu_img(&["map", "--output=json", "-f", "qcow2", path_str(&image)]);
    assert!(map.contains("\"zero\": true, \"data\": false"), "{map}");
    let stale = std::fs::read(&image)
        .unwrap()
        .iter()
        .filter(|&&b| b == 0xaa)
        .count();
    assert!(
        stale >= 4 * MIB as usize,
        "the zeroed clusters should keep their old data"
    );

    let ours = convert_like_qemu(&image);
    assert_filled(&ours, 0, MIB, 0xaa);
    assert_filled(&ours, MIB, 2 * MIB, 0);
    assert_filled(&ours, 3 * MIB, MIB, 0xaa);
}

#[test]
fn snapshots_are_ignored_and_the_active_layer_converted() {
    let dir = TempDir::new().unwrap();
    let image = create_image(dir.path(), "snap.qcow2", "", "8M");
    qemu_io(&image, "write -P 0x11 0 1M");
    qemu_img(&["snapshot", "-c", "before", path_str(&image)]);
    // Copy-on-write after the snapshot: the active L2 now mixes shared clusters
    // (COPIED bit clear) and fresh ones (COPIED bit set).
    qemu_io(&image, "write -P 0x22 256k 64k");
    let ours = convert_like_qemu(&image);
    assert_filled(&ours, 0, 256 * KIB, 0x11);
    assert_filled(&ours, 256 * KIB, 64 * KIB, 0x22);
    assert_filled(&ours, 320 * KIB, MIB - 320 * KIB, 0x11);
}

#[test]
fn backing_files_are_ignored() {
    let dir = TempDir::new().unwrap();
    let base = create_image(dir.path(), "base.qcow2", "", "8M");
    qemu_io(&base, "write -P 0x33 0 8M");
    let backing = format!("backing_file={},backing_fmt=qcow2", base.display());
    let overlay = create_image(dir.path(), "overlay.qcow2", &backing, "8M");
    qemu_io(&overlay, "write -P 0x44 4M 64k");
    let ours = convert_ours(&overlay);
    // Only the overlay's own cluster; what would come from the base reads as zeros.
    assert_filled(&ours, 0, 4 * MIB, 0);
    assert_filled(&ours, 4 * MIB, 64 * KIB, 0x44);
    assert_filled(&ours, 4 * MIB + 64 * KIB, 4 * MIB - 64 * KIB, 0);
}

#[test]
fn metadata_preallocation_stays_sparse() {
    for compat in ["0.10", "1.1"] {
        let dir = TempDir::new().unwrap();
        let options = format!("compat={compat},preallocation=metadata");
        let image = create_image(dir.path(), "prealloc.qcow2", &options, "64M");
        qemu_io(&image, "write -P 0x55 32M 4k");
        let ours = convert_like_qemu(&image);
        // v2 maps every cluster to (sparse, zero) space in the file; copying those
        // must not allocate anything.
        assert!(
            allocated(&ours) <= 256 * KIB,
            "compat {compat}: {}",
            allocated(&ours)
        );
    }
}

#[test]
fn virtual_sizes_that_are_not_whole_clusters_convert_like_qemu() {
    // qemu-img rounds sizes to 512 bytes only, so these are normal qemu images. The C tool
    // refused them (spec §5.5); we convert them, plain and compressed, data up to the end.
    let dir = TempDir::new().unwrap();
    for (name, options, size) in [
        ("odd.qcow2", "", 100_352u64),
        ("odd2.qcow2", "cluster_size=2M", 3_146_240),
    ] {
        let image = create_image(dir.path(), name, options, &size.to_string());
        qemu_io(&image, &format!("write -P 0x5a {} 512", size - 512));
        qemu_io(&image, "write -P 0x11 0 4096");
        for compress in [false, true] {
            let source = if compress {
                let c = dir.path().join(format!("c-{name}"));
                let raw = dir.path().join(format!("src-{name}.raw"));
                qemu_raw(&image, &raw);
                qemu_img(&[
                    "convert",
                    "-c",
                    "-O",
                    "qcow2",
                    "-o",
                    options_or_default(options),
                    path_str(&raw),
                    path_str(&c),
                ]);
                c
            } else {
                image.clone()
            };
            let ours = convert_like_qemu(&source);
            assert_eq!(
                std::fs::metadata(&ours).unwrap().len(),
                size,
                "{name} compressed={compress}"
            );
            assert_filled(&ours, size - 512, 512, 0x5a);
        }
    }
}

fn options_or_default(options: &str) -> &str {
    if options.is_empty() {
        "cluster_size=65536"
    } else {
        options
    }
}

#[test]
fn detect_reads_the_magic() {
    let dir = TempDir::new().unwrap();
    let image = create_image(dir.path(), "x.qcow2", "", "1M");
    assert!(qcow2_detect(File::open(&image).unwrap().as_fd()).unwrap());

    let raw = dir.path().join("x.raw");
    std::fs::write(&raw, b"QFI\xfa and more").unwrap();
    assert!(!qcow2_detect(File::open(&raw).unwrap().as_fd()).unwrap());

    std::fs::write(&raw, b"QFI").unwrap();
    let e = qcow2_detect(File::open(&raw).unwrap().as_fd()).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
}

// ---------------------------------------------------------------------------------------
// Hand-built images: every field under the test's control

/// What a guest cluster holds in a [`Builder`] image.
#[derive(Clone)]
enum Content {
    /// Stored as is.
    Plain(Vec<u8>),
    /// Deflated by the builder (raw deflate, 4 KiB window, as qemu does).
    Compressed(Vec<u8>),
    /// This exact compressed stream, whatever it inflates to.
    CompressedStream(Vec<u8>),
    /// Zero flag over an allocated cluster holding these stale bytes.
    ZeroAllocated(Vec<u8>),
}

/// Writes a minimal valid qcow2 (header, refcount table and block, L1, L2 tables, data)
/// so tests can corrupt exactly one thing. Layout, in clusters: 0 header, 1 refcount
/// table, 2 refcount block, 3 L1 table, then L2 tables, plain data in guest order, and
/// compressed streams packed byte by byte at the end (the file ends with the last one,
/// not sector-aligned, as qemu leaves it).
struct Builder {
    version: u32,
    cluster_bits: u32,
    size: u64,
    /// Guest cluster index → content; indexes at or past `size` are snapshot VM state.
    clusters: BTreeMap<u64, Content>,
}

/// A built image and where things landed in it.
struct Built {
    bytes: Vec<u8>,
    /// The raw disk it must convert to.
    expected: Vec<u8>,
    l1_offset: u64,
    /// Host offset of the L2 entry of each guest cluster.
    l2_entry_offset: BTreeMap<u64, u64>,
}

impl Builder {
    fn new(version: u32, cluster_bits: u32, size: u64) -> Builder {
        Builder {
            version,
            cluster_bits,
            size,
            clusters: BTreeMap::new(),
        }
    }

    fn with(mut self, guest_cluster: u64, content: Content) -> Builder {
        self.clusters.insert(guest_cluster, content);
        self
    }

    fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn build(&self) -> Built {
        let cs = self.cluster_size();
        let l2_entries = cs / 8;
        let last_guest = self.clusters.keys().next_back().copied().unwrap_or(0);
        let l1_size = (self.size / cs).max(last_guest + 1).div_ceil(l2_entries);
        assert!(l1_size * 8 <= cs, "builder supports one L1 cluster");
        let used_l1: Vec<u64> = {
            let mut v: Vec<u64> = self.clusters.keys().map(|g| g / l2_entries).collect();
            v.dedup();
            v
        };
        let l1_offset = 3 * cs;
        let mut next = 4 * cs;
        let mut l2_offset = BTreeMap::new();
        for &i in &used_l1 {
            l2_offset.insert(i, next);
            next += cs;
        }
        let mut bytes = vec![0u8; next as usize];
        let mut expected = vec![0u8; self.size as usize];
        let mut l2_entry_offset = BTreeMap::new();
        let mut compressed = Vec::new();

        for (&guest, content) in &self.clusters {
            let entry_at = l2_offset[&(guest / l2_entries)] + (guest % l2_entries) * 8;
            l2_entry_offset.insert(guest, entry_at);
            let entry = match content {
                Content::Plain(data) | Content::ZeroAllocated(data) => {
                    assert_eq!(data.len() as u64, cs);
                    let host = bytes.len() as u64;
                    bytes.extend_from_slice(data);
                    match content {
                        Content::Plain(_) => {
                            if guest * cs < self.size {
                                place(&mut expected, guest * cs, data);
                            }
                            host | 1 << 63
                        }
                        _ => host | 1 << 63 | 1,
                    }
                }
                Content::Compressed(data) => {
                    assert_eq!(data.len() as u64, cs);
                    if guest * cs < self.size {
                        place(&mut expected, guest * cs, data);
                    }
                    compressed.push((entry_at, deflate(data)));
                    continue;
                }
                Content::CompressedStream(stream) => {
                    compressed.push((entry_at, stream.clone()));
                    continue;
                }
            };
            put64(&mut bytes, entry_at, entry);
        }
        for (entry_at, stream) in compressed {
            let host = bytes.len() as u64;
            bytes.extend_from_slice(&stream);
            let sectors = ((host + stream.len() as u64 - 1) >> 9) - (host >> 9);
            let shift = 62 - (self.cluster_bits - 8);
            put64(&mut bytes, entry_at, 1 << 62 | sectors << shift | host);
        }

        // Header.
        put32(&mut bytes, 0, 0x5146_49fb);
        put32(&mut bytes, 4, self.version);
        put32(&mut bytes, 20, self.cluster_bits);
        put64(&mut bytes, 24, self.size);
        put32(&mut bytes, 36, l1_size as u32);
        put64(&mut bytes, 40, l1_offset);
        put64(&mut bytes, 48, cs); // refcount table
        put32(&mut bytes, 56, 1);
        if self.version == 3 {
            put32(&mut bytes, 96, 4); // 16-bit refcounts
            put32(&mut bytes, 100, 104);
        }
        // Refcount table → block; every cluster of the file referenced once.
        put64(&mut bytes, cs, 2 * cs);
        let file_clusters = (bytes.len() as u64).div_ceil(cs);
        assert!(
            file_clusters <= cs / 2,
            "builder supports one refcount block"
        );
        for c in 0..file_clusters {
            bytes[(2 * cs + 2 * c + 1) as usize] = 1;
        }
        for (&i, &offset) in &l2_offset {
            put64(&mut bytes, l1_offset + i * 8, offset | 1 << 63);
        }
        Built {
            bytes,
            expected,
            l1_offset,
            l2_entry_offset,
        }
    }
}

impl Built {
    /// Write the image (as patched) into `dir`, convert it, and return our result.
    fn convert(&self, dir: &Path) -> Result<Vec<u8>, Error> {
        let image = dir.join("built.qcow2");
        let out = dir.join("built.raw");
        let _ = std::fs::remove_file(&out);
        File::create(&image)
            .unwrap()
            .write_all(&self.bytes)
            .unwrap();
        convert(&image, &out)?;
        Ok(std::fs::read(&out).unwrap())
    }

    fn patch32(&mut self, offset: u64, value: u32) -> &mut Self {
        put32(&mut self.bytes, offset, value);
        self
    }

    fn patch64(&mut self, offset: u64, value: u64) -> &mut Self {
        put64(&mut self.bytes, offset, value);
        self
    }
}

fn place(buf: &mut [u8], offset: u64, data: &[u8]) {
    buf[offset as usize..offset as usize + data.len()].copy_from_slice(data);
}

fn put32(buf: &mut [u8], offset: u64, v: u32) {
    place(buf, offset, &v.to_be_bytes());
}

fn put64(buf: &mut [u8], offset: u64, v: u64) {
    place(buf, offset, &v.to_be_bytes());
}

/// Raw deflate with a 4 KiB window, as qemu writes compressed clusters.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new_with_window_bits(Compression::default(), false, 12);
    let mut out = Vec::with_capacity(data.len() + 1024);
    let status = c
        .compress_vec(data, &mut out, FlushCompress::Finish)
        .unwrap();
    assert_eq!(status, Status::StreamEnd);
    out
}

/// A small valid image with 4 KiB clusters: plain runs (contiguous and not), a
/// compressed cluster, a zero-flagged one with stale data, and a hole.
fn sample() -> Builder {
    let cs = 4096;
    Builder::new(3, 12, 64 * cs as u64)
        .with(0, Content::Plain(random_bytes(10, cs)))
        .with(1, Content::Plain(random_bytes(11, cs)))
        .with(2, Content::Compressed(text_bytes(cs)))
        .with(3, Content::ZeroAllocated(vec![0xee; cs]))
        .with(5, Content::Plain(random_bytes(12, cs)))
        .with(63, Content::Compressed(random_bytes(13, cs)))
}

fn assert_err(result: Result<Vec<u8>, Error>, errno: i32, needle: &str) {
    let e = result
        .err()
        .unwrap_or_else(|| panic!("expected errno {errno}, got success"));
    assert_eq!(e.errno(), errno, "{e:?}");
    let msg = e.msg().unwrap_or_default();
    assert!(
        msg.contains(needle),
        "message {msg:?} should contain {needle:?}"
    );
}

#[test]
fn built_images_convert_exactly_as_qemu_reads_them() {
    for version in [2, 3] {
        let dir = TempDir::new().unwrap();
        let mut b = sample();
        b.version = version;
        if version == 2 {
            // No zero flag in v2.
            b.clusters.remove(&3);
        }
        let built = b.build();
        let ours = built.convert(dir.path()).unwrap();
        assert!(
            ours == built.expected,
            "v{version}: output differs from the expected disk"
        );
        // qemu agrees with the builder about what the image holds.
        let reference = dir.path().join("qemu.raw");
        qemu_raw(&dir.path().join("built.qcow2"), &reference);
        assert!(
            std::fs::read(&reference).unwrap() == built.expected,
            "v{version}: qemu differs"
        );
    }
}

#[test]
fn clusters_beyond_the_virtual_size_are_vm_state_and_skipped() {
    let dir = TempDir::new().unwrap();
    let cs = 4096;
    // 8 clusters of disk, data at cluster 3 and "VM state" far beyond the end.
    let built = Builder::new(3, 12, 8 * cs as u64)
        .with(3, Content::Plain(vec![0x77; cs]))
        .with(8, Content::Plain(vec![0x88; cs]))
        .with(700, Content::Compressed(vec![0x99; cs]))
        .build();
    let ours = built.convert(dir.path()).unwrap();
    assert_eq!(ours.len(), 8 * cs);
    assert!(ours == built.expected);
}

#[test]
fn bad_magic_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    built.patch32(0, 0x5146_49fa);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "magic");
}

#[test]
fn versions_other_than_2_and_3_are_enotsup() {
    let dir = TempDir::new().unwrap();
    for version in [1, 4] {
        let mut built = sample().build();
        built.patch32(4, version);
        assert_err(built.convert(dir.path()), libc::ENOTSUP, "version");
    }
}

#[test]
fn encryption_is_enotsup() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    built.patch32(32, 1);
    assert_err(built.convert(dir.path()), libc::ENOTSUP, "Encrypted");
}

#[test]
fn cluster_bits_outside_9_to_21_are_ebadmsg() {
    let dir = TempDir::new().unwrap();
    for bits in [8, 22, 64, u32::MAX] {
        let mut built = sample().build();
        built.patch32(20, bits);
        assert_err(built.convert(dir.path()), libc::EBADMSG, "cluster_bits");
    }
}

#[test]
fn huge_l1_tables_are_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    built.patch32(36, 32 * 1024 * 1024 + 1);
    assert_err(
        built.convert(dir.path()),
        libc::EBADMSG,
        "L1 table too large",
    );
    // Allowed by the header check, but the table would run far past the end of file.
    built.patch32(36, 32 * 1024 * 1024);
    assert_err(
        built.convert(dir.path()),
        libc::EBADMSG,
        "beyond the end of the file",
    );
}

#[test]
fn incompatible_features_are_enotsup() {
    let dir = TempDir::new().unwrap();
    // dirty, corrupt, external data file, compression type, extended L2, unknown.
    for bit in [0, 1, 2, 3, 4, 63] {
        let mut built = sample().build();
        built.patch64(72, 1 << bit);
        assert_err(
            built.convert(dir.path()),
            libc::ENOTSUP,
            "incompatible features",
        );
    }
}

#[test]
fn short_v3_header_length_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    built.patch32(100, 72);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "header length");
}

#[test]
fn l1_table_past_the_end_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    let len = built.bytes.len() as u64;
    built.patch64(40, len);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "L1 table");
    built.patch64(40, u64::MAX - 7);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "L1 table");
}

#[test]
fn compressed_l1_entry_is_enotsup() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    let l1 = built.l1_offset;
    let entry = u64::from_be_bytes(
        built.bytes[l1 as usize..l1 as usize + 8]
            .try_into()
            .unwrap(),
    );
    built.patch64(l1, entry | 1 << 62);
    assert_err(built.convert(dir.path()), libc::ENOTSUP, "compressed bit");
}

#[test]
fn l2_table_past_the_end_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    let len = built.bytes.len() as u64;
    let l1 = built.l1_offset;
    // Starts inside the file but ends past it.
    built.patch64(l1, (len & !511) | 1 << 63);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "L2 table");
    // Offset + cluster overflows u64 (bits 62/63 clear).
    built.patch64(l1, 0x3fff_ffff_ffff_fe00);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "L2 table");
}

#[test]
fn data_cluster_past_the_end_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    let len = built.bytes.len() as u64;
    let at = built.l2_entry_offset[&5];
    built.patch64(at, (len & !511) | 1 << 63);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "data cluster");
    built.patch64(at, 0x3fff_ffff_ffff_f000);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "data cluster");
}

#[test]
fn compressed_cluster_past_the_end_is_ebadmsg() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    let len = built.bytes.len() as u64;
    let at = built.l2_entry_offset[&2];
    built.patch64(at, 1 << 62 | len);
    assert_err(
        built.convert(dir.path()),
        libc::EBADMSG,
        "compressed cluster",
    );
}

#[test]
fn compressed_cluster_of_the_wrong_size_is_eio() {
    let dir = TempDir::new().unwrap();
    let cs = 4096;
    let cases = [
        ("short", deflate(&text_bytes(cs - 1))),
        ("long", deflate(&text_bytes(cs + 1))),
        ("not deflate", random_bytes(5, 600)),
        // A valid stream cut in half: no stream end.
        ("truncated", deflate(&random_bytes(6, cs))[..2000].to_vec()),
    ];
    for (what, stream) in cases {
        let built = Builder::new(3, 12, 16 * cs as u64)
            .with(1, Content::Plain(vec![1; cs]))
            .with(2, Content::CompressedStream(stream))
            .build();
        let e = built
            .convert(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{what}: no error"));
        assert_eq!(e.errno(), libc::EIO, "{what}: {e:?}");
        assert!(e.msg().unwrap().contains("inflate"), "{what}: {e:?}");
    }
}

#[test]
fn truncated_files_fail_cleanly() {
    let dir = TempDir::new().unwrap();
    let full = sample().build();
    // Short header: EIO as the spec says.
    for len in [0, 3, 50, 103] {
        let mut built = sample().build();
        built.bytes.truncate(len);
        assert_err(built.convert(dir.path()), libc::EIO, "truncated");
    }
    // Cut inside the L2 tables, then inside the data.
    let l2_start = 4 * 4096;
    let mut built = sample().build();
    built.bytes.truncate(l2_start + 100);
    assert_err(built.convert(dir.path()), libc::EBADMSG, "L2 table");
    let mut built = sample().build();
    built.bytes.truncate(full.bytes.len() - 5000);
    assert!(built.convert(dir.path()).is_err());
}

#[test]
fn virtual_size_beyond_off_t_is_efbig() {
    let dir = TempDir::new().unwrap();
    let mut built = sample().build();
    built.patch64(24, !4095);
    assert_err(built.convert(dir.path()), libc::EFBIG, "too large");
}

#[test]
fn cancellation_returns_ecanceled() {
    let dir = TempDir::new().unwrap();
    let built = sample().build();
    let image = dir.path().join("c.qcow2");
    std::fs::write(&image, &built.bytes).unwrap();
    let cancel = AtomicBool::new(true);
    let e = convert_with(&image, &dir.path().join("c.raw"), Some(&cancel)).unwrap_err();
    assert_eq!(e.errno(), libc::ECANCELED);
    // Not set: the same image converts.
    let cancel = AtomicBool::new(false);
    convert_with(&image, &dir.path().join("d.raw"), Some(&cancel)).unwrap();
}
