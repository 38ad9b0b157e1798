//! The campaign runner of the mutation engine and its oracles: memory accounting, the
//! watchdog, saved failures, outcome statistics.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::{mix, Rng};

// ---------------------------------------------------------------------------------------
// Memory accounting
// ---------------------------------------------------------------------------------------

/// A global allocator that counts, per thread, the bytes allocated during a case, so a
/// campaign can fail a case that allocates absurdly. A test binary opts in with
/// `#[global_allocator] static A: mutate::CountingAlloc = mutate::CountingAlloc;`.
///
/// While a case is running on a thread, a single request above the hard limit (or live
/// bytes above it) ends the process with the case's seed, before the allocation could
/// take the machine down.
pub struct CountingAlloc;

thread_local! {
    /// Bytes allocated minus bytes freed on this thread since the case began.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// Hard limit of the running case (0: no case running).
    static HARD_LIMIT: Cell<usize> = const { Cell::new(0) };
    /// Set while reporting, so the report's own allocations are not checked.
    static REPORTING: Cell<bool> = const { Cell::new(false) };
}

/// Whether a [`CountingAlloc`] is installed (set by its first allocation).
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn account(delta: isize, request: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        let limit = HARD_LIMIT.try_with(Cell::get).unwrap_or(0);
        if limit > 0 && (request > limit || now > limit as isize) {
            let reporting = REPORTING.try_with(|r| r.replace(true)).unwrap_or(true);
            if !reporting {
                watchdog_fail(&format!(
                    "allocated {request} bytes ({now} live) during one case, beyond the limit of {limit}"
                ));
            }
        }
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are thread-local
// `Cell`s with constant initializers and no destructors, which need no allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNTING.store(true, std::sync::atomic::Ordering::Relaxed);
        account(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize, layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize), 0);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize, new_size);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn memory_begin(hard_limit: usize) {
    let _ = LIVE.try_with(|l| l.set(0));
    let _ = PEAK.try_with(|p| p.set(0));
    let _ = HARD_LIMIT.try_with(|h| h.set(hard_limit));
}

/// Peak bytes of the case (allocated on this thread and still live at the peak).
fn memory_end() -> usize {
    let _ = HARD_LIMIT.try_with(|h| h.set(0));
    PEAK.try_with(Cell::get).unwrap_or(0).max(0) as usize
}

// ---------------------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------------------

/// The case a thread is running.
struct Running {
    campaign: String,
    seed: u64,
    input: Arc<Vec<u8>>,
    deadline: Instant,
}

struct Watchdog {
    running: Mutex<HashMap<ThreadId, Running>>,
    changed: Condvar,
}

fn watchdog() -> &'static Watchdog {
    static WATCHDOG: OnceLock<&'static Watchdog> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            running: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("mutation-watchdog".into())
            .spawn(move || watch(w))
            .expect("spawn the watchdog thread");
        w
    })
}

