//! `spotlight eval retrieval`: retrieval quality of every method on held-out text (Moby-Dick by
//! default; the hash is trained on the State of the Union addresses), per layer and averaged over
//! layers ≥ 2 — IoU and recall of the oracle top-k and attention-mass recall, at several budgets.
//! Writes `retrieval_quality.json`, a per-layer CSV and recall-vs-budget plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, seq::index::sample, SeedableRng};
use serde::Serialize;
use spotlight_train::quality::{evaluate_layer, LayerQuality, Method, PositionQuality};
use spotlight_train::{HashFile, Layout, TrainConfig, Trainer};

use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::model_args::{self, ModelArgs};
use crate::plot::{line_chart, Series};

#[derive(Debug, Clone, clap::Args)]
pub struct RetrievalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Trained hash files to evaluate, each labelled "spotlight" with its layout and bits, or
    /// `LABEL=PATH` to label it LABEL (to tell apart files of the same layout and bits).
    #[arg(long = "hash")]
    pub hashes: Vec<PathBuf>,
    /// Leave out the untrained hash (the trainer's default start for --seed, both layouts).
    #[arg(long = "no-untrained", action = clap::ArgAction::SetFalse)]
    pub untrained: bool,
    /// Seed of the untrained hash and of the sampled query rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Code lengths of the random linear hash baselines, each evaluated per query head (`linear`)
    /// and per KV head (`linear-group`) (0 to skip).
    #[arg(long, value_delimiter = ',', default_value = "128,640")]
    pub linear_bits: Vec<usize>,
    /// Quest page size in tokens (0 to skip Quest).
    #[arg(long, default_value_t = 16)]
    pub quest_page: usize,
    /// Budgets as fractions of the visible keys.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.02,0.05,0.1")]
    pub budgets: Vec<f64>,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 4096)]
    pub tokens: usize,
    /// Windows, spread evenly over the text.
    #[arg(long, default_value_t = 2)]
    pub windows: usize,
    /// Query rows sampled per window (positions ≥ min(512, tokens/2)); all layers use the same rows.
    #[arg(long, default_value_t = 64)]
    pub queries: usize,
    /// First layer averaged (layers 0 and 1 stay dense at decode).
    #[arg(long, default_value_t = 2)]
    pub first_layer: usize,
    /// Query positions where the by-position metrics split (rows before and after each).
    #[arg(long, value_delimiter = ',', default_value = "4096")]
    pub position_split: Vec<usize>,
    /// Held-out text [default: Moby-Dick].
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Result JSON; the CSV and plots go beside it.
    #[arg(long, default_value = "benches/results/retrieval_quality.json")]
    pub json: PathBuf,
    /// Only redraw the plots of the existing --json report (no model run).
    #[arg(long)]
    pub replot: bool,
    /// Also evaluate every code method with keys tied at equal code score ordered by their true
    /// logit ("+logit-ties" rows): a ceiling on what finer scores (more bits) could add.
    #[arg(long)]
    pub logit_ties: bool,
}

/// One averaged row of the result. IoU and recall are against the oracle of the row's
/// `selection` ("per-head": each query head's top-k; "group": the group oracle); attention mass
/// is per query head for both.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct QualityRow {
    pub method: String,
    pub layout: String,
    #[serde(default)]
    pub selection: String,
    pub bits: usize,
    pub budget: f64,
    pub iou: f64,
    pub recall: f64,
    pub mass_recall: f64,
    pub bytes_per_token: f64,
    pub kv_read: f64,
    /// The metrics of the query rows in each position range.
    #[serde(default)]
    pub by_position: Vec<PositionQuality>,
}

#[derive(Debug, Serialize)]
struct QualityReport {
    command: String,
    commit: String,
    date: Option<String>,
    device: String,
    model: String,
    text: String,
    tokens: usize,
    windows: usize,
    queries: usize,
    first_layer: usize,
    hash_files: Vec<String>,
    rows: Vec<QualityRow>,
}

pub fn run(args: RetrievalArgs) -> Result<()> {
    if args.replot {
        return replot(&args.json);
    }
    let kind = args.model.backend;
    backend::run(kind, Job(args))
}

