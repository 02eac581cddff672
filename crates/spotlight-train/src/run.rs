//! A whole training run in one directory: resumes from `checkpoint.safetensors` when present,
//! appends one CSV row per (step, layout, layer) to `train_log.csv`, checkpoints every
//! `checkpoint_every` steps, and writes `hash-<layout>.safetensors` at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use spotlight_llama::{Llama, LlamaBackend};

use crate::data::Corpus;
use crate::heldout::HeldOut;
use crate::trainer::StepRecord;
use crate::{Layout, TrainError, Trainer};

pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const LOG: &str = "train_log.csv";
const LOG_HEADER: &str = "step,layout,layer,loss,misordered,valid_pairs,grad_norm,lr";

pub fn hash_path(dir: &Path, layout: Layout) -> PathBuf {
    dir.join(format!("hash-{}.safetensors", layout.name()))
}

/// The same weights rounded to f16 (half the size; for keeping in a repository).
pub fn hash_path_f16(dir: &Path, layout: Layout) -> PathBuf {
    dir.join(format!("hash-{}.f16.safetensors", layout.name()))
}

/// Where a run spent its time (this process only, not earlier runs it resumed).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunStats {
    pub resumed_from: usize,
    /// Why the newest checkpoint was passed over for the previous one (damaged or torn), if it was.
    pub resume_note: Option<String>,
    pub steps_run: usize,
    /// Running the frozen model to get q/k.
    pub capture: Duration,
    /// Targets, hash forward/backward and updates, all layers and layouts.
    pub train: Duration,
}

/// Progress of one finished step, for the caller's display.
pub struct Progress<'a> {
    pub step: usize,
    pub records: &'a [StepRecord],
    pub stats: &'a RunStats,
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// Keeps the log rows of steps < `step` (a killed run may have logged steps it never
/// checkpointed); held-out rows are scored after a step, so rows of step ≤ `step` stay there.
fn truncate_log(path: &Path, step: usize, header: &str) -> Result<(), TrainError> {
    let held_out = header == HELDOUT_HEADER;
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s < step || (held_out && s == step && step > 0))
            })
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut text = String::from(header);
    text.push('\n');
    for l in kept {
        text.push_str(&l);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Held-out scoring during a run: every `every` steps (and at the start and the end) each
/// trained layout's hash is scored and a row appended to `heldout.csv`.
pub struct HeldOutLog<'a, B: burn::tensor::backend::Backend> {
    pub heldout: &'a HeldOut<B>,
    pub every: usize,
}

pub const HELDOUT: &str = "heldout.csv";
const HELDOUT_HEADER: &str = "step,layout,bits,budget,iou,mass_recall,by_position";

/// One run of [`train_many`]: a trainer and its directory.
pub struct Run<'a, B: AutodiffBackend> {
    pub trainer: &'a mut Trainer<B>,
    pub dir: &'a Path,
}

/// Trains `trainer` to its configured step count on windows of `corpus`.
pub fn train<B: AutodiffBackend + crate::TrainBackend>(
    model: &Llama<B::InnerBackend>,
    corpus: &Corpus,
    trainer: &mut Trainer<B>,
    dir: &Path,
    on_step: &mut dyn FnMut(Progress),
) -> Result<RunStats, TrainError>
where
    B::InnerBackend: LlamaBackend + crate::TrainBackend,
{
    let mut runs = [Run { trainer, dir }];
    let mut stats = train_many(model, corpus, &mut runs, None, &mut |_, p| on_step(p))?;
    Ok(stats.remove(0))
}

