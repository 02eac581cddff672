//! What the loss compares, sampled as the authors do (METHOD.md "Training", steps 1–4).
//!
//! For a sequence of N tokens and each head: up to `queries` query positions t; the true logits
//! A[t, j] = q_t·k_j (no 1/√d) over the causally visible keys j ≤ t; "top" = the first ⌊0.02·N⌋
//! ranks. `pairs` top rank positions and `pairs` other keys are drawn once per step and shared by all
//! heads and queries. The top set of each row comes from the `top_keys` kernel in index order, so a
//! sampled top rank picks a uniformly random top key (the authors' uniform rank, without a sort);
//! the other keys are drawn uniformly from the positions — the same distribution as a uniform rank
//! among the non-top ranks. A pair is valid when both keys are visible (slot < the row's top count,
//! position ≤ t) and the other key is below the k-th value. The targets depend only on the frozen
//! model, except for the hard negatives below.
//!
//! Beyond the authors (each off by default):
//! - `near_fraction` of the other keys are near misses: keys ranked just below the top (ranks
//!   ⌊0.02·N⌋ … 5·⌊0.02·N⌋), drawn per head and query. A uniform other key is almost always far
//!   below the top and easy to rank; retrieval IoU is decided at the cut.
//! - `hard_fraction` of them are hard negatives: keys the hash being trained currently ranks
//!   inside the budget although they are not in the true top.
//! - `row_top`: each row's top count is the decode budget of its own visible length,
//!   max(min(t+1, 20), ⌈0.02·(t+1)⌉), as decoding selects, instead of ⌊0.02·N⌋ for every row;
//!   top ranks and other keys are drawn inside each row's visible keys, so no pair is wasted.
//! - `group`: one target set per KV head, ranked by the group's summed attention probability
//!   softmax(q·k/√d) — what a group-layout selection (one list per KV head) is judged by.

use burn::tensor::{activation::softmax, backend::Backend, Bool, Int, Tensor, TensorData};
use rand::{rngs::StdRng, seq::index::sample, Rng};
use spotlight_kernels::Budget;

use spotlight_llama::backend::top_keys_per_row;
use spotlight_llama::LlamaBackend;

/// Sampling sizes (METHOD.md: up to 1024 queries, 1024 + 1024 rank positions, top 2%).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetConfig {
    pub queries: usize,
    pub pairs: usize,
    pub top_fraction: f64,
    /// Share of the other keys drawn from the near misses (0: the authors' uniform sampling).
    #[serde(default)]
    pub near_fraction: f64,
    /// Share of the other keys drawn from the current code's false positives.
    #[serde(default)]
    pub hard_fraction: f64,
    /// Each row's top count from its own length (the decode budget), pairs inside the row.
    #[serde(default)]
    pub row_top: bool,
    /// Targets per KV head by the group's summed attention probability (group layout).
    #[serde(default)]
    pub group: bool,
}

/// The near misses are the ranks below the top down to this many times the top count.
pub const NEAR_SPAN: f64 = 5.0;

/// Fewest top keys of a row under `row_top` (the decode budget's minimum).
pub const MIN_TOP: usize = 20;

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            queries: 1024,
            pairs: 1024,
            top_fraction: 0.02,
            near_fraction: 0.0,
            hard_fraction: 0.0,
            row_top: false,
            group: false,
        }
    }
}

/// One layer's sampled pairs for one sequence.
#[derive(Debug, Clone)]
pub struct Targets<B: Backend> {
    /// [T] the sampled query positions, ascending.
    pub positions: Tensor<B, 1, Int>,
    /// [q_heads, T, d] the queries at those positions.
    pub queries: Tensor<B, 3>,
    /// [units, T, P] key index of each pair's top key (units: q_heads, or kv_heads for group
    /// targets).
    pub top: Tensor<B, 3, Int>,
    /// [units, T, P] key index of each pair's other key.
    pub other: Tensor<B, 3, Int>,
    /// [units, T, P] 1 where the pair counts, else 0.
    pub valid: Tensor<B, 3>,
}

/// Number of top ranks for a sequence of `n` tokens: ⌊fraction·n⌋, at least 1.
pub fn top_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).floor() as usize).clamp(1, n.max(1))
}

/// The decode budget of a row that sees `visible` keys (no sink or window).
pub fn row_top_count(visible: usize, fraction: f64) -> usize {
    Budget {
        fraction,
        min_tokens: MIN_TOP,
        sink: 0,
        window: 0,
    }
    .plan(visible)
    .top_k
    .max(1)
}

