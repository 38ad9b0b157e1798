//! Raw exports: a sparse raw image comes out, in every format, as exactly its bytes
//! (holes as zeros), checked by decompressing with the format's own tool (xz, gzip,
//! bzip2, zstd); progress counts the image's bytes; anything but a regular file is
//! refused with the errno upstream's check gives.

mod common;

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use common::fsmeta;
use common::stage::noise;
use common::tarball;
use systemd_import::import::export::{self, Source};
use systemd_import::import::stream::Compression;

/// The format's decompressor, writing to stdout.
fn decompressor(compression: Compression) -> Command {
    let tool = match compression {
        Compression::Uncompressed => "cat",
        Compression::Xz => "xz",
        Compression::Gzip => "gzip",
        Compression::Bzip2 => "bzip2",
        Compression::Zstd => "zstd",
    };
    let mut cmd = Command::new(tool);
    if compression != Compression::Uncompressed {
        cmd.args(["-d", "-c"]);
    }
    cmd
}

#[test]
fn a_sparse_raw_image_comes_out_whole_in_every_format() {
    let work = tarball::scratch();
    let image = work.path().join("image.raw");
    {
        let f = fs::File::create(&image).unwrap();
        f.write_all_at(&noise(1 << 20, 1), 0).unwrap();
        f.write_all_at(&noise(300_000, 2), 20 << 20).unwrap();
        f.write_all_at(b"end", (48 << 20) - 3).unwrap();
        f.set_len(64 << 20).unwrap();
    }
    assert!(
        fsmeta::allocated(&image) < 4 << 20,
        "the image must be sparse"
    );
    let digest = fsmeta::content_digest(&image);

    for compression in Compression::ALL {
        let name = compression.format_name();
        let out = work.path().join(format!("export.{name}"));
        let src = fs::File::open(&image).unwrap();
        let mut file = fs::File::create(&out).unwrap();
        let mut last = 0;
        let stats = export::run(
            Source::Raw(src.as_fd()),
            compression,
            &mut file,
            &AtomicBool::new(false),
            &mut |s| last = s.bytes_read,
        )
        .unwrap();
        assert_eq!(stats.bytes_read, 64 << 20, "{name}");
        assert_eq!(last, 64 << 20, "{name}: progress reached the end");
        assert_eq!(stats.entries, 0);

        let plain = work.path().join(format!("plain.{name}"));
        let status = decompressor(compression)
            .arg(&out)
            .stdout(Stdio::from(fs::File::create(&plain).unwrap()))
            .status()
            .unwrap();
        assert!(status.success(), "{name}: decompression failed");
        assert_eq!(fs::metadata(&plain).unwrap().len(), 64 << 20, "{name}");
        assert_eq!(fsmeta::content_digest(&plain), digest, "{name}");
        fs::remove_file(&plain).unwrap();
        fs::remove_file(&out).unwrap();
    }
}

#[test]
fn only_regular_files_are_raw_images() {
    let work = tarball::scratch();
    let export_from = |path: &std::path::Path| {
        let src = fs::File::open(path).unwrap();
        export::run(
            Source::Raw(src.as_fd()),
            Compression::Uncompressed,
            &mut Vec::new(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap_err()
        .errno()
    };
    assert_eq!(export_from(work.path()), libc::EISDIR);
    assert_eq!(export_from(std::path::Path::new("/dev/null")), libc::EBADFD);
}
