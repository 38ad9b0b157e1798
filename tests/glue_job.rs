//! CurlGlue and ImportJob against local HTTP(S) servers started by each test.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::http::{HttpServer, Request, Response, Router};
use common::tls::TestCa;
use sha2::{Digest, Sha256};
use systemd_import::curl_glue::{CurlGlue, CurlSettings};
use systemd_import::event::EventLoop;
use systemd_import::import::job::{
    Compression, Expected, ImportJob, JobOptions, JobOwner, JobSet, JobState, Sink,
};

/// Runs a set of jobs on one loop until all are complete.
struct Host {
    glue: CurlGlue,
    jobs: JobSet<usize>,
    completed: Vec<usize>,
    /// Begin these once the job with the given key completed (sequential tests).
    then: Vec<(usize, usize, Option<ImportJob>)>,
}

impl Host {
    fn note_completed(&mut self, lp: &mut EventLoop<Self>, key: usize) {
        self.completed.push(key);
        let Host {
            glue, jobs, then, ..
        } = self;
        for (after, new_key, job) in then.iter_mut() {
            if *after == key {
                if let Some(job) = job.take() {
                    jobs.begin(lp, glue, *new_key, job).unwrap();
                }
            }
        }
        if self.jobs.iter().all(|(_, j)| j.is_complete()) && self.then.iter().all(|t| t.2.is_none())
        {
            lp.exit(0);
        }
    }
}

impl JobOwner for Host {
    type Key = usize;
    fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<usize>) {
        (&mut self.glue, &mut self.jobs)
    }
    fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: usize) {
        self.note_completed(lp, key);
    }
}

fn glue_for(ca: Option<&TestCa>) -> CurlGlue {
    glue_with(ca, CurlSettings::default())
}

/// A glue trusting `ca` (if any) with `settings` otherwise: in-process tests pass the CA in
/// rather than changing the process environment.
fn glue_with(ca: Option<&TestCa>, mut settings: CurlSettings) -> CurlGlue {
    if let Some(ca) = ca {
        settings.ca_file = Some(ca.ca_pem_path());
    }
    CurlGlue::new(settings).unwrap()
}

/// Run `jobs` (keyed by their index) to completion; `then` chains jobs after others.
fn run_with(glue: CurlGlue, jobs: Vec<ImportJob>, then: Vec<(usize, usize, ImportJob)>) -> Host {
    let mut lp = EventLoop::new().unwrap();
    let mut host = Host {
        glue,
        jobs: JobSet::new(),
        completed: Vec::new(),
        then: then.into_iter().map(|(a, k, j)| (a, k, Some(j))).collect(),
    };
    let Host {
        glue, jobs: set, ..
    } = &mut host;
    for (i, job) in jobs.into_iter().enumerate() {
        set.begin(&mut lp, glue, i, job).unwrap();
    }
    assert_eq!(lp.run(&mut host).unwrap(), 0);
    host
}

fn run(ca: Option<&TestCa>, jobs: Vec<ImportJob>) -> Host {
    run_with(glue_for(ca), jobs, Vec::new())
}