/// Trains several runs on the same windows: each step's window is captured once (the frozen
/// model's q/k) and every run at that step trains on it — variants side by side for the cost of
/// one capture. The runs must agree on the seed, the window lengths and the step count (so they
/// read the same windows); each resumes from its own checkpoint and writes its own directory.
/// `on_step` gets the run's index.
pub fn train_many<B: AutodiffBackend + crate::TrainBackend>(
    model: &Llama<B::InnerBackend>,
    corpus: &Corpus,
    runs: &mut [Run<B>],
    heldout: Option<HeldOutLog<B::InnerBackend>>,
    on_step: &mut dyn FnMut(usize, Progress),
) -> Result<Vec<RunStats>, TrainError>
where
    B::InnerBackend: LlamaBackend + crate::TrainBackend,
{
    let Some(first) = runs.first() else {
        return Ok(Vec::new());
    };
    let c0 = first.trainer.config.clone();
    for r in runs.iter() {
        let c = &r.trainer.config;
        if (c.seed, c.seq_len, &c.seq_lens, c.steps)
            != (c0.seed, c0.seq_len, &c0.seq_lens, c0.steps)
        {
            return Err(TrainError::Config(format!(
                "runs trained side by side must share --seed, --seq-len and --steps ({} differs)",
                r.dir.display()
            )));
        }
    }
    let mut logs = Vec::with_capacity(runs.len());
    let mut stats = Vec::with_capacity(runs.len());
    for r in runs.iter_mut() {
        std::fs::create_dir_all(r.dir).map_err(|e| io(r.dir, e))?;
        let ckpt = r.dir.join(CHECKPOINT);
        let mut resume_note = None;
        if ckpt.exists() || crate::tensor_file::previous_path(&ckpt).exists() {
            resume_note = r.trainer.resume(&ckpt)?;
        }
        let log_path = r.dir.join(LOG);
        truncate_log(&log_path, r.trainer.step, LOG_HEADER)?;
        if heldout.is_some() {
            truncate_log(&r.dir.join(HELDOUT), r.trainer.step, HELDOUT_HEADER)?;
        }
        logs.push(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log_path)
                .map_err(|e| io(&log_path, e))?,
        );
        stats.push(RunStats {
            resumed_from: r.trainer.step,
            resume_note,
            ..RunStats::default()
        });
    }
    // The start is scored before any step (a resumed run scored it before it was killed).
    if let Some(h) = &heldout {
        for r in runs.iter().filter(|r| r.trainer.step == 0) {
            score_heldout(h, r)?;
        }
    }
    while let Some(step) = runs
        .iter()
        .map(|r| r.trainer.step)
        .filter(|&s| s < c0.steps)
        .min()
    {
        let t0 = Instant::now();
        let window = corpus.window(c0.window_len(step), step, c0.seed)?;
        let qk = model.queries_and_keys(window)?;
        let capture = t0.elapsed();
        for (i, r) in runs.iter_mut().enumerate() {
            if r.trainer.step != step {
                continue;
            }
            let t1 = Instant::now();
            let records = r.trainer.train_step(&qk)?;
            stats[i].capture += capture;
            stats[i].train += t1.elapsed();
            stats[i].steps_run += 1;
            let mut rows = String::new();
            for rec in &records {
                rows.push_str(&format!(
                    "{},{},{},{:.6},{:.6},{},{:.6},{:.3e}\n",
                    rec.step,
                    rec.layout.name(),
                    rec.layer,
                    rec.loss,
                    rec.misordered,
                    rec.valid_pairs,
                    rec.grad_norm,
                    rec.lr
                ));
            }
            let log_path = r.dir.join(LOG);
            logs[i]
                .write_all(rows.as_bytes())
                .map_err(|e| io(&log_path, e))?;
            logs[i].flush().map_err(|e| io(&log_path, e))?;
            let done = r.trainer.step;
            if let Some(h) = &heldout {
                if done.is_multiple_of(h.every.max(1)) || done == c0.steps {
                    score_heldout(h, r)?;
                }
            }
            if done.is_multiple_of(r.trainer.config.checkpoint_every) || done == c0.steps {
                r.trainer.save_checkpoint(&r.dir.join(CHECKPOINT))?;
            }
            on_step(
                i,
                Progress {
                    step: done,
                    records: &records,
                    stats: &stats[i],
                },
            );
        }
    }
    for r in runs.iter() {
        for &layout in &r.trainer.config.layouts {
            let file = r.trainer.hash_file(layout)?;
            file.save(&hash_path(r.dir, layout))?;
            file.save_f16(&hash_path_f16(r.dir, layout))?;
        }
    }
    Ok(stats)
}

/// `from-to:iou` per position bin, space-separated (the `by_position` column of the held-out logs).
pub fn position_summary(bins: &[crate::quality::PositionQuality]) -> String {
    bins.iter()
        .map(|p| {
            format!(
                "{}-{}:{:.5}",
                p.from,
                p.to.map_or(String::new(), |t| t.to_string()),
                p.iou
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Appends the held-out score of every layout of `run` at its current step.
fn score_heldout<B: AutodiffBackend>(
    h: &HeldOutLog<B::InnerBackend>,
    run: &Run<B>,
) -> Result<(), TrainError> {
    let path = run.dir.join(HELDOUT);
    let mut text = String::new();
    if !path.exists() {
        text.push_str(HELDOUT_HEADER);
        text.push('\n');
    }
    for &layout in &run.trainer.config.layouts {
        let file = run.trainer.hash_file(layout)?;
        let s = h.heldout.score_hash(layout.name(), &file);
        text.push_str(&format!(
            "{},{},{},{},{:.5},{:.5},{}\n",
            run.trainer.step,
            layout.name(),
            file.header.bits,
            h.heldout.budget,
            s.iou,
            s.mass_recall,
            position_summary(&s.by_position)
        ));
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io(&path, e))
}
