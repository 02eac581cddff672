//! `spotlight eval fidelity`: does sparse attention give dense attention's answers? On held-out
//! text (Moby-Dick by default), dense against every selector at every budget (+ sink + window):
//! - `ppl`: teacher-forced perplexity with the selection applied on every row, budget from the
//!   window length, mean over windows spread over the text;
//! - `passkey`, `multikey`, `vartrack`: retrieval tasks over haystacks of held-out text at several
//!   contexts and depths (greedy; share of expected strings in the answer); heatmaps;
//! - `agreement`: the first greedy tokens of long prompts against dense — share of prompts with all
//!   tokens equal, and longest-common-subsequence overlap.
//!
//! Writes `fidelity.json` = {"model", "rows": [{"method", "budget", "task", "context", "score",
//! "dense_score"}]}, and beside it a folder of the same name with a CSV of the rows, a CSV of every
//! retrieval trial and the PNG plots.

use std::collections::BTreeMap;
use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use spotlight_llama::{
    generate, perplexity, GenerateConfig, Llama, Sampling, SelectRows, Selection,
};
use spotlight_train::quality::Method;
use spotlight_train::HashFile;

use crate::attention_args::{self, AttentionKind, SelectorArgs};
use crate::backend::{self, BackendKind, OnBackend, SpotlightBackend};
use crate::error::{CliError, Result};
use crate::fidelity_tasks::{self, RetrievalTask, Trial};
use crate::model_args::{self, ModelArgs};
use crate::plot::{heatmap, line_chart, Series};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    Ppl,
    Passkey,
    Multikey,
    Vartrack,
    Agreement,
}

impl Task {
    fn retrieval(self) -> Option<RetrievalTask> {
        match self {
            Task::Passkey => Some(RetrievalTask::Passkey),
            Task::Multikey => Some(RetrievalTask::Multikey),
            Task::Vartrack => Some(RetrievalTask::Vartrack),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct FidelityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Sparse attentions compared with dense.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "spotlight,linear,quest,oracle"
    )]
    pub methods: Vec<AttentionKind>,
    /// Budgets (fractions of the cached tokens chosen by score).
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.1")]
    pub budgets: Vec<f64>,
    #[command(flatten)]
    pub selector: SelectorArgs,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ppl,passkey,multikey,vartrack,agreement"
    )]
    pub tasks: Vec<Task>,
    /// Perplexity window lengths.
    #[arg(long, value_delimiter = ',', default_value = "4096,8192")]
    pub ppl_contexts: Vec<usize>,
    /// Perplexity windows per length, spread evenly over the text.
    #[arg(long, default_value_t = 3)]
    pub ppl_windows: usize,
    /// Prompt lengths of the retrieval tasks.
    #[arg(long, value_delimiter = ',', default_value = "1024,2048,4096,8192")]
    pub contexts: Vec<usize>,
    /// Depths per context (0 to 100% of the haystack, evenly).
    #[arg(long, default_value_t = 10)]
    pub depths: usize,
    /// Trials per (context, depth), each with its own keys and haystack offset.
    #[arg(long, default_value_t = 2)]
    pub needles: usize,
    /// Long prompts of the agreement task.
    #[arg(long, default_value_t = 20)]
    pub agreement_prompts: usize,
    /// Tokens per agreement prompt.
    #[arg(long, default_value_t = 2048)]
    pub agreement_context: usize,
    /// Greedy tokens compared per agreement prompt.
    #[arg(long, default_value_t = 64)]
    pub agreement_tokens: usize,
    /// Prompts generated together (retrieval tasks and agreement).
    #[arg(long, default_value_t = 20)]
    pub batch: usize,
    /// Seed of the tasks' keys, names and haystack offsets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out text [default: Moby-Dick].
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Result JSON; CSVs and plots go into the folder of the same name beside it.
    #[arg(long, default_value = "benches/results/fidelity.json")]
    pub json: PathBuf,
    /// Only redraw the plots (and rows.csv) from --json and the trials.csv beside it.
    #[arg(long)]
    pub replot: bool,
    /// Keep the rows already in --json that this run does not redo (same task, method, budget and
    /// context are replaced): a long evaluation split over several runs.
    #[arg(long)]
    pub merge: bool,
}

