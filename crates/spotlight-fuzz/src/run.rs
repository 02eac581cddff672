//! The fuzzing loop: every corpus and regression input once, then seeded mutations of the corpus
//! until the time is up. A panic, an allocation over the cap or a hang is a crash; its input is
//! written to `<crashes>/<target>/` (copy it to `regressions/<target>/` once fixed).

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::mutate::{mutate, Rng};
use crate::targets::Target;

/// Longest input tried (mutations are cut to it).
pub const MAX_INPUT: usize = 4 << 20;
/// An input slower than this three times running is a failure ("slow"), checked after it
/// returns.
pub const SLOW: Duration = Duration::from_secs(2);
/// An input still running after this is a hang: the watchdog saves it and aborts.
pub const HANG: Duration = Duration::from_secs(20);
/// Corpus entries kept at most (the seeds plus inputs with new answers).
const MAX_CORPUS: usize = 2000;

#[derive(Debug, Clone)]
pub struct Options {
    /// Seed inputs: `corpus/<target>/*`.
    pub corpus: PathBuf,
    /// Inputs that once crashed, run first: `regressions/<target>/*`.
    pub regressions: PathBuf,
    /// Where crashing inputs are written: `<crashes>/<target>/<n>`.
    pub crashes: PathBuf,
    pub seconds: f64,
    pub seed: u64,
}

impl Options {
    /// The committed corpus and regressions of this crate, crashes under the target directory.
    pub fn committed(seconds: f64, seed: u64) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self {
            corpus: root.join("corpus"),
            regressions: root.join("regressions"),
            crashes: std::env::temp_dir().join("spotlight-fuzz-crashes"),
            seconds,
            seed,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub target: String,
    pub seconds: f64,
    pub execs: u64,
    pub seeds: usize,
    pub corpus: usize,
    /// Distinct answers seen (a stand-in for coverage).
    pub answers: usize,
    pub crashes: usize,
    /// Inputs slower than [`SLOW`].
    pub slow: usize,
    /// Where each crashing input was written, with what happened.
    pub crash_files: Vec<String>,
}

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let data = std::fs::read(&p).ok()?;
            Some((p.display().to_string(), data))
        })
        .collect()
}

/// Milliseconds since `EPOCH` when the current input started; 0 while none runs.
static STARTED_MS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
static WATCHDOG: std::sync::Once = std::sync::Once::new();

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64 + 1
}

/// Runs `target` on `data` once: its answer, or the panic message.
fn exec(target: &Target, data: &[u8], epoch: Instant) -> (Result<String, String>, Duration) {
    crate::alloc::set_input(data);
    let t0 = Instant::now();
    STARTED_MS.store(now_ms(epoch), Ordering::SeqCst);
    let r = catch_unwind(AssertUnwindSafe(|| (target.run)(data)));
    STARTED_MS.store(0, Ordering::SeqCst);
    let r = r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    });
    (r, t0.elapsed())
}

/// Fuzzes `target` for `opts.seconds`.
pub fn run(target: &Target, opts: &Options) -> Stats {
    let crash_dir = opts.crashes.join(target.name);
    // One file per process for inputs that abort it (the allocator cannot choose paths).
    let _ = crate::alloc::set_crash_file(&opts.crashes.join("aborted-input"));
    crate::alloc::set_target(target.name);
    // Panics are expected results here, not noise on stderr.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // One clock and one watchdog per process, shared by every run (several targets in one
    // process must not see each other's start times as hangs).
    let epoch = *EPOCH.get_or_init(Instant::now);
    WATCHDOG.call_once(|| {
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let s = STARTED_MS.load(Ordering::SeqCst);
            if s != 0 && now_ms(epoch).saturating_sub(s) > HANG.as_millis() as u64 {
                crate::alloc::save_input_and_abort(b"fuzz: an input ran past the hang limit");
            }
        });
    });
    let started = Instant::now();
    let mut stats = Stats {
        target: target.name.into(),
        ..Stats::default()
    };
    let mut answers = HashSet::new();
    let record = |stats: &mut Stats,
                  data: &[u8],
                  r: Result<String, String>,
                  took: Duration,
                  answers: &mut HashSet<String>|
     -> bool {
        stats.execs += 1;
        let failure = match r {
            Ok(answer) => {
                // On a loaded machine a process can stall for seconds: slow counts only when
                // two more runs of the same input are slow too.
                let slow = took > SLOW && (0..2).all(|_| exec(target, data, epoch).1 > SLOW);
                if slow {
                    stats.slow += 1;
                    Some(format!("slow: {:.1} s", took.as_secs_f64()))
                } else {
                    return answers.insert(answer);
                }
            }
            Err(panic) => Some(format!("panic: {panic}")),
        };
        if let Some(why) = failure {
            stats.crashes += 1;
            let path = crash_dir.join(format!("crash-{}", stats.crashes));
            let _ = std::fs::create_dir_all(&crash_dir);
            let _ = std::fs::write(&path, data);
            stats.crash_files.push(format!("{}: {why}", path.display()));
        }
        false
    };
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for (_, data) in inputs(&opts.regressions.join(target.name))
        .into_iter()
        .chain(inputs(&opts.corpus.join(target.name)))
    {
        let (r, took) = exec(target, &data, epoch);
        record(&mut stats, &data, r, took, &mut answers);
        corpus.push(data);
    }
    stats.seeds = corpus.len();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut rng = Rng::new(opts.seed);
    let deadline = Duration::from_secs_f64(opts.seconds);
    while started.elapsed() < deadline {
        let a = rng.below(corpus.len());
        let b = rng.below(corpus.len());
        let data = mutate(&corpus[a], &corpus[b], &mut rng, MAX_INPUT);
        let (r, took) = exec(target, &data, epoch);
        if record(&mut stats, &data, r, took, &mut answers) && corpus.len() < MAX_CORPUS {
            corpus.push(data);
        }
    }
    std::panic::set_hook(hook);
    stats.seconds = started.elapsed().as_secs_f64();
    stats.corpus = corpus.len();
    stats.answers = answers.len();
    stats
}
