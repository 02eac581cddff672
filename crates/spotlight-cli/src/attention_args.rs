//! Flags that choose the attention of a run: dense, or sparse with a selector (the trained hash —
//! Spotlight Attention — or a baseline) and its budget policy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spotlight_kernels::Budget;
use spotlight_llama::{KeySelector, LlamaConfig, SelectRows, Selection};
use spotlight_train::kernel_selector::SelectorBackend;
use spotlight_train::quality::{Heads, Method};
use spotlight_train::selector::selector_for;
use spotlight_train::HashFile;

use crate::error::{CliError, Result};
use crate::model_args::ModelId;

/// Which keys attention reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttentionKind {
    /// Every cached key.
    Dense,
    /// The trained hash (Spotlight Attention).
    Spotlight,
    /// Random linear hashing (sign of random orthogonal projections), --linear-bits long, one
    /// selection per query head.
    Linear,
    /// The same codes, scores summed over each KV head's group: one selection per KV head (as the
    /// group-layout hash selects).
    LinearGroup,
    /// Quest: pages of --quest-page keys ranked by their per-channel min/max bound.
    Quest,
    /// Exact top-k of q·k per query head: the ceiling, not a practical method (it reads every key).
    Oracle,
    /// Exact top-k of each group's summed attention probability, one selection per KV head: the
    /// ceiling of group selections.
    OracleGroup,
}

impl AttentionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dense => "dense",
            Self::Spotlight => "spotlight",
            Self::Linear => "linear",
            Self::LinearGroup => "linear-group",
            Self::Quest => "quest",
            Self::Oracle => "oracle",
            Self::OracleGroup => "oracle-group",
        }
    }
}

/// `--attention` and `--budget` for commands that run one attention (generate).
#[derive(Debug, Clone, clap::Args)]
pub struct AttentionArgs {
    /// Attention [default: spotlight when a hash file exists for the model, else dense].
    #[arg(long, value_enum)]
    pub attention: Option<AttentionKind>,
    /// Keys chosen by score, as a fraction of the cached tokens.
    #[arg(long, default_value_t = 0.02)]
    pub budget: f64,
    #[command(flatten)]
    pub selector: SelectorArgs,
}

/// How every selector is configured, apart from the budget fraction.
#[derive(Debug, Clone, clap::Args)]
pub struct SelectorArgs {
    /// Hash weights for spotlight attention [default: the shipped file for the model, looked up
    /// in $SPOTLIGHT_HOME/hash/ and then in this repository's models/hash/].
    #[arg(long)]
    pub hash: Option<PathBuf>,
    /// Keys chosen by score: at least this many.
    #[arg(long, default_value_t = 20)]
    pub min_tokens: usize,
    /// First tokens always attended.
    #[arg(long, default_value_t = 4)]
    pub sink: usize,
    /// Most recent tokens always attended.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Code length of --attention linear.
    #[arg(long, default_value_t = 128)]
    pub linear_bits: usize,
    /// Page size of --attention quest.
    #[arg(long, default_value_t = 16)]
    pub quest_page: usize,
    /// Seed of the linear hash's random projections.
    #[arg(long, default_value_t = 0)]
    pub hash_seed: u64,
    /// Decoding: sequences shorter than this many tokens attend densely (exact). Retrieval has a
    /// fixed cost per layer, so below some length dense attention is faster
    /// (docs/sparse-attention.md); 0 selects as soon as the budget leaves keys out, as the paper does.
    /// [default: 32768 for generate, 0 for benchmarks]
    #[arg(long)]
    pub dense_below: Option<usize>,
}

/// The shipped (group-layout) hash of a model, looked up in the cache and then in the
/// repository: the file named after the model if it was made for these weights (or records no
/// weights), else any hash file there that records these weights — so a renamed model file
/// still finds its hash, and another model of the same name does not take it.
pub fn shipped_hash(id: &ModelId) -> Option<PathBuf> {
    let dirs = [
        crate::assets::home().join("hash"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/hash"),
    ];
    let made_for = |p: &Path| HashFile::read_header(p).ok().map(|h| h.model_fingerprint);
    let named = format!("{}.group.safetensors", id.name);
    for dir in &dirs {
        let p = dir.join(&named);
        if let Some(fp) = made_for(&p) {
            if fp.is_none() || id.fingerprint.is_none() || fp == id.fingerprint {
                return Some(p);
            }
        }
    }
    let want = id.fingerprint.as_ref()?;
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".group.safetensors"))
            .collect();
        files.sort();
        if let Some(p) = files
            .into_iter()
            .find(|p| made_for(p).flatten().as_ref() == Some(want))
        {
            return Some(p);
        }
    }
    None
}