/// One result row (the schema plus the number of trials or windows averaged).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FidelityRow {
    pub method: String,
    pub budget: f64,
    pub task: String,
    pub context: usize,
    pub score: f64,
    pub dense_score: f64,
    pub trials: usize,
}

#[derive(Debug, Serialize)]
struct FidelityReport {
    /// Every invocation whose rows the report holds (several with --merge).
    commands: Vec<String>,
    commit: String,
    date: Option<String>,
    device: String,
    model: String,
    text: String,
    hash_file: Option<String>,
    sink: usize,
    window: usize,
    min_tokens: usize,
    dense_layers: usize,
    rows: Vec<FidelityRow>,
}

pub fn run(args: FidelityArgs) -> Result<()> {
    if args.replot {
        return replot(&args);
    }
    let kind = args.model.backend;
    backend::run(kind, Job(args))
}

/// Redraws the CSV of rows and every plot from the report at --json and its trials.csv.
fn replot(a: &FidelityArgs) -> Result<()> {
    #[derive(serde::Deserialize)]
    struct Saved {
        model: String,
        rows: Vec<FidelityRow>,
    }
    let text = std::fs::read_to_string(&a.json)
        .map_err(|e| CliError::Io(format!("--replot: cannot read {}: {e}", a.json.display())))?;
    let saved: Saved = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "--replot: {} is not a fidelity report: {e}",
            a.json.display()
        ))
    })?;
    write_outputs(a, &saved.rows, None, &saved.model)
}

struct Job(FidelityArgs);

/// One sparse configuration under test.
struct Variant<B: SpotlightBackend> {
    method: String,
    budget: f64,
    /// For generation: the decode kernels where the backend has them.
    decode: Selection<B>,
    /// For teacher-forced perplexity: every row, mask path.
    every_row: Selection<B>,
}

