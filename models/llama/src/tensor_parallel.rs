//! How a checkpoint splits over `tp` ranks for tensor-parallel decoding (Megatron-style), as pure
//! functions on host tensors (HF names, row-major, projections [out, in]):
//! - attention by KV head: each rank holds a contiguous range of KV heads with their whole query
//!   groups, so q/k/v are split by output rows and o by input columns; the key codes, scoring,
//!   selection and sparse attention of Spotlight stay local to the rank (no cross-rank traffic);
//! - the MLP by intermediate features: gate/up by output rows, down by input columns;
//! - embeddings and the LM head by vocabulary rows (a rank's logits are its vocabulary slice);
//! - norms replicated.
//!
//! The o and down products of the ranks are partial sums: an all-reduce adds them. Uneven splits
//! (SmolLM2's 3 KV heads over 2 ranks) give the first ranks one head more.

use std::ops::Range;

use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::load::HostTensor;

/// Which axis of a tensor is split, and over which ranges per rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// Every rank holds all of it.
    Replicated,
    /// Rows (the first axis) in `ranges[rank]`.
    Rows(Vec<Range<usize>>),
    /// Columns (the last axis of a 2-D tensor) in `ranges[rank]`.
    Columns(Vec<Range<usize>>),
}

/// The split of one model over `tp` ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpPlan {
    pub tp: usize,
    /// KV heads of each rank.
    pub kv_heads: Vec<Range<usize>>,
    /// Intermediate MLP features of each rank.
    pub ffn: Vec<Range<usize>>,
    /// Vocabulary rows of each rank.
    pub vocab: Vec<Range<usize>>,
    group: usize,
    head_dim: usize,
}

/// `n` items in `parts` contiguous ranges, the first `n % parts` one longer.
pub fn even_ranges(n: usize, parts: usize) -> Vec<Range<usize>> {
    let (base, extra) = (n / parts, n % parts);
    let mut start = 0;
    (0..parts)
        .map(|r| {
            let len = base + usize::from(r < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

impl TpPlan {
    pub fn new(config: &LlamaConfig, tp: usize) -> Result<Self, LlamaError> {
        let kv = config.num_key_value_heads;
        if tp == 0 || tp > kv {
            return Err(LlamaError::TensorParallel(format!(
                "--tp {tp}: between 1 and the model's {kv} KV heads (attention splits by whole KV heads)"
            )));
        }
        Ok(Self {
            tp,
            kv_heads: even_ranges(kv, tp),
            ffn: even_ranges(config.intermediate_size, tp),
            vocab: even_ranges(config.vocab_size, tp),
            group: config.num_attention_heads / kv.max(1),
            head_dim: config.head_dim,
        })
    }

    /// How the tensor `name` (an HF name) splits.
    pub fn split_of(&self, name: &str) -> Split {
        let scale = |ranges: &[Range<usize>], by: usize| -> Vec<Range<usize>> {
            ranges.iter().map(|r| r.start * by..r.end * by).collect()
        };
        let q_rows = scale(&self.kv_heads, self.group * self.head_dim);
        let kv_rows = scale(&self.kv_heads, self.head_dim);
        let field = name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split_once('.'))
            .map(|(_, f)| f);
        match (name, field) {
            ("model.embed_tokens.weight" | "lm_head.weight", _) => Split::Rows(self.vocab.clone()),
            (_, Some("self_attn.q_proj.weight" | "self_attn.q_proj.bias")) => Split::Rows(q_rows),
            (
                _,
                Some(
                    "self_attn.k_proj.weight"
                    | "self_attn.k_proj.bias"
                    | "self_attn.v_proj.weight"
                    | "self_attn.v_proj.bias",
                ),
            ) => Split::Rows(kv_rows),
            (_, Some("self_attn.o_proj.weight")) => Split::Columns(q_rows),
            (_, Some("mlp.gate_proj.weight" | "mlp.up_proj.weight")) => {
                Split::Rows(self.ffn.clone())
            }
            (_, Some("mlp.down_proj.weight")) => Split::Columns(self.ffn.clone()),
            _ => Split::Replicated,
        }
    }

    /// Rank `rank`'s part of the tensor `name`.
    pub fn shard(
        &self,
        name: &str,
        (shape, data): &HostTensor,
        rank: usize,
    ) -> Result<HostTensor, LlamaError> {
        let bad = |why: String| LlamaError::TensorParallel(format!("{name} {shape:?}: {why}"));
        match self.split_of(name) {
            Split::Replicated => Ok((shape.clone(), data.clone())),
            Split::Rows(ranges) => {
                let r = &ranges[rank];
                let rows = *shape.first().ok_or_else(|| bad("no rows".into()))?;
                if r.end > rows {
                    return Err(bad(format!("rows {r:?} beyond {rows}")));
                }
                let row_len = data.len() / rows.max(1);
                let mut s = shape.clone();
                s[0] = r.len();
                Ok((s, data[r.start * row_len..r.end * row_len].to_vec()))
            }
            Split::Columns(ranges) => {
                let r = &ranges[rank];
                let [rows, cols] = shape[..] else {
                    return Err(bad("a column split needs a 2-D tensor".into()));
                };
                if r.end > cols {
                    return Err(bad(format!("columns {r:?} beyond {cols}")));
                }
                let mut out = Vec::with_capacity(rows * r.len());
                for row in data.chunks(cols) {
                    out.extend_from_slice(&row[r.clone()]);
                }
                Ok((vec![rows, r.len()], out))
            }
        }
    }

    /// The whole tensor `name` back from every rank's part (the inverse of [`Self::shard`]).
    pub fn unshard(&self, name: &str, parts: &[HostTensor]) -> Result<HostTensor, LlamaError> {
        if parts.len() != self.tp {
            return Err(LlamaError::TensorParallel(format!(
                "{name}: {} parts for {} ranks",
                parts.len(),
                self.tp
            )));
        }
        match self.split_of(name) {
            Split::Replicated => Ok(parts[0].clone()),
            Split::Rows(_) => {
                let mut shape = parts[0].0.clone();
                shape[0] = parts.iter().map(|p| p.0[0]).sum();
                Ok((
                    shape,
                    parts.iter().flat_map(|p| p.1.iter().copied()).collect(),
                ))
            }
            Split::Columns(_) => {
                let rows = parts[0].0[0];
                let cols: usize = parts.iter().map(|p| p.0[1]).sum();
                let mut out = Vec::with_capacity(rows * cols);
                for row in 0..rows {
                    for (s, d) in parts {
                        out.extend_from_slice(&d[row * s[1]..(row + 1) * s[1]]);
                    }
                }
                Ok((vec![rows, cols], out))
            }
        }
    }
}
