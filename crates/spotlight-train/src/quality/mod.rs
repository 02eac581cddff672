//! Retrieval quality (METHOD.md "Evaluation protocol"): for sampled query rows of a layer, how well
//! each method's selection matches the oracle top-k — IoU, recall, and the share of the softmax
//! attention mass it covers — at a budget k = max(min(n, 20), ⌈fraction·n⌉) of the n visible keys
//! (no sink or window: the authors' IoU protocol).
//!
//! Every method selects either per query head (one top-k per head: the authors' code, the per-head
//! oracle, the per-head linear hash, Quest) or per KV head (one top-k shared by the G query heads
//! of a group, each selected K/V row read once: the group-layout hash, `linear-group`,
//! `oracle-group`). IoU and recall compare like with like: per-head selections with each head's
//! exact top-k of q·k, group selections with the group oracle — the top-k by the group's summed
//! attention probability, the best any one-list-per-KV-head selector can do. Attention mass is
//! per query head for both, so it compares across the two.
//! Selections use the decode rules: integer scores, ties towards recent tokens.

mod prepare;
mod rank;

use std::sync::Arc;

use burn::backend::NdArray;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rayon::prelude::*;
use spotlight_kernels::Budget;
use spotlight_llama::selector::KeySelector;
use spotlight_llama::LayerQk;

use crate::hash_file::HashFile;
use crate::Layout;
use prepare::Prepared;
use rank::{expand_pages, top_k_by, unit_order};

/// A way of choosing which cached keys a query attends to.
// A run holds a handful of these, never arrays of them: boxing the hash file would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Method {
    /// Exact top-k: of q·k per query head, or (`group`) of the group's summed attention
    /// probability per KV head — the ceilings of the two selection granularities.
    Oracle { group: bool },
    /// A learned (or untrained) hash; `name` labels it in results.
    Hash { name: String, file: HashFile },
    /// sign(x·R) with R `bits / d` stacked random orthogonal projections per KV head, shared by
    /// the KV head's keys and its group's queries ([`crate::linear_hash`]); one code per KV head.
    /// Per query head, or (`group`) scores summed over the group, one top-k per KV head.
    Linear { bits: usize, seed: u64, group: bool },
    /// Quest: pages of `page` tokens scored by Σᵢ max(qᵢ·minᵢ, qᵢ·maxᵢ), per query head.
    Quest { page: usize },
    /// Any [`KeySelector`] (the trait decoding uses), scored on the CPU: its scores rank the
    /// keys per query head, or (`group`) summed over each KV head's group. `bytes_per_token`:
    /// what it reads per cached token, for the results' bytes column.
    Selector {
        selector: Arc<dyn KeySelector<NdArray>>,
        group: bool,
        bytes_per_token: f64,
    },
}

/// Model dimensions the methods need.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Oracle { group: false } => "oracle".into(),
            Method::Oracle { group: true } => "oracle-group".into(),
            Method::Hash { name, .. } => name.clone(),
            Method::Linear { group: false, .. } => "linear".into(),
            Method::Linear { group: true, .. } => "linear-group".into(),
            Method::Quest { .. } => "quest".into(),
            Method::Selector { selector, .. } => selector.name(),
        }
    }

    /// One selection per KV head (shared by its group) rather than per query head.
    pub fn group(&self) -> bool {
        match self {
            Method::Oracle { group } | Method::Linear { group, .. } => *group,
            Method::Hash { file, .. } => file.header.layout == Layout::Group,
            Method::Quest { .. } => false,
            Method::Selector { group, .. } => *group,
        }
    }

    /// "group" or "per-head": the selection granularity.
    pub fn selection(&self) -> &'static str {
        if self.group() {
            "group"
        } else {
            "per-head"
        }
    }

    /// The hash layout ("faithful" / "group"), or the selection granularity for other methods.
    pub fn layout(&self) -> &'static str {
        match self {
            Method::Hash { file, .. } => file.header.layout.name(),
            _ => self.selection(),
        }
    }

    /// Code length per key code (0 for methods without codes).
    pub fn bits(&self) -> usize {
        match self {
            Method::Oracle { .. } | Method::Quest { .. } | Method::Selector { .. } => 0,
            Method::Hash { file, .. } => file.header.bits,
            Method::Linear { bits, .. } => *bits,
        }
    }

    /// Bytes of retrieval metadata read per cached token per layer (bf16 for keys and Quest's
    /// bounds; the oracles read every key).
    pub fn bytes_per_token(&self, h: &Heads) -> f64 {
        match self {
            Method::Oracle { .. } => (h.kv_heads * h.head_dim * 2) as f64,
            Method::Hash { file, .. } => {
                (file.header.layout.key_nets(h.q_heads, h.kv_heads) * file.header.bits / 8) as f64
            }
            Method::Linear { bits, .. } => (h.kv_heads * bits / 8) as f64,
            Method::Quest { page } => (h.kv_heads * 2 * h.head_dim * 2) as f64 / *page as f64,
            Method::Selector {
                bytes_per_token, ..
            } => *bytes_per_token,
        }
    }
}