impl TargetConfig {
    /// Other keys per pair kind: (near, hard, uniform).
    fn split(&self) -> (usize, usize, usize) {
        let p = self.pairs;
        let share = |f: f64| ((f.clamp(0.0, 1.0) * p as f64).round() as usize).min(p);
        let near = share(self.near_fraction);
        let hard = share(self.hard_fraction).min(p - near);
        (near, hard, p - near - hard)
    }
}

/// Group relevance [kv, T, N]: the group's summed softmax(q·k/√d) over each row's visible keys.
fn group_relevance<B: Backend>(
    logits: Tensor<B, 3>,
    positions: &Tensor<B, 1, Int>,
    kv: usize,
    d: usize,
) -> Tensor<B, 3> {
    let [h, t, n] = logits.dims();
    let keys = Tensor::<B, 1, Int>::arange(0..n as i64, &logits.device()).reshape([1, 1, n]);
    let future = keys
        .expand([h, t, n])
        .greater(positions.clone().reshape([1, t, 1]).expand([h, t, n]));
    let p = softmax(
        (logits / (d as f64).sqrt()).mask_fill(future, f32::NEG_INFINITY),
        2,
    );
    p.reshape([kv, h / kv, t, n]).sum_dim(1).reshape([kv, t, n])
}

/// A slot in 0..count per pair: ⌊u·count⌋ for shared uniform u ∈ [0, 1) ([1, 1, P]), count
/// [units, T, 1] (≥ 1), capped against rounding up.
fn scaled_slots<B: Backend>(u: &[f32], count: Tensor<B, 3, Int>) -> Tensor<B, 3, Int> {
    let [units, t, _] = count.dims();
    let p = u.len();
    let u = Tensor::<B, 1>::from_data(TensorData::new(u.to_vec(), [p]), &count.device())
        .reshape([1, 1, p])
        .expand([units, t, p]);
    let count = count.expand([units, t, p]);
    let slot = (u * count.clone().float()).floor().int();
    let over: Tensor<B, 3, Bool> = slot.clone().greater_equal(count.clone());
    slot.mask_where(over, count - 1)
}

/// The current code's scores [units, T, N] of the given queries [heads, T, d].
pub type CodeScores<'a, B> = dyn Fn(&Tensor<B, 3>) -> Tensor<B, 3> + 'a;