fn memory_job(url: &str) -> ImportJob {
    ImportJob::new(url, JobOptions::new(Sink::Memory))
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn error_msg(job: &ImportJob) -> String {
    assert_eq!(job.state(), JobState::Failed);
    job.error()
        .and_then(|e| e.msg())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn fifty_transfers_run_in_parallel_in_one_loop() {
    // Each request waits until 10 requests are in flight at once: a client that ran the
    // transfers one by one would make every handler time out and answer 500.
    let in_flight = Arc::new((Mutex::new(0usize), Condvar::new()));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let (f, m) = (in_flight.clone(), max_seen.clone());
    let ca = TestCa::new();
    let server = HttpServer::start(Some(&ca), move |req: &Request| {
        let n: usize = req.path.trim_start_matches("/f").parse().unwrap();
        let (lock, cv) = &*f;
        let mut count = lock.lock().unwrap();
        *count += 1;
        m.fetch_max(*count, Ordering::SeqCst);
        cv.notify_all();
        let (count, timeout) = cv
            .wait_timeout_while(count, Duration::from_secs(20), |c| {
                *c < 10 && m.load(Ordering::SeqCst) < 10
            })
            .unwrap();
        drop(count);
        if timeout.timed_out() {
            return Response::status(500);
        }
        Response::ok(format!("body {n} ").repeat(n * 100))
    });
    let jobs = (0..50)
        .map(|i| memory_job(&server.url(&format!("/f{i}"))))
        .collect();
    let host = run(Some(&ca), jobs);
    for i in 0..50 {
        let job = host.jobs.get(i).unwrap();
        assert_eq!(job.state(), JobState::Done, "job {i}: {:?}", job.error());
        assert_eq!(
            job.payload(),
            format!("body {i} ").repeat(i * 100).as_bytes()
        );
    }
    assert!(max_seen.load(Ordering::SeqCst) >= 10);
    assert_eq!(host.completed.len(), 50);
}

#[test]
fn compressed_bodies_are_decompressed_and_hashed_as_served() {
    use std::io::Write;
    let data: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&data).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(&data[..], 3).unwrap();
    let bodies = [
        ("/plain", data.clone(), Compression::Uncompressed),
        ("/gz", gz, Compression::Gzip),
        ("/xz", xz, Compression::Xz),
        ("/bz2", bz, Compression::Bzip2),
        ("/zst", zst, Compression::Zstd),
    ];
    let mut router = Router::new();
    for (path, body, _) in &bodies {
        router = router.serve_bytes(path, body.clone());
    }
    let server = HttpServer::start(None, router.into_handler());
    let jobs = bodies
        .iter()
        .map(|(path, _, _)| {
            let mut o = JobOptions::new(Sink::Memory);
            o.calc_checksum = true;
            o.hash_uncompressed = true;
            ImportJob::new(&server.url(path), o)
        })
        .collect();
    let host = run(None, jobs);
    for (i, (path, served, compression)) in bodies.iter().enumerate() {
        let job = host.jobs.get(i).unwrap();
        assert_eq!(job.state(), JobState::Done, "{path}: {:?}", job.error());
        assert_eq!(job.payload(), &data[..], "{path}");
        assert_eq!(job.compression(), Some(*compression), "{path}");
        assert_eq!(
            job.checksum(),
            Some(hex_sha256(served).as_str()),
            "{path}: hash of the bytes as served"
        );
        assert_eq!(
            job.uncompressed_checksum(),
            Some(hex_sha256(&data).as_str()),
            "{path}"
        );
        assert_eq!(job.written_compressed(), served.len() as u64);
        assert_eq!(job.written_uncompressed(), data.len() as u64);
    }
}

#[test]
fn a_body_cut_short_is_download_truncated() {
    let server = HttpServer::start(None, |_: &Request| {
        Response::ok(vec![7u8; 100_000]).truncate_after(1000)
    });
    let host = run(None, vec![memory_job(&server.url("/x"))]);
    assert_eq!(error_msg(host.jobs.get(0).unwrap()), "Download truncated.");
}

#[test]
fn http_errors_have_the_c_message_and_keep_the_body_out_of_the_sink() {
    let server = HttpServer::start(None, |_: &Request| {
        Response::status(404).body(r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#)
    });
    let url = server.url("/missing");
    let (file, path) = tempfile::NamedTempFile::new().unwrap().into_parts();
    let job = ImportJob::new(&url, JobOptions::new(Sink::File(file.into())));
    let host = run(None, vec![job]);
    let job = host.jobs.get(0).unwrap();
    assert_eq!(
        error_msg(job),
        format!("HTTP request to {url} failed with code 404.")
    );
    assert_eq!(job.response_code(), 404);
    assert_eq!(job.error_body(), br#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the error page was not written"
    );
}

#[test]
fn a_stalled_server_fails_by_the_low_speed_limit() {
    let server = HttpServer::start(None, |_: &Request| {
        Response::ok(vec![1u8; 1 << 20]).stall_after(10, Duration::from_secs(60))
    });
    // The test-only shortening of the 60 s window (the binary reads
    // SYSTEMD_IMPORT_TEST_LOW_SPEED_TIME for the same).
    let glue = glue_with(
        None,
        CurlSettings {
            low_speed_time: Duration::from_secs(2),
            ..CurlSettings::default()
        },
    );
    let host = run_with(glue, vec![memory_job(&server.url("/stall"))], Vec::new());
    let msg = error_msg(host.jobs.get(0).unwrap());
    assert!(msg.starts_with("Transfer failed: "), "{msg}");
    assert!(msg.contains("Timeout"), "{msg}");
}

#[test]
fn a_matching_etag_skips_the_download_by_304_or_by_header() {
    let server = HttpServer::start(None, |req: &Request| {
        let honours = req.path == "/honours";
        if honours && req.header("If-None-Match") == Some("\"old\", \"v2\"") {
            return Response::status(304).header("ETag", "\"v2\"");
        }
        Response::ok(vec![5u8; 50_000]).header("ETag", "\"v2\"")
    });
    let job = |path: &str| {
        let mut o = JobOptions::new(Sink::Memory);
        o.old_etags = vec!["\"old\"".into(), "\"v2\"".into()];
        ImportJob::new(&server.url(path), o)
    };
    let fresh = memory_job(&server.url("/ignores"));
    let host = run(None, vec![job("/honours"), job("/ignores"), fresh]);
    for i in 0..2 {
        let j = host.jobs.get(i).unwrap();
        assert_eq!(j.state(), JobState::Done, "{:?}", j.error());
        assert!(j.etag_exists());
        assert_eq!(j.etag(), Some("\"v2\""));
        assert!(j.payload().is_empty());
    }
    let fresh = host.jobs.get(2).unwrap();
    assert!(!fresh.etag_exists());
    assert_eq!(fresh.payload().len(), 50_000);
    for req in server.requests() {
        if req.path != "/ignores" || req.header("If-None-Match").is_some() {
            assert_eq!(
                req.header("If-None-Match"),
                Some("\"old\", \"v2\""),
                "{}",
                req.path
            );
        }
    }
}

#[test]
fn keep_alive_connections_are_reused() {
    let ca = TestCa::new();
    let server = HttpServer::start(Some(&ca), |req: &Request| Response::ok(req.path.clone()));
    let first = memory_job(&server.url("/one"));
    let second = memory_job(&server.url("/two"));
    let third = memory_job(&server.url("/three"));
    let host = run_with(
        glue_for(Some(&ca)),
        vec![first],
        vec![(0, 1, second), (1, 2, third)],
    );
    for (i, body) in ["/one", "/two", "/three"].iter().enumerate() {
        assert_eq!(host.jobs.get(i).unwrap().payload(), body.as_bytes());
    }
    assert_eq!(
        server.connections(),
        1,
        "three sequential requests, one TLS connection"
    );
    let ids: Vec<u64> = server.requests().iter().map(|r| r.connection_id).collect();
    assert_eq!(ids, [1, 1, 1]);
}

#[test]
fn redirect_hop_headers_do_not_count() {
    // Q3: the C job took Content-Length, ETag and Last-Modified from every hop; the hop's
    // Content-Length 5 would make this 2000-byte chunked body "Content length incorrect.".
    let router = Router::new()
        .route("/hop", |_: &Request| {
            Response::redirect(302, "/final")
                .header("ETag", "\"hop\"")
                .header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
                .body("hello")
        })
        .route("/final", |_: &Request| {
            Response::ok(vec![9u8; 2000]).chunked()
        });
    let server = HttpServer::start(None, router.into_handler());
    let host = run(None, vec![memory_job(&server.url("/hop"))]);
    let job = host.jobs.get(0).unwrap();
    assert_eq!(job.state(), JobState::Done, "{:?}", job.error());
    assert_eq!(job.payload(), &[9u8; 2000][..]);
    assert_eq!(job.etag(), None);
    assert_eq!(job.mtime(), None);
    assert_eq!(job.content_length(), None);
    assert_eq!(server.targets(), ["/hop", "/final"]);
}

#[test]
fn short_and_empty_bodies_succeed() {
    // Q4: the C job failed bodies under 6 bytes with "Premature connection termination."
    let router = Router::new()
        .serve_bytes("/empty", Vec::new())
        .serve_bytes("/ok", b"ok".to_vec());
    let server = HttpServer::start(None, router.into_handler());
    let host = run(
        None,
        vec![
            memory_job(&server.url("/empty")),
            memory_job(&server.url("/ok")),
        ],
    );
    assert_eq!(host.jobs.get(0).unwrap().state(), JobState::Done);
    assert!(host.jobs.get(0).unwrap().payload().is_empty());
    assert_eq!(host.jobs.get(1).unwrap().payload(), b"ok");
}

#[test]
fn disk_mode_writes_sparse_files_with_source_metadata() {
    let mut content = vec![0u8; 8 << 20];
    content[..4096].fill(0xaa);
    content[(4 << 20)..(4 << 20) + 10].copy_from_slice(b"middle....");
    let served = content.clone();
    let server = HttpServer::start(None, move |_: &Request| {
        Response::ok(served.clone())
            .header("ETag", "\"e1\"")
            .header("Last-Modified", "Tue, 15 Nov 1994 12:45:26 GMT")
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("image.raw");
    let file = std::fs::File::create(&path).unwrap();
    let url = server.url("/image.raw");
    let host = run(
        None,
        vec![ImportJob::new(
            &url,
            JobOptions::new(Sink::File(file.into())),
        )],
    );
    let job = host.jobs.get(0).unwrap();
    assert_eq!(job.state(), JobState::Done, "{:?}", job.error());
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let md = std::fs::metadata(&path).unwrap();
    assert!(
        md.blocks() * 512 < 1 << 20,
        "8 MiB of mostly zeros stays sparse: {} blocks",
        md.blocks()
    );
    assert_eq!(md.mtime(), 784_903_526);
    let xattr = |name: &str| {
        let out = std::process::Command::new("getfattr")
            .args(["--only-values", "-n", name])
            .arg(&path)
            .output()
            .expect("getfattr (Debian package attr) is needed");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(xattr("user.source_url"), url.as_bytes());
    assert_eq!(xattr("user.source_etag"), b"\"e1\"");
    assert_eq!(
        xattr("user.crtime_usec"),
        784_903_526_000_000u64.to_le_bytes()
    );
}

#[test]
fn a_slow_stream_consumer_does_not_stall_the_loop() {
    // The consumer blocks until a memory job (started later, on the same loop) has
    // completed: that can only happen if the loop keeps running while the consumer sits on
    // a paused transfer.
    let big = vec![3u8; 32 << 20];
    let router = Router::new()
        .serve_bytes("/big", big.clone())
        .serve_bytes("/small", b"small".to_vec());
    let server = HttpServer::start(None, router.into_handler());
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let consumed = Arc::new(AtomicUsize::new(0));
    let (g, c) = (gate.clone(), consumed.clone());
    let consumer = Sink::Stream(Box::new(move |_, body: &mut dyn Read| {
        let (lock, cv) = &*g;
        let open = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(30), |o| !*o)
            .unwrap();
        assert!(
            *open.0,
            "the small job never completed while the big one was paused"
        );
        drop(open);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            c.fetch_add(n, Ordering::SeqCst);
        }
        Ok(())
    }));
    let big_job = ImportJob::new(&server.url("/big"), JobOptions::new(consumer));

    struct Gate {
        inner: Host,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }
    impl JobOwner for Gate {
        type Key = usize;
        fn glue_and_jobs(&mut self) -> (&mut CurlGlue, &mut JobSet<usize>) {
            (&mut self.inner.glue, &mut self.inner.jobs)
        }
        fn on_job_done(&mut self, lp: &mut EventLoop<Self>, key: usize) {
            self.after(lp, Some(key));
        }
    }
    impl Gate {
        fn after(&mut self, lp: &mut EventLoop<Self>, done: Option<usize>) {
            if done == Some(1) {
                *self.gate.0.lock().unwrap() = true;
                self.gate.1.notify_all();
            }
            if self.inner.jobs.iter().all(|(_, j)| j.is_complete()) {
                lp.exit(0);
            }
        }
    }
    let mut lp = EventLoop::new().unwrap();
    let mut host = Gate {
        inner: Host {
            glue: glue_for(None),
            jobs: JobSet::new(),
            completed: Vec::new(),
            then: Vec::new(),
        },
        gate,
    };
    let Host { glue, jobs, .. } = &mut host.inner;
    jobs.begin(&mut lp, glue, 0, big_job).unwrap();
    jobs.begin(&mut lp, glue, 1, memory_job(&server.url("/small")))
        .unwrap();
    assert_eq!(lp.run(&mut host).unwrap(), 0);
    let big_job = host.inner.jobs.get(0).unwrap();
    assert_eq!(big_job.state(), JobState::Done, "{:?}", big_job.error());
    assert_eq!(consumed.load(Ordering::SeqCst), big.len());
}

#[test]
fn a_failing_consumer_fails_the_job_and_stops_the_transfer() {
    let server = HttpServer::start(None, |_: &Request| Response::ok(vec![1u8; 64 << 20]));
    let sink = Sink::Stream(Box::new(|_, body: &mut dyn Read| {
        let mut buf = [0u8; 1000];
        body.read_exact(&mut buf)?;
        Err(systemd_import::util::error::Error::with_message(
            libc::EBADMSG,
            "not an archive",
        ))
    }));
    let host = run(
        None,
        vec![ImportJob::new(&server.url("/x"), JobOptions::new(sink))],
    );
    let job = host.jobs.get(0).unwrap();
    assert_eq!(error_msg(job), "not an archive");
    assert_eq!(job.error().unwrap().errno(), libc::EBADMSG);
    assert!(
        job.written_compressed() < 64 << 20,
        "the transfer was stopped early"
    );
}

#[test]
fn a_partial_file_is_resumed_with_a_range_request() {
    let full: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let served = full.clone();
    let server = HttpServer::start(None, move |req: &Request| {
        Response::ranged(req, served.clone())
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.partial");
    let prefix = 1_234_567usize;
    std::fs::write(&path, &full[..prefix]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut o = JobOptions::new(Sink::File(file.into()));
    o.resume_from = Some(prefix as u64);
    o.checksum_seed = Some(Sha256::new_with_prefix(&full[..prefix]));
    o.calc_checksum = true;
    let host = run(None, vec![ImportJob::new(&server.url("/blob"), o)]);
    let job = host.jobs.get(0).unwrap();
    assert_eq!(job.state(), JobState::Done, "{:?}", job.error());
    assert_eq!(job.response_code(), 206);
    assert_eq!(std::fs::read(&path).unwrap(), full);
    assert_eq!(job.checksum(), Some(hex_sha256(&full).as_str()));
    assert_eq!(server.requests()[0].header("Range"), Some("bytes=1234567-"));
}

#[test]
fn a_server_ignoring_range_makes_the_download_start_over() {
    let full: Vec<u8> = (0..500_000u32).map(|i| (i % 241) as u8).collect();
    let served = full.clone();
    let server = HttpServer::start(None, move |_: &Request| Response::ok(served.clone()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.partial");
    std::fs::write(&path, b"stale prefix that must disappear").unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let fd = file.as_raw_fd();
    assert!(fd >= 0);
    let mut o = JobOptions::new(Sink::File(file.into()));
    o.resume_from = Some(33);
    o.checksum_seed = Some(Sha256::new_with_prefix(b"stale prefix that must disappear"));
    o.calc_checksum = true;
    let host = run(None, vec![ImportJob::new(&server.url("/blob"), o)]);
    let job = host.jobs.get(0).unwrap();
    assert_eq!(job.state(), JobState::Done, "{:?}", job.error());
    assert_eq!(std::fs::read(&path).unwrap(), full);
    assert_eq!(job.checksum(), Some(hex_sha256(&full).as_str()));
}

#[test]
fn limits_refuse_oversized_content() {
    use std::io::Write;
    let gz_bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![0u8; 16 << 20]).unwrap();
        e.finish().unwrap()
    };
    let router = Router::new()
        .serve_bytes("/declared", vec![0u8; 5000])
        .route("/chunked", |_: &Request| {
            Response::ok(vec![0u8; 5000]).chunked()
        })
        .serve_bytes("/bomb", gz_bomb);
    let server = HttpServer::start(None, router.into_handler());
    let job = |path: &str, compressed_max: u64, uncompressed_max: u64| {
        let mut o = JobOptions::new(Sink::Memory);
        o.compressed_max = compressed_max;
        o.uncompressed_max = uncompressed_max;
        ImportJob::new(&server.url(path), o)
    };
    let host = run(
        None,
        vec![
            job("/declared", 4096, 1 << 30),
            job("/chunked", 4096, 1 << 30),
            job("/bomb", 1 << 30, 1 << 20),
        ],
    );
    // The C job's three texts: the header check, the compressed write check (with a dot)
    // and the uncompressed write check (without one).
    assert_eq!(error_msg(host.jobs.get(0).unwrap()), "Content too large.");
    assert_eq!(
        error_msg(host.jobs.get(1).unwrap()),
        "File overly large, refusing."
    );
    assert_eq!(
        error_msg(host.jobs.get(2).unwrap()),
        "File overly large, refusing"
    );
    for i in 0..3 {
        assert_eq!(
            host.jobs.get(i).unwrap().error().unwrap().errno(),
            libc::EFBIG
        );
    }
}

#[test]
fn a_job_checks_the_size_and_digest_it_expects_by_itself() {
    let body = b"the expected content".to_vec();
    let sum = hex_sha256(&body);
    let resumed: Vec<u8> = (0..200_000u32).map(|i| (i % 239) as u8).collect();
    let router = Router::new()
        .serve_bytes("/body", body.clone())
        .route("/resumed", {
            let resumed = resumed.clone();
            move |req: &Request| Response::ranged(req, resumed.clone())
        });
    let server = HttpServer::start(None, router.into_handler());
    let job = |size: Option<u64>, sha256: Option<&str>| {
        let mut o = JobOptions::new(Sink::Memory);
        o.expected = Some(Expected::new(size, sha256.map(str::to_string)));
        ImportJob::new(&server.url("/body"), o)
    };
    let wrong = "0".repeat(64);
    // A resumed download counts from its start: the prefix plus this transfer's bytes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.partial");
    let prefix = 70_000usize;
    std::fs::write(&path, &resumed[..prefix]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut o = JobOptions::new(Sink::File(file.into()));
    o.resume_from = Some(prefix as u64);
    o.checksum_seed = Some(Sha256::new_with_prefix(&resumed[..prefix]));
    o.expected = Some(Expected::new(
        Some(resumed.len() as u64),
        Some(hex_sha256(&resumed)),
    ));
    let host = run(
        None,
        vec![
            job(Some(body.len() as u64), Some(&sum)),
            job(Some(body.len() as u64 + 1), Some(&sum)),
            job(None, Some(&wrong)),
            ImportJob::new(&server.url("/resumed"), o),
        ],
    );
    let ok = host.jobs.get(0).unwrap();
    assert_eq!(ok.state(), JobState::Done, "{:?}", ok.error());
    assert_eq!(ok.checksum(), Some(sum.as_str()), "hashed without asking");
    let size = host.jobs.get(1).unwrap();
    assert_eq!(error_msg(size), "Content does not have expected size.");
    assert!(size.content_mismatch());
    assert_eq!(size.error().unwrap().errno(), libc::EBADMSG);
    assert_eq!(
        error_msg(host.jobs.get(2).unwrap()),
        "Checksum of downloaded resource does not match expected checksum, yikes."
    );
    let resumed_job = host.jobs.get(3).unwrap();
    assert_eq!(
        resumed_job.state(),
        JobState::Done,
        "{:?}",
        resumed_job.error()
    );
    assert_eq!(resumed_job.response_code(), 206);
    assert!(!resumed_job.content_mismatch());
}
