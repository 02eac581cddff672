//! A whole training run in one directory: resumes from `checkpoint.safetensors` when present,
//! appends one CSV row per (step, layout, layer) to `train_log.csv`, checkpoints every
//! `checkpoint_every` steps, and writes `hash-<layout>.safetensors` at the end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use spotlight_llama::{Llama, LlamaBackend};

use crate::data::Corpus;
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

/// Keeps the log rows of steps < `step` (a killed run may have logged steps it never checkpointed).
fn truncate_log(path: &Path, step: usize) -> Result<(), TrainError> {
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .skip(1)
            .filter(|l| {
                l.split(',')
                    .next()
                    .and_then(|s| s.parse::<usize>().ok())
                    .is_some_and(|s| s < step)
            })
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut text = String::from(LOG_HEADER);
    text.push('\n');
    for l in kept {
        text.push_str(&l);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| io(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
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
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let ckpt = dir.join(CHECKPOINT);
    if ckpt.exists() {
        trainer.resume(&ckpt)?;
    }
    let log_path = dir.join(LOG);
    truncate_log(&log_path, trainer.step)?;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| io(&log_path, e))?;
    let c = trainer.config.clone();
    let mut stats = RunStats {
        resumed_from: trainer.step,
        ..RunStats::default()
    };
    while trainer.step < c.steps {
        let t0 = Instant::now();
        let window = corpus.window(c.seq_len, trainer.step, c.seed)?;
        let qk = model.queries_and_keys(window)?;
        let t1 = Instant::now();
        let records = trainer.train_step(&qk)?;
        stats.capture += t1 - t0;
        stats.train += t1.elapsed();
        stats.steps_run += 1;
        let mut rows = String::new();
        for r in &records {
            rows.push_str(&format!(
                "{},{},{},{:.6},{:.6},{},{:.6},{:.3e}\n",
                r.step,
                r.layout.name(),
                r.layer,
                r.loss,
                r.misordered,
                r.valid_pairs,
                r.grad_norm,
                r.lr
            ));
        }
        log.write_all(rows.as_bytes())
            .map_err(|e| io(&log_path, e))?;
        log.flush().map_err(|e| io(&log_path, e))?;
        if trainer.step.is_multiple_of(c.checkpoint_every) || trainer.step == c.steps {
            trainer.save_checkpoint(&ckpt)?;
        }
        on_step(Progress {
            step: trainer.step,
            records: &records,
            stats: &stats,
        });
    }
    for &layout in &c.layouts {
        let file = trainer.hash_file(layout)?;
        file.save(&hash_path(dir, layout))?;
        file.save_f16(&hash_path_f16(dir, layout))?;
    }
    Ok(stats)
}
