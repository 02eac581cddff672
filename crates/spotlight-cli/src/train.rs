//! `spotlight train`: train the Spotlight hash of a model on the training text (layer-wise, both
//! GQA layouts by default), with progress, resumable checkpoints, a CSV log and curve plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use spotlight_train::data::Corpus;
use spotlight_train::heldout::HeldOut;
use spotlight_train::quality::Method;
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

/// A set of defaults for every training flag; any flag given overrides its recipe's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Recipe {
    /// A short run that finishes on a CPU in minutes (1,024-token windows, 256 queries and
    /// pairs, 20 steps); otherwise the authors' settings.
    Quick,
    /// The authors' recipe (METHOD.md): 4,096-token windows, 1,024 queries × 1,024 pairs, top 2%,
    /// uniform other keys, near-identity start, AdamW lr 1e-3 with weight decay 0.1, 8,000 steps.
    Paper,
}

/// Flags of `spotlight train`. Unset ones take the value of `--recipe`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run directory: checkpoint, log, plots and the final hash-<layout>.safetensors files.
    /// Rerunning with the same flags resumes from its checkpoint. With --variant, one
    /// subdirectory per variant.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Only redraw the curves from --out's train_curves.csv (no training).
    #[arg(long)]
    pub replot: bool,
    /// Where the unset flags below come from.
    #[arg(long, value_enum, default_value_t = Recipe::Quick)]
    pub recipe: Recipe,
    /// Variants trained side by side on the same windows (one capture of the frozen model per
    /// step for all): `LABEL:FLAGS`, the flags added to this command's (e.g.
    /// `--variant "hard:--hard-fraction 0.25"`); repeat for each. Each writes --out/LABEL.
    #[arg(long = "variant")]
    pub variants: Vec<String>,
    /// Layouts trained [default: both].
    #[arg(long, value_enum)]
    pub layout: Option<LayoutChoice>,
    /// Training steps (one sequence each, every layer).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Tokens per training window; several (e.g. 4096,8192) are used in turn, so the hash sees
    /// every position up to the longest.
    #[arg(long, value_delimiter = ',')]
    pub seq_len: Option<Vec<usize>>,
    /// Layers trained, e.g. `2..30` or `2,9,17,25` (the others keep their start) [default: all].
    #[arg(long, value_parser = parse_layers)]
    pub layers: Option<Layers>,
    /// Query positions sampled per sequence and layer.
    #[arg(long)]
    pub queries: Option<usize>,
    /// Top/other pairs sampled per query.
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Share of the ranks that count as "top".
    #[arg(long)]
    pub top_fraction: Option<f64>,
    /// Share of the other keys drawn from the near misses, the ranks just below the top.
    #[arg(long)]
    pub near_fraction: Option<f64>,
    /// Share of the other keys drawn from the hard negatives: keys the hash being trained ranks
    /// inside the budget although they are not in the true top.
    #[arg(long)]
    pub hard_fraction: Option<f64>,
    /// Each row's top count is the decode budget of its own length, max(20, ⌈2%·(t+1)⌉), and its
    /// pairs are drawn among its visible keys (instead of ⌊2%·N⌋ for every row).
    #[arg(long)]
    pub row_top: bool,
    /// Group layout: one target set per KV head, ranked by the group's summed attention
    /// probability, and the loss on the group's summed code score (what group decoding ranks by).
    #[arg(long)]
    pub group_targets: bool,
    /// Code bits per head: head_dim (the paper's one network) or a multiple of it, made of
    /// bits / head_dim networks per head side by side [default: head_dim].
    #[arg(long)]
    pub bits: Option<usize>,
    /// How the networks start.
    #[arg(long, value_enum)]
    pub init: Option<InitChoice>,
    /// The learned-linear ablation: W1 = b1 = 0 held fixed, one learned d×d projection per network.
    #[arg(long)]
    pub linear: bool,
    #[arg(long)]
    pub lr: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Weight decay pulls towards the starting weights instead of towards 0.
    #[arg(long)]
    pub decay_to_init: bool,
    /// Softsign sharpness γ of the training code.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// γ of the first step, annealed geometrically to --gamma at the last.
    #[arg(long)]
    pub gamma_start: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: usize,
    /// Directory of *.txt training documents [default: the State of the Union addresses and
    /// Jane Austen's novels].
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Score the hash on held-out text every this many steps (and at the start and the end):
    /// IoU and attention mass at --eval-budget in heldout.csv (0: never).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Held-out text [default: Moby-Dick].
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Tokens per held-out window.
    #[arg(long, default_value_t = 8192)]
    pub eval_tokens: usize,
    /// Held-out windows, spread evenly over the text.
    #[arg(long, default_value_t = 1)]
    pub eval_windows: usize,
    /// Query rows scored per held-out window.
    #[arg(long, default_value_t = 32)]
    pub eval_queries: usize,
    #[arg(long, default_value_t = 0.02)]
    pub eval_budget: f64,
    /// Also write a throughput report (JSON) here.
    #[arg(long)]
    pub bench: Option<PathBuf>,
    /// custom: the CubeCL kernels (cube backends) or references (cpu); tensor-ops: the same math
    /// in plain Burn tensor ops [default: the backend's faster one].
    #[arg(long, value_parser = crate::bench_train::parse_ops)]
    pub ops: Option<spotlight_train::TrainOps>,
}