impl OnBackend for Job {
    type Output = ();
    fn run<B: SpotlightBackend>(self, device: B::Device, kind: BackendKind) -> Result<()> {
        let a = self.0;
        let path = a.model.path()?;
        let model_id = crate::model_args::ModelId::of(&path);
        for &m in &a.methods {
            if m == AttentionKind::Dense {
                return Err(CliError::Usage(
                    "--methods: dense is always the reference; list sparse methods only".into(),
                ));
            }
            a.selector.check(m, &model_id)?;
        }
        for &b in &a.budgets {
            a.selector.budget(b)?;
        }
        let text_path = match &a.text {
            Some(t) => t.clone(),
            None => {
                crate::assets::ensure(&crate::assets::MOBY_DICK, &mut |m| eprintln!("{m}"))?;
                crate::assets::moby_dick_path()
            }
        };
        // Damaged hash files are reported before the (slower) model load.
        let hash_path = a
            .methods
            .contains(&AttentionKind::Spotlight)
            .then(|| a.selector.hash_path(&model_id))
            .flatten();
        let hash = hash_path.as_ref().map(|p| HashFile::load(p)).transpose()?;
        let longest = longest_context(&a);
        let loaded = model_args::load::<B>(&path, Some(longest), &device)?;
        let c = &loaded.config;
        if longest > loaded.model.rope.max_positions() {
            return Err(CliError::Usage(format!(
                "contexts up to {longest} tokens exceed the model's context of {}",
                loaded.model.rope.max_positions()
            )));
        }
        let mut variants: Vec<Variant<B>> = Vec::new();
        for &m in &a.methods {
            let method: Method = a
                .selector
                .method(m, hash.clone(), &model_id, c)?
                .expect("sparse");
            for &b in &a.budgets {
                let budget = a.selector.budget(b)?;
                let decode = attention_args::selection::<B>(
                    &method,
                    budget,
                    SelectRows::Decode,
                    c,
                    &device,
                )?;
                // Every-row evaluation runs the mask path (window_nll sets the budget length).
                let every_row = attention_args::selection::<B>(
                    &method,
                    budget,
                    SelectRows::EveryRow { budget_len: 0 },
                    c,
                    &device,
                )?;
                variants.push(Variant {
                    method: every_row.selector.name(),
                    budget: b,
                    decode,
                    every_row,
                });
            }
        }
        let text = std::fs::read_to_string(&text_path)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", text_path.display())))?;
        let tokens = loaded.tokenizer.encode(&text, false)?;
        if tokens.len() < longest + 1 {
            return Err(CliError::Usage(format!(
                "{} has {} tokens, fewer than the longest context {longest}",
                text_path.display(),
                tokens.len()
            )));
        }
        let units = progress_units(&a, variants.len());
        let bar = ProgressBar::new(units as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} runs {elapsed}<{eta} {msg}")
                .expect("valid"),
        );
        let mut rows = Vec::new();
        let mut trials_csv = String::from("task,context,depth,trial,method,budget,score,output\n");
        let model = &loaded.model;
        for &task in &a.tasks {
            match task {
                Task::Ppl => {
                    for &ctx in &a.ppl_contexts {
                        bar.set_message(format!("ppl {ctx}"));
                        let windows = spread(tokens.len(), ctx, a.ppl_windows);
                        let ppl = |sel: Option<&Selection<B>>| -> Result<f64> {
                            let mut sum = 0.0;
                            for &s in &windows {
                                let (nll, n) = perplexity::window_nll(
                                    model,
                                    &tokens[s..s + ctx],
                                    perplexity::DEFAULT_CHUNK,
                                    sel,
                                )?;
                                sum += (nll / n as f64).exp();
                            }
                            Ok(sum / windows.len() as f64)
                        };
                        let dense = ppl(None)?;
                        bar.inc(1);
                        for v in &variants {
                            rows.push(row(
                                v,
                                "ppl",
                                ctx,
                                ppl(Some(&v.every_row))?,
                                dense,
                                windows.len(),
                            ));
                            bar.inc(1);
                        }
                    }
                }
                Task::Agreement => {
                    bar.set_message("agreement");
                    let ctx = a.agreement_context;
                    let prompts: Vec<Vec<u32>> = spread(tokens.len(), ctx, a.agreement_prompts)
                        .into_iter()
                        .map(|s| tokens[s..s + ctx].to_vec())
                        .collect();
                    let dense = greedy(model, &prompts, a.agreement_tokens, None, a.batch)?;
                    bar.inc(1);
                    for v in &variants {
                        let out = greedy(
                            model,
                            &prompts,
                            a.agreement_tokens,
                            Some(&v.decode),
                            a.batch,
                        )?;
                        let n = prompts.len();
                        let exact = dense.iter().zip(&out).filter(|(d, o)| d == o).count();
                        let lcs: f64 = dense
                            .iter()
                            .zip(&out)
                            .map(|(d, o)| lcs_len(d, o) as f64 / d.len().max(1) as f64)
                            .sum();
                        rows.push(row(
                            v,
                            "agreement_exact",
                            ctx,
                            exact as f64 / n as f64,
                            1.0,
                            n,
                        ));
                        rows.push(row(v, "agreement_lcs", ctx, lcs / n as f64, 1.0, n));
                        bar.inc(1);
                    }
                }
                t => {
                    let rt = t.retrieval().expect("retrieval task");
                    for &ctx in &a.contexts {
                        bar.set_message(format!("{} {ctx}", rt.name()));
                        let mut trials: Vec<(usize, usize, Trial)> = Vec::new();
                        for d in 0..a.depths {
                            let depth = d as f64 / (a.depths.max(2) - 1) as f64;
                            for n in 0..a.needles {
                                let seed = spotlight_train::trainer::mix_seed(
                                    a.seed,
                                    &[rt as u64, ctx as u64, d as u64, n as u64],
                                );
                                let offset = (seed % tokens.len() as u64) as usize;
                                let trial = fidelity_tasks::build(
                                    rt,
                                    &loaded.tokenizer,
                                    &tokens,
                                    offset,
                                    ctx - rt.answer_tokens(),
                                    depth,
                                    seed,
                                )?;
                                trials.push((d, n, trial));
                            }
                        }
                        let prompts: Vec<Vec<u32>> =
                            trials.iter().map(|t| t.2.prompt.clone()).collect();
                        let mut score = |sel: Option<&Selection<B>>, name: &str, budget: f64| {
                            let outs = greedy(model, &prompts, rt.answer_tokens(), sel, a.batch)?;
                            let mut total = 0.0;
                            for ((d, n, trial), out) in trials.iter().zip(outs) {
                                let text = loaded.tokenizer.decode(&out)?;
                                let s = trial.score(&text);
                                total += s;
                                trials_csv.push_str(&format!(
                                    "{},{ctx},{d},{n},{name},{budget},{s},{:?}\n",
                                    rt.name(),
                                    text.replace('\n', " ")
                                ));
                            }
                            Ok::<f64, CliError>(total / trials.len() as f64)
                        };
                        let dense = score(None, "dense", 1.0)?;
                        bar.inc(1);
                        for v in &variants {
                            let s = score(Some(&v.decode), &v.method, v.budget)?;
                            rows.push(row(v, rt.name(), ctx, s, dense, trials.len()));
                            bar.inc(1);
                        }
                    }
                }
            }
        }
        bar.finish();
        let mut commands = vec![crate::invocation()];
        if a.merge {
            let (old_commands, all) = merged(&a.json, rows)?;
            rows = all;
            commands = old_commands.into_iter().chain(commands).collect();
        }
        for r in &rows {
            println!(
                "{:<16} {:>5.1}% {:<16} {:>6} {:>9.4} (dense {:.4})",
                r.method,
                100.0 * r.budget,
                r.task,
                r.context,
                r.score,
                r.dense_score
            );
        }
        write_outputs(&a, &rows, Some(&trials_csv), &model_id.name)?;
        crate::bench::write_report(
            &a.json,
            &FidelityReport {
                commands,
                commit: crate::bench::git_commit(),
                date: crate::bench::command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
                device: crate::bench::device_name(kind),
                model: model_id.name.clone(),
                text: text_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                hash_file: hash_path.map(|p| p.display().to_string()),
                sink: a.selector.sink,
                window: a.selector.window,
                min_tokens: a.selector.min_tokens,
                dense_layers: 2,
                rows,
            },
        )
    }
}