/// The metrics of the query rows whose position lies in [from, to).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PositionQuality {
    pub from: usize,
    /// None: to the end of the window.
    pub to: Option<usize>,
    pub iou: f64,
    pub recall: f64,
    pub mass_recall: f64,
    /// Query rows in the bin.
    pub rows: usize,
}

/// Averages of one (method, layer, budget) over selection units and query rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerQuality {
    pub method: String,
    pub layout: String,
    /// "per-head" or "group" (see [`Method::selection`]).
    pub selection: String,
    pub bits: usize,
    pub layer: usize,
    pub budget: f64,
    /// Against the oracle of the same granularity.
    pub iou: f64,
    pub recall: f64,
    /// Per query head.
    pub mass_recall: f64,
    /// Distinct K/V rows read per KV head, relative to the budget k (1 for group selections;
    /// up to G for per-query-head selections).
    pub kv_read: f64,
    pub bytes_per_token: f64,
    /// Number of (head, query) samples averaged.
    pub samples: usize,
    /// The same metrics by query position (bins split at the evaluation's boundaries).
    pub by_position: Vec<PositionQuality>,
}

/// What every method needs of one query row: the true probabilities and oracle orders.
pub(crate) struct Row<'a> {
    pub heads: usize,
    pub group: usize,
    /// Visible keys (position + 1).
    pub len: usize,
    pub dim: usize,
    /// Keys in the layer (all positions).
    pub keys: usize,
    /// Sampled query rows (the stride of `queries`).
    pub rows: usize,
    /// [q_heads][rows][d] the sampled queries; [kv][keys][d] the keys.
    pub queries: &'a [f32],
    pub key_values: &'a [f32],
    /// Softmax(q·k/√d) per query head over the visible keys, and its sum over each group.
    pub probs: Vec<Vec<f64>>,
    pub group_probs: Vec<Vec<f64>>,
    /// Oracle rankings: per query head by q·k, per KV head by the group's summed probability.
    pub head_order: Vec<Vec<usize>>,
    pub group_order: Vec<Vec<usize>>,
}