struct Job(RetrievalArgs);

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, kind: BackendKind) -> Result<()> {
        let a = self.0;
        let path = a.model.path()?;
        let id = crate::model_args::ModelId::of(&path);
        let model_name = id.name.clone();
        let text_path = match &a.text {
            Some(t) => t.clone(),
            None => {
                crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
                crate::assets::moby_dick_path()
            }
        };
        if a.budgets.iter().any(|&b| !(b > 0.0 && b <= 1.0)) {
            return Err(CliError::Usage(format!(
                "--budgets {:?}: each must be in (0, 1]",
                a.budgets
            )));
        }
        // Damaged hash files are reported before the (slower) model load.
        let hash_files = a
            .hashes
            .iter()
            .map(|h| {
                let arg = h.to_string_lossy();
                let (label, path) = match arg.split_once('=') {
                    Some((label, path)) if !label.is_empty() && !label.contains('/') => {
                        (label.to_string(), PathBuf::from(path))
                    }
                    _ => ("spotlight".to_string(), h.clone()),
                };
                Ok((label, HashFile::load(&path)?))
            })
            .collect::<std::result::Result<Vec<_>, spotlight_train::TrainError>>()?;
        let loaded = model_args::load::<B>(&path, Some(a.tokens), &device)?;
        let c = &loaded.config;
        for (_, file) in &hash_files {
            file.check_model(&model_name, id.fingerprint.as_deref(), c)?;
        }
        if a.tokens < 64 || a.tokens > loaded.model.rope.max_positions() {
            return Err(CliError::Usage(format!(
                "--tokens {} must be between 64 and the model's context of {}",
                a.tokens, c.max_position_embeddings
            )));
        }
        let mut methods = vec![
            Method::Oracle { group: false },
            Method::Oracle { group: true },
        ];
        for (name, file) in hash_files {
            methods.push(Method::Hash { name, file });
        }
        if a.untrained {
            let init = Trainer::<Autodiff<B>>::new(
                TrainConfig {
                    seed: a.seed,
                    ..TrainConfig::default()
                },
                &model_name,
                c,
                &device,
            )?;
            for layout in Layout::ALL {
                methods.push(Method::Hash {
                    name: "untrained".into(),
                    file: init.hash_file(layout)?,
                });
            }
        }
        for &bits in a.linear_bits.iter().filter(|&&b| b > 0) {
            if !bits.is_multiple_of(32) {
                return Err(CliError::Usage(format!(
                    "--linear-bits {bits}: must be a multiple of 32"
                )));
            }
            for group in [false, true] {
                methods.push(Method::Linear {
                    bits,
                    seed: a.seed,
                    group,
                });
            }
        }
        if a.quest_page > 0 {
            methods.push(Method::Quest { page: a.quest_page });
        }

        let text = std::fs::read_to_string(&text_path)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", text_path.display())))?;
        let tokens = loaded.tokenizer.encode(&text, false)?;
        if tokens.len() < a.tokens {
            return Err(CliError::Usage(format!(
                "{} has {} tokens, fewer than --tokens {}",
                text_path.display(),
                tokens.len(),
                a.tokens
            )));
        }
        let layers = c.num_hidden_layers;
        let first = a.first_layer.min(layers.saturating_sub(1));
        let bar = ProgressBar::new((a.windows * (layers - first)) as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} layer-windows {elapsed}<{eta}")
                .expect("valid"),
        );
        let mut per_layer: Vec<LayerQuality> = Vec::new();
        for w in 0..a.windows {
            let start = if a.windows > 1 {
                w * (tokens.len() - a.tokens) / (a.windows - 1)
            } else {
                0
            };
            let window = &tokens[start..start + a.tokens];
            let qk = loaded.model.queries_and_keys(window)?;
            let min_pos = 512.min(a.tokens / 2);
            let mut rng = StdRng::seed_from_u64(spotlight_train::trainer::mix_seed(
                a.seed,
                &[0xe7a1, w as u64],
            ));
            let mut positions: Vec<usize> = sample(
                &mut rng,
                a.tokens - min_pos,
                a.queries.min(a.tokens - min_pos),
            )
            .into_iter()
            .map(|p| p + min_pos)
            .collect();
            positions.sort_unstable();
            for (l, layer) in qk.iter().enumerate().skip(first) {
                per_layer.extend(evaluate_layer(
                    l,
                    layer,
                    &positions,
                    &methods,
                    &a.budgets,
                    a.logit_ties,
                    &a.position_split,
                ));
                bar.inc(1);
            }
        }
        bar.finish();

        // Mean over windows per layer (CSV), then over layers (JSON rows).
        type Key = (String, String, String, usize, u64);
        let key = |q: &LayerQuality| -> Key {
            (
                q.method.clone(),
                q.layout.clone(),
                q.selection.clone(),
                q.bits,
                q.budget.to_bits(),
            )
        };
        let mut by_layer: BTreeMap<(Key, usize), Vec<&LayerQuality>> = BTreeMap::new();
        for q in &per_layer {
            by_layer.entry((key(q), q.layer)).or_default().push(q);
        }
        let mean = |qs: &[&LayerQuality], f: fn(&LayerQuality) -> f64| {
            qs.iter().map(|q| f(q)).sum::<f64>() / qs.len() as f64
        };
        let mut csv = String::from(
            "method,layout,selection,bits,layer,budget,iou,recall,mass_recall,kv_read,bytes_per_token\n",
        );
        let mut overall: BTreeMap<Key, Vec<&LayerQuality>> = BTreeMap::new();
        for ((k, layer), qs) in &by_layer {
            csv.push_str(&format!(
                "{},{},{},{},{layer},{},{:.5},{:.5},{:.5},{:.4},{}\n",
                k.0,
                k.1,
                k.2,
                k.3,
                f64::from_bits(k.4),
                mean(qs, |q| q.iou),
                mean(qs, |q| q.recall),
                mean(qs, |q| q.mass_recall),
                mean(qs, |q| q.kv_read),
                qs[0].bytes_per_token
            ));
            overall
                .entry(k.clone())
                .or_default()
                .extend(qs.iter().copied());
        }
        let mut rows: Vec<QualityRow> = overall
            .iter()
            .map(|(k, qs)| QualityRow {
                method: k.0.clone(),
                layout: k.1.clone(),
                selection: k.2.clone(),
                bits: k.3,
                budget: f64::from_bits(k.4),
                iou: mean(qs, |q| q.iou),
                recall: mean(qs, |q| q.recall),
                mass_recall: mean(qs, |q| q.mass_recall),
                bytes_per_token: qs[0].bytes_per_token,
                kv_read: mean(qs, |q| q.kv_read),
                by_position: pooled_positions(qs),
            })
            .collect();
        rows.sort_by(|x, y| {
            x.budget
                .total_cmp(&y.budget)
                .then(y.mass_recall.total_cmp(&x.mass_recall))
        });
        println!(
            "{:<14} {:<9} {:<9} {:>5} {:>6} {:>6} {:>7} {:>11} {:>8} {:>9}  iou by position",
            "method",
            "layout",
            "selection",
            "bits",
            "budget",
            "iou",
            "recall",
            "mass_recall",
            "kv_read",
            "B/token"
        );
        for r in &rows {
            let by_position: Vec<String> = r
                .by_position
                .iter()
                .map(|p| match p.to {
                    Some(to) => format!("<{to}: {:.3}", p.iou),
                    None => format!("≥{}: {:.3}", p.from, p.iou),
                })
                .collect();
            println!(
                "{:<14} {:<9} {:<9} {:>5} {:>6.3} {:>6.3} {:>7.3} {:>11.3} {:>8.2} {:>9.1}  {}",
                r.method,
                r.layout,
                r.selection,
                r.bits,
                r.budget,
                r.iou,
                r.recall,
                r.mass_recall,
                r.kv_read,
                r.bytes_per_token,
                by_position.join("  ")
            );
        }
        let stem = a.json.with_extension("");
        let csv_path = stem.with_extension("per_layer.csv");
        if let Some(dir) = a.json.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&csv_path, csv)
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", csv_path.display())))?;
        plot_quality(&stem, &rows, &model_name, first)?;
        crate::bench::write_report(
            &a.json,
            &QualityReport {
                command: crate::invocation(),
                commit: crate::bench::git_commit(),
                date: crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
                device: crate::bench::device_name(kind),
                model: model_name,
                text: text_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                tokens: a.tokens,
                windows: a.windows,
                queries: a.queries,
                first_layer: first,
                hash_files: a.hashes.iter().map(|p| p.display().to_string()).collect(),
                rows,
            },
        )
    }
}