/// The commands and rows of the report at `path` (if any) that this run's rows do not replace
/// (same task, method, budget and context), followed by this run's rows.
fn merged(
    path: &std::path::Path,
    rows: Vec<FidelityRow>,
) -> Result<(Vec<String>, Vec<FidelityRow>)> {
    #[derive(serde::Deserialize)]
    struct Previous {
        commands: Vec<String>,
        rows: Vec<FidelityRow>,
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok((Vec::new(), rows));
    };
    let previous: Previous = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "--merge: {} is not a fidelity report: {e}",
            path.display()
        ))
    })?;
    let same = |p: &FidelityRow, r: &FidelityRow| {
        (&p.task, &p.method, p.budget, p.context) == (&r.task, &r.method, r.budget, r.context)
    };
    let mut out: Vec<FidelityRow> = previous
        .rows
        .into_iter()
        .filter(|p| !rows.iter().any(|r| same(p, r)))
        .collect();
    out.extend(rows);
    Ok((previous.commands, out))
}

fn row<B: SpotlightBackend>(
    v: &Variant<B>,
    task: &str,
    context: usize,
    score: f64,
    dense_score: f64,
    trials: usize,
) -> FidelityRow {
    FidelityRow {
        method: v.method.clone(),
        budget: v.budget,
        task: task.into(),
        context,
        score,
        dense_score,
        trials,
    }
}

/// One retrieval trial's score, for the depth × context heatmaps.
struct DepthScore {
    task: String,
    label: String,
    file: String,
    context: usize,
    depth: usize,
    score: f64,
}

fn label(method: &str, budget: f64) -> String {
    if method == "dense" {
        method.into()
    } else {
        format!("{method} {}%", 100.0 * budget)
    }
}

fn file_label(method: &str, budget: f64) -> String {
    if method == "dense" {
        method.into()
    } else {
        format!("{method}_{}pct", 100.0 * budget).replace('.', "_")
    }
}