/// A set of layers (`--layers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers(pub Vec<usize>);

/// `2..30` (half-open), `5`, or a comma list of either, into ascending layers.
pub fn parse_layers(s: &str) -> std::result::Result<Layers, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("{x:?} is not a layer number"))
        };
        match part.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a >= b {
                    return Err(format!("{part}: an empty range"));
                }
                out.extend(a..b);
            }
            None => out.push(num(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(Layers(out))
}

impl Recipe {
    /// (steps, seq_len, queries, pairs).
    fn sizes(self) -> (usize, usize, usize, usize) {
        match self {
            Recipe::Quick => (20, 1024, 256, 256),
            Recipe::Paper => (8000, 4096, 1024, 1024),
        }
    }
}

impl TrainArgs {
    pub fn config(&self) -> TrainConfig {
        let base = TrainConfig::default();
        let (steps, seq_len, queries, pairs) = self.recipe.sizes();
        let seq_lens = self.seq_len.clone().unwrap_or_else(|| vec![seq_len]);
        let longest = seq_lens.iter().copied().max().unwrap_or(seq_len);
        TrainConfig {
            layouts: self.layout.unwrap_or(LayoutChoice::Both).layouts(),
            steps: self.steps.unwrap_or(steps),
            seq_len: longest,
            seq_lens: if seq_lens.len() > 1 {
                seq_lens
            } else {
                Vec::new()
            },
            layers: self.layers.clone().map(|l| l.0).unwrap_or_default(),
            targets: TargetConfig {
                queries: self.queries.unwrap_or(queries),
                pairs: self.pairs.unwrap_or(pairs),
                top_fraction: self.top_fraction.unwrap_or(base.targets.top_fraction),
                near_fraction: self.near_fraction.unwrap_or(0.0),
                hard_fraction: self.hard_fraction.unwrap_or(0.0),
                row_top: self.row_top,
                group: self.group_targets,
            },
            gamma: self.gamma.unwrap_or(base.gamma),
            gamma_start: self.gamma_start.unwrap_or(0.0),
            optimizer: AdamWConfig {
                lr: self.lr.unwrap_or(base.optimizer.lr),
                weight_decay: self.weight_decay.unwrap_or(base.optimizer.weight_decay),
                decay_to_init: self.decay_to_init,
                ..base.optimizer
            },
            seed: self.seed,
            checkpoint_every: self.checkpoint_every.max(1),
            bits: self.bits.unwrap_or(0),
            init: match self.init.unwrap_or(InitChoice::Identity) {
                InitChoice::Identity => HashInit::Identity,
                InitChoice::Rotation => HashInit::Rotation,
                InitChoice::Mixed => HashInit::Mixed,
            },
            linear: self.linear,
            ..base
        }
    }

    /// The variants of `--variant`, each with its label and flags applied to these.
    pub fn variant_args(&self) -> Result<Vec<(String, TrainArgs)>> {
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Flags {
            #[command(flatten)]
            train: TrainArgs,
        }
        use clap::Parser;
        self.variants
            .iter()
            .map(|v| {
                let (label, flags) = v.split_once(':').unwrap_or((v.as_str(), ""));
                if label.is_empty()
                    || !label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(CliError::Usage(format!(
                        "--variant {v:?}: LABEL:FLAGS with a label of letters, digits, '-', '_', '.'"
                    )));
                }
                let given = Flags::try_parse_from(flags.split_whitespace()).map_err(|e| {
                    CliError::Usage(format!(
                        "--variant {label}: {}",
                        e.to_string().lines().next().unwrap_or_default()
                    ))
                })?;
                let g = &given.train;
                if g.steps.is_some() || g.seq_len.is_some() || !g.variants.is_empty() {
                    return Err(CliError::Usage(format!(
                        "--variant {label}: variants share --steps and --seq-len (set them outside) and cannot nest"
                    )));
                }
                Ok((label.to_string(), self.with_variant(g, label)))
            })
            .collect()
    }

    /// These flags with a variant's: every training flag it sets replaces ours, its switches
    /// add to ours; the model, text, seed and schedule stay ours (variants share windows).
    fn with_variant(&self, v: &TrainArgs, label: &str) -> TrainArgs {
        let mut a = self.clone();
        a.out = self.out.join(label);
        a.variants = Vec::new();
        a.bench = None;
        macro_rules! take {
            ($($f:ident),*) => { $( if v.$f.is_some() { a.$f = v.$f.clone(); } )* };
        }
        take!(
            layout,
            layers,
            queries,
            pairs,
            top_fraction,
            near_fraction,
            hard_fraction,
            bits,
            init,
            lr,
            weight_decay,
            gamma,
            gamma_start,
            ops
        );
        a.row_top |= v.row_top;
        a.group_targets |= v.group_targets;
        a.linear |= v.linear;
        a.decay_to_init |= v.decay_to_init;
        a
    }
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
    /// Wall time per step of all runs together (variants included, held-out scoring and
    /// checkpoints too), from the end of the first step to the end of the last.
    all_runs_steady_s_per_step: Option<f64>,
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
        // Every run of this command: the variants, or this one.
        let runs: Vec<(String, TrainArgs)> = if args.variants.is_empty() {
            vec![(String::new(), args.clone())]
        } else {
            args.variant_args()?
        };
        let configs: Vec<TrainConfig> = runs.iter().map(|(_, a)| a.config()).collect();
        for c in &configs {
            c.validate()?;
        }
        let longest = configs.iter().map(|c| c.seq_len).max().unwrap_or(0);
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
        let capacity = if args.eval_every > 0 {
            longest.max(args.eval_tokens)
        } else {
            longest
        };
        let loaded = model_args::load::<B>(&path, Some(capacity), &device)?;
        let id = model_args::ModelId::of(&path);
        let model_name = id.name.clone();
        let mut trainers = Vec::with_capacity(runs.len());
        for ((_, a), c) in runs.iter().zip(&configs) {
            let mut t =
                Trainer::<Autodiff<B>>::new(c.clone(), &model_name, &loaded.config, &device)?;
            t.ops = a.ops;
            t.model_fingerprint = id.fingerprint.clone();
            trainers.push(t);
        }
        // Before any output: an --out this run cannot write, or one holding a run of another
        // config, is refused in one line, and nothing in it is touched.
        for (t, (_, a)) in trainers.iter().zip(&runs) {
            std::fs::create_dir_all(&a.out).map_err(|e| {
                CliError::Io(format!("cannot create --out {}: {e}", a.out.display()))
            })?;
            t.check_resumable(&a.out.join(run::CHECKPOINT))?;
        }
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
        let heldout = if args.eval_every > 0 {
            let layers: Vec<usize> = (0..loaded.config.num_hidden_layers)
                .filter(|&l| l >= 2 && configs.iter().any(|c| c.trains_layer(l)))
                .collect();
            Some(held_out::<B>(&args, &loaded, &layers)?)
        } else {
            None
        };
        if let Some(h) = &heldout {
            let layouts: Vec<Layout> = Layout::ALL
                .into_iter()
                .filter(|l| configs.iter().any(|c| c.layouts.contains(l)))
                .collect();
            write_heldout_baselines(&args.out, h, &layouts, loaded.config.head_dim, args.seed)?;
        }
        let steps = configs[0].steps;
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
                .expect("valid template"),
        );
        let mut run_list: Vec<run::Run<Autodiff<B>>> = trainers
            .iter_mut()
            .zip(&runs)
            .map(|(trainer, (_, a))| run::Run {
                trainer,
                dir: a.out.as_path(),
            })
            .collect();
        let last = runs.len() - 1;
        let labels: Vec<String> = runs.iter().map(|(l, _)| l.clone()).collect();
        // When each step of every run had finished (the first includes kernel compilation).
        let mut step_ends = Vec::with_capacity(steps);
        // A resumed run's note (the newest checkpoint was damaged), shown once.
        let mut noted = vec![false; runs.len()];
        let stats = run::train_many(
            &loaded.model,
            &corpus,
            &mut run_list,
            heldout.as_ref().map(|h| run::HeldOutLog {
                heldout: h,
                every: args.eval_every,
            }),
            &mut |i, p| {
                if let Some(note) = p.stats.resume_note.as_deref().filter(|_| !noted[i]) {
                    bar.suspend(|| eprintln!("{note}"));
                }
                noted[i] = true;
                if i == last {
                    bar.set_position(p.step as u64);
                    step_ends.push(std::time::Instant::now());
                }
                let mut msg = if labels[i].is_empty() {
                    String::new()
                } else {
                    format!("{}: ", labels[i])
                };
                for layout in Layout::ALL {
                    let rs: Vec<_> = p.records.iter().filter(|r| r.layout == layout).collect();
                    if rs.is_empty() {
                        continue;
                    }
                    let n = rs.len() as f64;
                    msg.push_str(&format!(
                        "{}: loss {:.3} misordered {:.1}%  ",
                        layout.name(),
                        rs.iter().map(|r| r.loss).sum::<f64>() / n,
                        100.0 * rs.iter().map(|r| r.misordered).sum::<f64>() / n
                    ));
                }
                bar.set_message(msg);
            },
        )?;
        bar.finish();
        for ((_, a), c) in runs.iter().zip(&configs) {
            plot_curves(&a.out)?;
            if args.eval_every > 0 {
                plot_heldout(&a.out)?;
            }
            for layout in &c.layouts {
                eprintln!("wrote {}", run::hash_path(&a.out, *layout).display());
            }
        }
        if runs.len() > 1 && args.eval_every > 0 {
            plot_heldout_variants(&args.out, &runs)?;
        }
        if let Some(bench) = &args.bench {
            // The first run's share of the shared captures: throughput as if it ran alone.
            let (stats, config) = (&stats[0], &configs[0]);
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
                    all_runs_steady_s_per_step: match (step_ends.first(), step_ends.last()) {
                        (Some(a), Some(b)) if step_ends.len() > 1 => {
                            Some((*b - *a).as_secs_f64() / (step_ends.len() - 1) as f64)
                        }
                        _ => None,
                    },
                    config: config.clone(),
                    stats: stats.clone(),
                },
            )?;
        }
        Ok(())
    }
}