impl<B: LlamaBackend> Targets<B> {
    /// q: [q_heads, N, d], k: [kv_heads, N, d] of one layer (post-RoPE). `hard_scores`, needed
    /// when `hard_fraction` > 0: the current code's scores [units, T, N] of the sampled queries
    /// (no gradient).
    pub fn sample(
        q: &Tensor<B, 3>,
        k: &Tensor<B, 3>,
        cfg: &TargetConfig,
        rng: &mut StdRng,
        hard_scores: Option<&CodeScores<'_, B>>,
    ) -> Self {
        let [_, n, d] = q.dims();
        let kv = k.dims()[0];
        let device = q.device();
        let t_count = cfg.queries.min(n);
        let mut pos: Vec<usize> = sample(rng, n, t_count).into_vec();
        pos.sort_unstable();
        let (near, hard, uniform) = cfg.split();
        let p = cfg.pairs;
        let top_k = top_count(n, cfg.top_fraction);
        let near_k = top_count(n, (NEAR_SPAN * cfg.top_fraction).min(1.0));
        // Every random draw is made here, in a fixed order, whichever parts are used.
        let draw_slots = |rng: &mut StdRng, count: usize, bound: usize| -> Vec<i64> {
            (0..count)
                .map(|_| rng.random_range(0..bound.max(1)) as i64)
                .collect()
        };
        let draw_unit = |rng: &mut StdRng, count: usize| -> Vec<f32> {
            (0..count).map(|_| rng.random::<f32>()).collect()
        };
        let (top_rank, near_slot, hard_slot, other_key, row_u);
        if cfg.row_top {
            row_u = Some((
                draw_unit(rng, p),
                draw_unit(rng, near),
                draw_unit(rng, hard),
                draw_unit(rng, uniform),
            ));
            (top_rank, near_slot, hard_slot, other_key) = (vec![], vec![], vec![], vec![]);
        } else {
            row_u = None;
            top_rank = draw_slots(rng, p, top_k);
            near_slot = draw_slots(rng, near, near_k);
            hard_slot = draw_slots(rng, hard, top_k);
            other_key = draw_slots(rng, uniform, n);
        }

        let positions = Tensor::<B, 1, Int>::from_data(
            TensorData::new(pos.iter().map(|&t| t as i64).collect::<Vec<_>>(), [t_count]),
            &device,
        );
        let queries = q.clone().select(1, positions.clone());
        // True logits of the sampled queries; query t sees keys 0..=t (the kernel reads no further).
        let logits = crate::bradley_terry::draft_scores(queries.clone(), k.clone());
        let relevance = if cfg.group {
            group_relevance(logits, &positions, kv, d)
        } else {
            logits
        };
        let units = relevance.dims()[0];
        let rows = |x: Tensor<B, 3>| x.reshape([units * t_count, n]);
        // Per-position top counts under row_top (capped at the sequence's count by the kernel).
        let row_counts = |scale: f64| -> Option<Tensor<B, 1, Int>> {
            cfg.row_top.then(|| {
                let ks: Vec<i64> = pos
                    .iter()
                    .map(|&t| {
                        let base = row_top_count(t + 1, cfg.top_fraction) as f64;
                        ((scale * base).ceil() as i64).max(1)
                    })
                    .collect();
                Tensor::from_data(TensorData::new(ks, [t_count]), &device)
            })
        };
        let (top_k, near_k) = if cfg.row_top {
            // The longest row's budget bounds every row's.
            let last = row_top_count(n, cfg.top_fraction);
            (last, ((NEAR_SPAN * last as f64).ceil() as usize).min(n))
        } else {
            (top_k, near_k)
        };
        let (top_idx, count, threshold) = top_keys_per_row(
            rows(relevance.clone()),
            positions.clone(),
            row_counts(1.0),
            top_k,
        );
        let top_idx = top_idx.reshape([units, t_count, top_k]);
        let count = count.reshape([units, t_count, 1]);
        let threshold = threshold.reshape([units, t_count, 1]);
        let t_col = positions.clone().reshape([1, t_count, 1]);

        let shared = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]), &device)
                .reshape([1, 1, len])
                .expand([units, t_count, len])
        };
        // Slots into a per-row key list [units, T, width] with its row counts: the shared slots
        // (validity: slot < count), or under row_top slots scaled into 0..count (always valid).
        let pick = |list: Tensor<B, 3, Int>,
                    counts: Tensor<B, 3, Int>,
                    slots: Vec<i64>,
                    u: Option<&Vec<f32>>|
         -> (Tensor<B, 3, Int>, Tensor<B, 3, Bool>) {
            let slots = match u {
                Some(u) => scaled_slots(u, counts.clone()),
                None => shared(slots),
            };
            let len = slots.dims()[2];
            let ok = slots.clone().lower(counts.expand([units, t_count, len]));
            (list.gather(2, slots), ok)
        };
        let u = row_u.as_ref();
        let (top, top_ok) = pick(top_idx, count.clone(), top_rank, u.map(|u| &u.0));
        let mut parts = Vec::new();
        if near > 0 {
            // Near misses: a slot of the row's top-`near_k` set (index order, like the top set);
            // the validity test below drops the slots that fall inside the top.
            let (near_idx, near_count, _) = top_keys_per_row(
                rows(relevance.clone()),
                positions.clone(),
                row_counts(NEAR_SPAN),
                near_k,
            );
            parts.push(pick(
                near_idx.reshape([units, t_count, near_k]),
                near_count.reshape([units, t_count, 1]),
                near_slot,
                u.map(|u| &u.1),
            ));
        }
        if hard > 0 {
            // Hard negatives: what the current code ranks inside the budget; the validity test
            // keeps the ones outside the true top.
            let scores =
                hard_scores.expect("hard negatives need the current code's scores")(&queries);
            let (hard_idx, hard_count, _) =
                top_keys_per_row(rows(scores), positions.clone(), row_counts(1.0), top_k);
            parts.push(pick(
                hard_idx.reshape([units, t_count, top_k]),
                hard_count.reshape([units, t_count, 1]),
                hard_slot,
                u.map(|u| &u.2),
            ));
        }
        if uniform > 0 {
            let keys = match u {
                // Uniform over the row's visible keys 0..=t.
                Some(u) => scaled_slots(&u.3, (t_col.clone() + 1).expand([units, t_count, 1])),
                None => shared(other_key),
            };
            let ok = keys
                .clone()
                .lower_equal(t_col.clone().expand([units, t_count, uniform]));
            parts.push((keys, ok));
        }
        let (others, oks): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let (other, other_ok) = (Tensor::cat(others, 2), Tensor::cat(oks, 2));
        let other_relevance = relevance.gather(2, other.clone());
        let valid = top_ok
            .bool_and(other_ok)
            .bool_and(other_relevance.lower(threshold.expand([units, t_count, p])))
            .float();
        Self {
            positions,
            queries,
            top,
            other,
            valid,
        }
    }
}