/// The watchdog thread: waits until the earliest deadline of the running cases; a case
/// still running then fails the whole run (a hung case cannot be stopped from outside).
fn watch(w: &'static Watchdog) {
    let mut running = w.running.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let late = running
            .values()
            .find(|r| r.deadline <= now)
            .map(|r| (r.campaign.clone(), r.seed, r.input.clone()));
        if let Some((campaign, seed, input)) = late {
            let path = save_failure(&campaign, seed, &input);
            eprintln!(
                "\nmutation campaign {campaign}: case seed {seed:#018x} did not finish within {}s (a hang).\n\
                 Input saved to {}; replay with MUTATION_REPLAY={} or MUTATION_CASE_SEED={seed:#x}.",
                case_timeout().as_secs(),
                path.display(),
                path.display()
            );
            std::process::exit(101);
        }
        let wait = running
            .values()
            .map(|r| r.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        running = w
            .changed
            .wait_timeout(running, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Fail the run from inside an allocation: report the case this thread is running.
fn watchdog_fail(what: &str) -> ! {
    let me = std::thread::current().id();
    let running = watchdog().running.lock().unwrap_or_else(|e| e.into_inner());
    match running.get(&me) {
        Some(r) => {
            let path = save_failure(&r.campaign, r.seed, &r.input);
            eprintln!(
                "\nmutation campaign {}: case seed {:#018x} {what}.\nInput saved to {}; replay with MUTATION_REPLAY={}.",
                r.campaign,
                r.seed,
                path.display(),
                path.display()
            );
        }
        None => eprintln!("\nmutation: {what} (no case registered for this thread)."),
    }
    std::process::exit(101);
}

fn case_timeout() -> Duration {
    let secs = std::env::var("MUTATION_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

fn failures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MUTATION_FAILURES") {
        return PathBuf::from(dir);
    }
    match option_env!("CARGO_TARGET_TMPDIR") {
        Some(tmp) => PathBuf::from(tmp).join("mutation-failures"),
        None => std::env::temp_dir().join("systemd-import-mutation-failures"),
    }
}

/// Write a failing input where it can be replayed from; returns its path.
fn save_failure(campaign: &str, seed: u64, input: &[u8]) -> PathBuf {
    let dir = failures_dir();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{campaign}-{seed:016x}.bin"));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot save the failing input to {}: {e}", path.display());
    }
    path
}

// ---------------------------------------------------------------------------------------
// Campaigns
// ---------------------------------------------------------------------------------------

thread_local! {
    /// Outcome labels of this thread's campaign, for `MUTATION_STATS=1`.
    static OUTCOMES: std::cell::RefCell<std::collections::BTreeMap<String, u64>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// Record how a case ended (an error message, "ok"), so `MUTATION_STATS=1` can show
/// which code the mutations reach. Quoted names and numbers are blanked out first.
pub fn note_outcome(what: &str) {
    if std::env::var_os("MUTATION_STATS").is_none() {
        return;
    }
    let mut label = String::new();
    let mut quoted = false;
    let mut word = String::new();
    let flush = |word: &mut String, label: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            label.push('N');
        } else {
            label.push_str(word);
        }
        word.clear();
    };
    for c in what.chars() {
        if c == '\'' {
            flush(&mut word, &mut label);
            quoted = !quoted;
            label.push_str(if quoted { "'…" } else { "'" });
        } else if quoted {
        } else if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut label);
            label.push(c);
        }
    }
    flush(&mut word, &mut label);
    OUTCOMES.with(|o| *o.borrow_mut().entry(label).or_default() += 1);
}