/// The held-out windows of `--eval-*` (Moby-Dick by default), captured once.
fn held_out<B: SpotlightBackend>(
    args: &TrainArgs,
    loaded: &model_args::Loaded<B>,
    layers: &[usize],
) -> Result<HeldOut<B>> {
    let text_path = match &args.eval_text {
        Some(t) => t.clone(),
        None => {
            crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
            crate::assets::moby_dick_path()
        }
    };
    let text = std::fs::read_to_string(&text_path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", text_path.display())))?;
    let tokens = loaded.tokenizer.encode(&text, false)?;
    let len = args.eval_tokens;
    if len < 64 || tokens.len() < len || args.eval_windows == 0 {
        return Err(CliError::Usage(format!(
            "--eval-tokens {len} × --eval-windows {}: {} has {} tokens (at least 64 per window, one window)",
            args.eval_windows,
            text_path.display(),
            tokens.len()
        )));
    }
    let windows = (0..args.eval_windows)
        .map(|w| {
            let start = if args.eval_windows > 1 {
                w * (tokens.len() - len) / (args.eval_windows - 1)
            } else {
                0
            };
            loaded.model.queries_and_keys(&tokens[start..start + len])
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(HeldOut::new(
        windows,
        layers,
        args.eval_queries,
        args.eval_budget,
        vec![4096],
        args.seed,
    )?)
}

/// The random linear hash at 1, 2, 5 and 10 × head_dim bits with each layout's selection, scored
/// on the held-out windows once: the lines a trained hash has to cross (`heldout_baselines.csv`).
fn write_heldout_baselines<B: SpotlightBackend>(
    dir: &Path,
    heldout: &HeldOut<B>,
    layouts: &[Layout],
    head_dim: usize,
    seed: u64,
) -> Result<()> {
    let mut csv = String::from("method,layout,bits,budget,iou,mass_recall,by_position\n");
    for &layout in layouts {
        for times in BASELINE_BITS {
            let method = Method::Linear {
                bits: times * head_dim,
                seed,
                group: layout == Layout::Group,
            };
            let s = heldout.score(&method);
            csv.push_str(&format!(
                "{},{},{},{},{:.5},{:.5},{}\n",
                method.name(),
                layout.name(),
                times * head_dim,
                heldout.budget,
                s.iou,
                s.mass_recall,
                run::position_summary(&s.by_position)
            ));
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(HELDOUT_BASELINES);
    std::fs::write(&path, csv)
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Multiples of head_dim at which the linear baseline is scored on held-out text.
const BASELINE_BITS: [usize; 4] = [1, 2, 5, 10];
const HELDOUT_BASELINES: &str = "heldout_baselines.csv";

/// The baselines of `heldout_baselines.csv` (in `dir` or its parent) as flat (IoU, mass) lines
/// over `steps`: head_dim and 5 × head_dim bits only, to keep the chart readable.
fn baseline_series(dir: &Path, steps: f64) -> Vec<(Series, Series)> {
    let path = [
        dir.join(HELDOUT_BASELINES),
        dir.join("..").join(HELDOUT_BASELINES),
    ]
    .into_iter()
    .find(|p| p.exists());
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return Vec::new();
    };
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let min_bits = rows
        .iter()
        .filter_map(|f| f.get(2).and_then(|b| b.parse::<usize>().ok()))
        .min()
        .unwrap_or(0);
    rows.iter()
        .filter_map(|f| {
            let bits: usize = f.get(2)?.parse().ok()?;
            if bits != min_bits && bits != 5 * min_bits {
                return None;
            }
            let (iou, mass): (f64, f64) = (f.get(4)?.parse().ok()?, f.get(5)?.parse().ok()?);
            let name = format!("{} {bits} bits", f[0]);
            let flat = |v: f64| vec![(0.0, v), (steps, v)];
            Some((
                Series {
                    name: name.clone(),
                    points: flat(iou),
                },
                Series {
                    name,
                    points: flat(mass),
                },
            ))
        })
        .collect()
}

/// Held-out IoU and mass per step and layout (`heldout_iou.png`) from `heldout.csv`.
pub fn plot_heldout(dir: &Path) -> Result<()> {
    heldout_charts(dir, heldout_series(dir, "")?)
}

/// One chart of every variant's held-out curves, in the parent run directory.
fn plot_heldout_variants(dir: &Path, runs: &[(String, TrainArgs)]) -> Result<()> {
    let mut all = Vec::new();
    for (label, a) in runs {
        all.extend(heldout_series(&a.out, label)?);
    }
    heldout_charts(dir, all)
}

/// (step, value) points of a curve.
type Points = Vec<(f64, f64)>;

/// (IoU series, mass series) of one run's held-out log, named "`prefix` layout".
fn heldout_series(dir: &Path, prefix: &str) -> Result<Vec<(Series, Series)>> {
    let path = dir.join(run::HELDOUT);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?;
    // layout → (IoU points, mass points)
    let mut by_layout: BTreeMap<String, (Points, Points)> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(step), Some(iou), Some(mass)) = (
            f.first().and_then(|v| v.parse::<f64>().ok()),
            f.get(4).and_then(|v| v.parse::<f64>().ok()),
            f.get(5).and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        let e = by_layout.entry(f[1].to_string()).or_default();
        e.0.push((step, iou));
        e.1.push((step, mass));
    }
    Ok(by_layout
        .into_iter()
        .map(|(layout, (iou, mass))| {
            let name = format!("{prefix} {layout}").trim().to_string();
            (
                Series {
                    name: name.clone(),
                    points: iou,
                },
                Series { name, points: mass },
            )
        })
        .collect())
}

fn heldout_charts(dir: &Path, mut series: Vec<(Series, Series)>) -> Result<()> {
    let steps = series
        .iter()
        .flat_map(|(s, _)| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    series.extend(baseline_series(dir, steps));
    let (iou, mass): (Vec<Series>, Vec<Series>) = series.into_iter().unzip();
    line_chart(
        &dir.join("heldout_iou.png"),
        "Held-out IoU with the oracle of the same selection granularity",
        "step",
        "IoU at the budget (layers ≥ 2)",
        &iou,
        false,
    )?;
    line_chart(
        &dir.join("heldout_mass.png"),
        "Held-out attention mass covered",
        "step",
        "attention mass at the budget (layers ≥ 2)",
        &mass,
        false,
    )
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