/// By-position metrics pooled over layers and windows, each bin weighted by its rows; bins
/// without rows are left out.
fn pooled_positions(qs: &[&LayerQuality]) -> Vec<PositionQuality> {
    let Some(first) = qs.first() else {
        return Vec::new();
    };
    (0..first.by_position.len())
        .filter_map(|b| {
            let bins: Vec<&PositionQuality> = qs.iter().map(|q| &q.by_position[b]).collect();
            let rows: usize = bins.iter().map(|p| p.rows).sum();
            let mut layers: Vec<usize> = qs.iter().map(|q| q.layer).collect();
            layers.sort_unstable();
            layers.dedup();
            if rows == 0 {
                return None;
            }
            let pooled = |f: fn(&PositionQuality) -> f64| {
                bins.iter().map(|p| f(p) * p.rows as f64).sum::<f64>() / rows as f64
            };
            Some(PositionQuality {
                from: bins[0].from,
                to: bins[0].to,
                iou: pooled(|p| p.iou),
                recall: pooled(|p| p.recall),
                mass_recall: pooled(|p| p.mass_recall),
                // Rows per layer (every layer sees the same rows).
                rows: rows / layers.len(),
            })
        })
        .collect()
}

/// Recall-vs-budget plots `<stem>.mass_recall.png` and `<stem>.iou.png` of the averaged rows.
fn plot_quality(stem: &Path, rows: &[QualityRow], model: &str, first: usize) -> Result<()> {
    for (metric, label, f) in [
        (
            "mass_recall",
            "attention mass covered",
            (|r: &QualityRow| r.mass_recall) as fn(&QualityRow) -> f64,
        ),
        ("iou", "IoU with the oracle top-k", |r: &QualityRow| r.iou),
    ] {
        let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in rows {
            let name = format!("{} {} {}b", r.method, r.selection, r.bits);
            lines
                .entry(name)
                .or_default()
                .push((100.0 * r.budget, f(r)));
        }
        let series: Vec<Series> = lines
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { name, points }
            })
            .collect();
        line_chart(
            &stem.with_extension(format!("{metric}.png")),
            &format!("{label} vs budget ({model}, layers ≥ {first})"),
            "budget (% of visible keys)",
            label,
            &series,
            false,
        )?;
    }
    plot_bits(stem, rows, model, first)
}