impl AttentionArgs {
    pub fn budget(&self) -> Result<Budget> {
        self.selector.budget(self.budget)
    }

    /// The attention kind after the default is resolved, and the hash file it needs.
    pub fn resolve(&self, model_id: &ModelId) -> Result<(AttentionKind, Option<PathBuf>)> {
        let hash = self.selector.hash_path(model_id);
        let kind = self.attention.unwrap_or(if hash.is_some() {
            AttentionKind::Spotlight
        } else {
            AttentionKind::Dense
        });
        self.selector.check(kind, model_id)?;
        self.budget()?;
        Ok((kind, hash.filter(|_| kind == AttentionKind::Spotlight)))
    }
}

impl SelectorArgs {
    /// The budget policy with `fraction` of the cached tokens chosen by score.
    pub fn budget(&self, fraction: f64) -> Result<Budget> {
        let b = Budget {
            fraction,
            min_tokens: self.min_tokens,
            sink: self.sink,
            window: self.window,
        };
        b.validate()
            .map_err(|_| CliError::Usage(format!("budget {fraction}: must be in [0, 1]")))?;
        Ok(b)
    }

    /// --hash, else the shipped file of the model if there is one.
    pub fn hash_path(&self, model_id: &ModelId) -> Option<PathBuf> {
        self.hash.clone().or_else(|| shipped_hash(model_id))
    }

    /// Checks that `kind` can run with these flags.
    pub fn check(&self, kind: AttentionKind, model_id: &ModelId) -> Result<()> {
        if kind == AttentionKind::Spotlight && self.hash_path(model_id).is_none() {
            return Err(CliError::Usage(format!(
                "spotlight attention: no hash weights for {model_id}; train them with `spotlight train` and pass --hash FILE"
            )));
        }
        if matches!(kind, AttentionKind::Linear | AttentionKind::LinearGroup)
            && (self.linear_bits == 0 || !self.linear_bits.is_multiple_of(32))
        {
            return Err(CliError::Usage(format!(
                "--linear-bits {}: must be a positive multiple of 32",
                self.linear_bits
            )));
        }
        if kind == AttentionKind::Quest && self.quest_page == 0 {
            return Err(CliError::Usage("--quest-page must be at least 1".into()));
        }
        Ok(())
    }

    /// The retrieval method of `kind` (None for dense); `hash` (loaded before the model, so a
    /// damaged file is reported first) is checked against the model.
    pub fn method(
        &self,
        kind: AttentionKind,
        hash: Option<HashFile>,
        model_id: &ModelId,
        config: &LlamaConfig,
    ) -> Result<Option<Method>> {
        Ok(match kind {
            AttentionKind::Dense => None,
            AttentionKind::Oracle => Some(Method::Oracle { group: false }),
            AttentionKind::OracleGroup => Some(Method::Oracle { group: true }),
            AttentionKind::Quest => Some(Method::Quest {
                page: self.quest_page,
            }),
            AttentionKind::Linear | AttentionKind::LinearGroup => Some(Method::Linear {
                bits: self.linear_bits,
                seed: self.hash_seed,
                group: kind == AttentionKind::LinearGroup,
            }),
            AttentionKind::Spotlight => {
                let file = hash.expect("resolved with a hash file");
                file.check_model(&model_id.name, model_id.fingerprint.as_deref(), config)?;
                Some(Method::Hash {
                    name: format!("spotlight-{}", file.header.layout.name()),
                    file,
                })
            }
        })
    }
}

/// The model's heads as the selectors need them.
pub fn heads(c: &LlamaConfig) -> Heads {
    Heads {
        q_heads: c.num_attention_heads,
        kv_heads: c.num_key_value_heads,
        head_dim: c.head_dim,
    }
}

/// A selection for `method` on `device`. Decoding with the trained hash runs the decode kernels on
/// cube backends (CUDA, wgpu); everything else, and every-row evaluation, runs the mask path.
pub fn selection<B: SelectorBackend>(
    method: &Method,
    budget: Budget,
    rows: SelectRows,
    config: &LlamaConfig,
    device: &B::Device,
) -> Result<Selection<B>> {
    let selector: Arc<dyn KeySelector<B>> = match (method, rows) {
        (Method::Hash { name, file }, SelectRows::Decode) => {
            B::decode_hash_selector(name, file, heads(config), device)
                .map_err(|e| CliError::Usage(format!("spotlight attention on this device: {e}")))?
        }
        _ => selector_for(method, heads(config), config.num_hidden_layers, device),
    };
    Ok(Selection::new(selector, budget, rows))
}