/// The trials of trials.csv (task,context,depth,trial,method,budget,score,output).
fn parse_trials(csv: &str) -> Vec<DepthScore> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.splitn(8, ',').collect();
            let (method, budget) = (f.get(4)?, f.get(5)?.parse::<f64>().ok()?);
            Some(DepthScore {
                task: f[0].to_string(),
                label: label(method, budget),
                file: file_label(method, budget),
                context: f.get(1)?.parse().ok()?,
                depth: f.get(2)?.parse().ok()?,
                score: f.get(6)?.parse().ok()?,
            })
        })
        .collect()
}

/// The classic needle picture (passkey): per attention, mean score by depth (rows) and context.
fn depth_heatmaps(a: &FidelityArgs, scores: &[DepthScore], model: &str) -> Result<()> {
    let dir = a.json.with_extension("");
    let mut groups: BTreeMap<(&str, &str), Vec<&DepthScore>> = BTreeMap::new();
    for s in scores.iter().filter(|s| s.task == "passkey") {
        groups
            .entry((s.task.as_str(), s.file.as_str()))
            .or_default()
            .push(s);
    }
    for ((task, file), group) in groups {
        let label = &group[0].label;
        let mut contexts: Vec<usize> = group.iter().map(|s| s.context).collect();
        contexts.sort_unstable();
        contexts.dedup();
        // Depths as recorded in the trials (a replot need not repeat the flags).
        let depths = group.iter().map(|s| s.depth + 1).max().unwrap_or(1);
        let grid: Vec<Vec<f64>> = (0..depths)
            .map(|d| {
                contexts
                    .iter()
                    .map(|&c| {
                        let v: Vec<f64> = group
                            .iter()
                            .filter(|s| s.depth == d && s.context == c)
                            .map(|s| s.score)
                            .collect();
                        v.iter().sum::<f64>() / v.len().max(1) as f64
                    })
                    .collect()
            })
            .collect();
        let depth_names: Vec<String> = (0..depths)
            .map(|d| format!("{:.0}%", 100.0 * d as f64 / (depths.max(2) - 1) as f64))
            .collect();
        let file = format!("{task}_depth_{file}.png");
        heatmap(
            &dir.join(file),
            &format!("{task}, {label}: score by depth and context ({model})"),
            "context (tokens)",
            "needle depth",
            &contexts.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            &depth_names,
            &grid,
        )?;
    }
    Ok(())
}

fn longest_context(a: &FidelityArgs) -> usize {
    let mut longest = 0;
    for &t in &a.tasks {
        let l = match t {
            Task::Ppl => a.ppl_contexts.iter().copied().max().unwrap_or(0),
            Task::Agreement => a.agreement_context + a.agreement_tokens,
            _ => a.contexts.iter().copied().max().unwrap_or(0),
        };
        longest = longest.max(l);
    }
    longest
}

fn progress_units(a: &FidelityArgs, variants: usize) -> usize {
    a.tasks
        .iter()
        .map(|t| match t {
            Task::Ppl => a.ppl_contexts.len(),
            Task::Agreement => 1,
            _ => a.contexts.len(),
        })
        .sum::<usize>()
        * (variants + 1)
}

/// `count` window starts of `len` tokens spread evenly over `total` tokens.
fn spread(total: usize, len: usize, count: usize) -> Vec<usize> {
    let count = count.max(1);
    let room = total.saturating_sub(len);
    (0..count)
        .map(|i| if count > 1 { i * room / (count - 1) } else { 0 })
        .collect()
}

/// Greedy continuations of `prompts`, `batch` at a time, never stopping early.
fn greedy<B: SpotlightBackend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    tokens: usize,
    selection: Option<&Selection<B>>,
    batch: usize,
) -> Result<Vec<Vec<u32>>> {
    let config = GenerateConfig {
        max_tokens: tokens,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        seed: 0,
        stop_ids: Vec::new(),
        fused_decode: false,
        cuda_graphs: spotlight_llama::fast::GraphMode::Off,
        attention_kernels: true,
    };
    let mut out = Vec::with_capacity(prompts.len());
    for part in prompts.chunks(batch.max(1)) {
        let (tokens, _) = generate(model, part, &config, selection, |_, _| Ok(()))?;
        out.extend(tokens);
    }
    Ok(out)
}