/// Evaluates `methods` on one layer at the query `positions` (ascending, < N), for each budget,
/// with the metrics also split by position at `split` (ascending boundaries; empty: no split).
/// With `logit_ties`, every code method is also evaluated with the keys tied at equal code score
/// ordered by their true relevance instead of by recency (method name + "+logit-ties"): a
/// ceiling on what finer scores (more bits) could add to the same codes, not something a decoder
/// can run.
pub fn evaluate_layer<B: Backend>(
    layer: usize,
    qk: &LayerQk<B>,
    positions: &[usize],
    methods: &[Method],
    budgets: &[f64],
    logit_ties: bool,
    split: &[usize],
) -> Vec<LayerQuality> {
    let [h, n, d] = qk.q.dims();
    let kv = qk.k.dims()[0];
    let heads = Heads {
        q_heads: h,
        kv_heads: kv,
        head_dim: d,
    };
    let t = positions.len();
    let device = qk.q.device();
    let pos_t = Tensor::<B, 1, Int>::from_data(
        TensorData::new(positions.iter().map(|&p| p as i64).collect::<Vec<_>>(), [t]),
        &device,
    );
    let q_sel = qk.q.clone().select(1, pos_t); // [h, t, d]
    let host = |x: Tensor<B, 3>| x.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let qh = host(q_sel.clone()); // [h][t][d]
    let kh = host(qk.k.clone()); // [kv][n][d]
    let prepared: Vec<Prepared> = methods
        .iter()
        .map(|m| Prepared::new(m, layer, qk, (&q_sel, positions), &kh))
        .collect();

    // (method, ties by relevance) pairs evaluated: every method, then the code methods again
    // with relevance tie-breaking when asked.
    let variants: Vec<(usize, bool)> = (0..methods.len())
        .map(|mi| (mi, false))
        .chain(
            prepared
                .iter()
                .enumerate()
                .filter(|(_, p)| logit_ties && matches!(p, Prepared::Codes { .. }))
                .map(|(mi, _)| (mi, true)),
        )
        .collect();

    // Per query row (parallel): each method ranks the visible keys once per unit; every budget
    // takes a prefix of that ranking.
    let per_row: Vec<Vec<[f64; 4]>> = (0..t)
        .into_par_iter()
        .map(|ti| {
            let row = Row::new(&qh, &kh, positions[ti], ti, t, [h, kv, n, d]);
            let len = row.len;
            let budgets_k: Vec<usize> = budgets
                .iter()
                .map(|&b| {
                    Budget {
                        fraction: b,
                        min_tokens: 20,
                        sink: 0,
                        window: 0,
                    }
                    .plan(len)
                    .top_k
                })
                .collect();
            let mut out = Vec::with_capacity(variants.len() * budgets.len());
            for &(mi, by_logit) in &variants {
                let (prep, group) = (&prepared[mi], methods[mi].group());
                let units = if group { kv } else { h };
                let orders: Vec<Vec<usize>> = (0..units)
                    .map(|u| unit_order(prep, &row, ti, u, group, by_logit))
                    .collect();
                for &k in &budgets_k {
                    out.push(row.metrics(prep, &orders, group, k));
                }
            }
            out
        })
        .collect();

    let bins = position_bins(split, positions);
    let mut results = Vec::new();
    for (vi, &(mi, by_logit)) in variants.iter().enumerate() {
        let m = &methods[mi];
        for (bi, &b) in budgets.iter().enumerate() {
            let idx = vi * budgets.len() + bi;
            let mean = |rows: &[usize], c: usize| {
                rows.iter().map(|&r| per_row[r][idx][c]).sum::<f64>() / rows.len().max(1) as f64
            };
            let all: Vec<usize> = (0..t).collect();
            results.push(LayerQuality {
                method: if by_logit {
                    format!("{}+logit-ties", m.name())
                } else {
                    m.name()
                },
                layout: m.layout().into(),
                selection: m.selection().into(),
                bits: m.bits(),
                layer,
                budget: b,
                iou: mean(&all, 0),
                recall: mean(&all, 1),
                mass_recall: mean(&all, 2),
                kv_read: mean(&all, 3),
                bytes_per_token: m.bytes_per_token(&heads),
                samples: t * h,
                by_position: bins
                    .iter()
                    .map(|(from, to, rows)| PositionQuality {
                        from: *from,
                        to: *to,
                        iou: mean(rows, 0),
                        recall: mean(rows, 1),
                        mass_recall: mean(rows, 2),
                        rows: rows.len(),
                    })
                    .collect(),
            });
        }
    }
    results
}

/// The bins [0, s₀), [s₀, s₁), …, [s_last, end) and the indices of the rows in each.
fn position_bins(split: &[usize], positions: &[usize]) -> Vec<(usize, Option<usize>, Vec<usize>)> {
    if split.is_empty() {
        return Vec::new();
    }
    let mut edges = vec![0];
    edges.extend_from_slice(split);
    (0..edges.len())
        .map(|b| {
            let (from, to) = (edges[b], edges.get(b + 1).copied());
            let rows = (0..positions.len())
                .filter(|&r| positions[r] >= from && to.is_none_or(|e| positions[r] < e))
                .collect();
            (from, to, rows)
        })
        .collect()
}