/// `<stem>.bits.png`: IoU and mass at the budget nearest 2% against code bits — the random linear
/// hash as one line per selection, every trained hash as its own point.
fn plot_bits(stem: &Path, rows: &[QualityRow], model: &str, first: usize) -> Result<()> {
    let Some(budget) = rows
        .iter()
        .map(|r| r.budget)
        .min_by(|a, b| (a - 0.02).abs().total_cmp(&(b - 0.02).abs()))
    else {
        return Ok(());
    };
    let at: Vec<&QualityRow> = rows
        .iter()
        .filter(|r| r.budget == budget && r.bits > 0 && r.method != "quest")
        .collect();
    for (metric, label, f) in [
        (
            "bits_iou",
            "IoU with the oracle top-k",
            (|r: &QualityRow| r.iou) as fn(&QualityRow) -> f64,
        ),
        ("bits_mass", "attention mass covered", |r: &QualityRow| {
            r.mass_recall
        }),
    ] {
        let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for r in &at {
            let name = if r.method.starts_with("linear") {
                format!("{} ({})", r.method, r.selection)
            } else {
                format!("{} {} ({})", r.method, r.layout, r.selection)
            };
            lines.entry(name).or_default().push((r.bits as f64, f(r)));
        }
        let series: Vec<Series> = lines
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Series { name, points }
            })
            .collect();
        if series.is_empty() {
            continue;
        }
        line_chart(
            &stem.with_extension(format!("{metric}.png")),
            &format!(
                "{label} at {}% vs code bits ({model}, layers ≥ {first})",
                100.0 * budget
            ),
            "code bits per head",
            label,
            &series,
            false,
        )?;
    }
    Ok(())
}

/// `--replot`: redraws the plots of an existing report from its rows.
fn replot(json: &Path) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Saved {
        model: String,
        first_layer: usize,
        rows: Vec<QualityRow>,
    }
    let text = std::fs::read_to_string(json)
        .map_err(|e| CliError::Io(format!("cannot read {}: {e}", json.display())))?;
    let saved: Saved = serde_json::from_str(&text)
        .map_err(|e| CliError::Io(format!("{}: not a retrieval report: {e}", json.display())))?;
    plot_quality(
        &json.with_extension(""),
        &saved.rows,
        &saved.model,
        saved.first_layer,
    )
}