/// Length of the longest common subsequence.
fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    for &x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Named lines of (x, y) points.
type Lines = BTreeMap<String, Vec<(f64, f64)>>;

fn write_outputs(
    a: &FidelityArgs,
    rows: &[FidelityRow],
    trials_csv: Option<&str>,
    model: &str,
) -> Result<()> {
    let dir = a.json.with_extension("");
    std::fs::create_dir_all(&dir)
        .map_err(|e| CliError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let write = |path: PathBuf, body: String| {
        std::fs::write(&path, body)
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))
    };
    let mut csv = String::from("method,budget,task,context,score,dense_score,trials\n");
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{:.6},{:.6},{}\n",
            r.method, r.budget, r.task, r.context, r.score, r.dense_score, r.trials
        ));
    }
    write(dir.join("rows.csv"), csv)?;
    let trials_path = dir.join("trials.csv");
    if let Some(new) = trials_csv {
        let trials = match std::fs::read_to_string(&trials_path) {
            // Merged runs keep earlier trials (header once).
            Ok(old) if a.merge => old + new.split_once('\n').map_or("", |(_, rest)| rest),
            _ => new.to_string(),
        };
        write(trials_path.clone(), trials)?;
    }
    if let Ok(trials) = std::fs::read_to_string(&trials_path) {
        depth_heatmaps(a, &parse_trials(&trials), model)?;
    }
    // Per task: score against context, one line per method and budget, dense dashed-free first.
    let mut tasks: BTreeMap<&str, Lines> = BTreeMap::new();
    for r in rows {
        let lines = tasks.entry(&r.task).or_default();
        lines
            .entry("dense".into())
            .or_default()
            .push((r.context as f64, r.dense_score));
        lines
            .entry(format!("{} {}%", r.method, 100.0 * r.budget))
            .or_default()
            .push((r.context as f64, r.score));
    }
    for (task, lines) in &tasks {
        let series: Vec<Series> = lines
            .iter()
            .map(|(name, pts)| {
                let mut points = pts.clone();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                points.dedup_by(|a, b| a.0 == b.0);
                Series {
                    name: name.clone(),
                    points,
                }
            })
            .collect();
        line_chart(
            &dir.join(format!("{task}.png")),
            &format!("{task} vs context ({model})"),
            "context (tokens)",
            if *task == "ppl" {
                "perplexity"
            } else {
                "score"
            },
            &series,
            false,
        )?;
    }
    // Heatmaps: method × budget rows, context columns, per retrieval task.
    for task in ["passkey", "multikey", "vartrack"] {
        let task_rows: Vec<&FidelityRow> = rows.iter().filter(|r| r.task == task).collect();
        if task_rows.is_empty() {
            continue;
        }
        let mut contexts: Vec<usize> = task_rows.iter().map(|r| r.context).collect();
        contexts.sort_unstable();
        contexts.dedup();
        let mut labels = vec!["dense".to_string()];
        let mut grid = vec![contexts
            .iter()
            .map(|&c| {
                task_rows
                    .iter()
                    .find(|r| r.context == c)
                    .map_or(f64::NAN, |r| r.dense_score)
            })
            .collect::<Vec<f64>>()];
        let mut seen: Vec<(String, u64)> = Vec::new();
        for r in &task_rows {
            let key = (r.method.clone(), r.budget.to_bits());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            labels.push(format!("{} {}%", r.method, 100.0 * r.budget));
            grid.push(
                contexts
                    .iter()
                    .map(|&c| {
                        task_rows
                            .iter()
                            .find(|x| {
                                x.context == c && x.method == r.method && x.budget == r.budget
                            })
                            .map_or(f64::NAN, |x| x.score)
                    })
                    .collect(),
            );
        }
        heatmap(
            &dir.join(format!("{task}_heatmap.png")),
            &format!("{task}: score by context ({model})"),
            "context (tokens)",
            "",
            &contexts.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            &labels,
            &grid,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_and_spread() {
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[1, 3, 4, 2]), 3);
        assert_eq!(lcs_len(&[], &[1]), 0);
        assert_eq!(spread(100, 10, 3), vec![0, 45, 90]);
        assert_eq!(spread(10, 10, 1), vec![0]);
    }
}