fn print_outcomes(campaign: &str) {
    if std::env::var_os("MUTATION_STATS").is_none() {
        return;
    }
    let outcomes = OUTCOMES.with(|o| std::mem::take(&mut *o.borrow_mut()));
    let mut sorted: Vec<_> = outcomes.into_iter().collect();
    sorted.sort_by_key(|o| std::cmp::Reverse(o.1));
    let mut text = format!("mutation campaign {campaign}: outcomes\n");
    for (label, n) in sorted {
        text.push_str(&format!("{n:>8}  {label}\n"));
    }
    eprint!("{text}");
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A fixed number of mutated cases from fixed seeds, checked by the caller's oracle.
pub struct Campaign {
    pub name: String,
    pub iterations: u64,
    pub base_seed: u64,
    /// Peak bytes one case may allocate on its thread (soft: checked after the case).
    pub memory_limit: Option<usize>,
    /// A single allocation or live total above this ends the run at once.
    pub hard_memory_limit: usize,
}

impl Campaign {
    /// A campaign named `name` (also the prefix of its saved inputs) with the CI-sized
    /// `iterations`, unless the environment asks for more.
    pub fn new(name: &str, iterations: u64) -> Campaign {
        let base_seed = env_u64("MUTATION_SEED").unwrap_or_else(|| {
            name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            })
        });
        Campaign {
            name: name.to_string(),
            iterations: env_u64("MUTATION_ITERATIONS").unwrap_or(iterations),
            base_seed,
            memory_limit: None,
            hard_memory_limit: 1 << 30,
        }
    }

    /// Check the peak memory of each case (needs [`CountingAlloc`] as global allocator).
    pub fn memory_limit(mut self, bytes: usize) -> Campaign {
        self.memory_limit = Some(bytes);
        self.hard_memory_limit = self.hard_memory_limit.max(bytes * 4);
        self
    }

    /// The seed of case `i`.
    pub fn case_seed(&self, i: u64) -> u64 {
        mix(self.base_seed ^ mix(i))
    }

    /// Run every case: `generate` makes an input from the case's PRNG, `check` runs the
    /// code under test on it and returns what is wrong. A panic in `check`, an error it
    /// returns, a case that outlives the watchdog or allocates beyond the limits fails
    /// the run with the case's seed and a saved copy of its input.
    pub fn run(
        &self,
        mut generate: impl FnMut(&mut Rng) -> Vec<u8>,
        mut check: impl FnMut(&[u8]) -> Result<(), String>,
    ) {
        if self.memory_limit.is_some() {
            assert!(
                COUNTING.load(std::sync::atomic::Ordering::Relaxed),
                "campaign {} checks memory but the test binary has no CountingAlloc as its global allocator",
                self.name
            );
        }
        let keep_going = std::env::var("MUTATION_KEEP_GOING").is_ok_and(|v| v == "1");
        let mut failures: Vec<String> = Vec::new();

        let cases: Vec<(u64, Option<Vec<u8>>)> = if let Ok(path) = std::env::var("MUTATION_REPLAY")
        {
            let path = PathBuf::from(path);
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if !file.starts_with(&format!("{}-", self.name)) {
                return;
            }
            let input = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            // `<campaign>-<seed in hex>.bin`, as save_failure names it.
            let seed = file
                .strip_prefix(&format!("{}-", self.name))
                .and_then(|rest| rest.strip_suffix(".bin"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                .unwrap_or(0);
            vec![(seed, Some(input))]
        } else if let Some(seed) = env_u64("MUTATION_CASE_SEED") {
            vec![(seed, None)]
        } else {
            Vec::new()
        };
        let single = !cases.is_empty();
        let total = if single {
            cases.len() as u64
        } else {
            self.iterations
        };
        let started = Instant::now();
        let mut cases = cases.into_iter();

        for i in 0..total {
            let (seed, input) = if single {
                cases.next().expect("counted")
            } else {
                (self.case_seed(i), None)
            };
            let input = match input {
                Some(input) => input,
                None => std::panic::catch_unwind(AssertUnwindSafe(|| generate(&mut Rng::new(seed))))
                    .unwrap_or_else(|_| {
                        panic!("mutation campaign {}: the mutator panicked on case seed {seed:#x} (a bug of the test)", self.name)
                    }),
            };
            let input = Arc::new(input);
            let me = std::thread::current().id();
            {
                let w = watchdog();
                let mut running = w.running.lock().unwrap_or_else(|e| e.into_inner());
                running.insert(
                    me,
                    Running {
                        campaign: self.name.clone(),
                        seed,
                        input: input.clone(),
                        deadline: Instant::now() + case_timeout(),
                    },
                );
                w.changed.notify_all();
            }
            let hard = if self.memory_limit.is_some() {
                self.hard_memory_limit
            } else {
                0
            };
            memory_begin(hard);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
            let peak = memory_end();
            watchdog()
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&me);

            let problem = match outcome {
                Ok(Ok(())) => match self.memory_limit {
                    Some(limit) if peak > limit => Some(format!(
                        "allocated {peak} bytes at its peak, more than the limit of {limit}"
                    )),
                    _ => None,
                },
                Ok(Err(what)) => Some(what),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "(non-string panic)".into());
                    Some(format!("panicked: {what}"))
                }
            };
            if let Some(mut what) = problem {
                if what.len() > 4000 {
                    let mut cut = 4000;
                    while !what.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    what.truncate(cut);
                    what.push_str(" …");
                }
                let path = save_failure(&self.name, seed, &input);
                let line = format!(
                    "mutation campaign {}: case {i} (seed {seed:#018x}) failed: {what}\n  input: {} ({} bytes); replay with MUTATION_REPLAY={} or MUTATION_CASE_SEED={seed:#x}",
                    self.name,
                    path.display(),
                    input.len(),
                    path.display()
                );
                if !keep_going {
                    panic!("{line}");
                }
                eprintln!("{line}");
                failures.push(line);
            }
            if total >= 20_000 && (i + 1) % (total / 10) == 0 {
                eprintln!(
                    "mutation campaign {}: {}/{} cases, {:.0}s, {} failures",
                    self.name,
                    i + 1,
                    total,
                    started.elapsed().as_secs_f64(),
                    failures.len()
                );
            }
        }
        print_outcomes(&self.name);
        assert!(
            failures.is_empty(),
            "{} of {total} cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