impl<'a> Row<'a> {
    /// Probabilities and oracle orders of the row at `position` (sampled row `ti` of `rows`).
    fn new(
        queries: &'a [f32],
        key_values: &'a [f32],
        position: usize,
        ti: usize,
        rows: usize,
        [h, kv, n, d]: [usize; 4],
    ) -> Self {
        let (g, len) = (h / kv, position + 1);
        let scale = 1.0 / (d as f64).sqrt();
        let logits: Vec<Vec<f32>> = (0..h)
            .map(|hh| {
                let q = &queries[(hh * rows + ti) * d..][..d];
                (0..len)
                    .map(|j| {
                        let k = &key_values[((hh / g) * n + j) * d..][..d];
                        q.iter().zip(k).map(|(a, b)| a * b).sum()
                    })
                    .collect()
            })
            .collect();
        let probs: Vec<Vec<f64>> = logits
            .iter()
            .map(|l| {
                let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let e: Vec<f64> = l.iter().map(|&x| ((x as f64 - m) * scale).exp()).collect();
                let s: f64 = e.iter().sum();
                e.into_iter().map(|x| x / s).collect()
            })
            .collect();
        let group_probs: Vec<Vec<f64>> = (0..kv)
            .map(|kk| {
                (0..len)
                    .map(|j| (0..g).map(|i| probs[kk * g + i][j]).sum())
                    .collect()
            })
            .collect();
        Self {
            heads: h,
            group: g,
            len,
            dim: d,
            keys: n,
            rows,
            queries,
            key_values,
            head_order: logits.iter().map(|l| top_k_by(l, len)).collect(),
            group_order: group_probs.iter().map(|p| top_k_by(p, len)).collect(),
            probs,
            group_probs,
        }
    }

    /// [IoU, recall, mass, K/V rows read] at budget k of a method's unit rankings.
    fn metrics(&self, prep: &Prepared, orders: &[Vec<usize>], group: bool, k: usize) -> [f64; 4] {
        let (h, g, len) = (self.heads, self.group, self.len);
        let kv = h / g;
        let sel: Vec<Vec<usize>> = orders
            .iter()
            .map(|o| match prep {
                Prepared::Quest { page, .. } => expand_pages(o, *page, k, len),
                _ => o[..k].to_vec(),
            })
            .collect();
        let (mut iou, mut recall) = (0.0, 0.0);
        for (u, s) in sel.iter().enumerate() {
            let oracle = if group {
                &self.group_order[u][..k]
            } else {
                &self.head_order[u][..k]
            };
            let mut in_oracle = vec![false; len];
            for &j in oracle {
                in_oracle[j] = true;
            }
            let inter = s.iter().filter(|&&j| in_oracle[j]).count() as f64;
            let union = (s.len() + k) as f64 - inter;
            iou += if union > 0.0 { inter / union } else { 1.0 };
            recall += inter / k.max(1) as f64;
        }
        let mass: f64 = (0..h)
            .map(|hh| {
                let s = &sel[if group { hh / g } else { hh }];
                s.iter().map(|&j| self.probs[hh][j]).sum::<f64>()
            })
            .sum();
        let kv_read: f64 = (0..kv)
            .map(|kk| {
                let units = if group {
                    kk..kk + 1
                } else {
                    kk * g..(kk + 1) * g
                };
                let mut rows: Vec<usize> = units.flat_map(|u| sel[u].iter().copied()).collect();
                rows.sort_unstable();
                rows.dedup();
                rows.len() as f64 / k.max(1) as f64
            })
            .sum();
        let units = sel.len() as f64;
        [
            iou / units,
            recall / units,
            mass / h as f64,
            kv_read / kv as f64,
        ]
    }
}
