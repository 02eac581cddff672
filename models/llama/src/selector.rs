//! Key selection inside attention: which cached keys each query row attends to — Spotlight
//! Attention and its baselines (METHOD.md "Decoding").
//!
//! A [`KeySelector`] scores every visible key for every query row. [`selection_mask`] then keeps
//! the budget of each row — the first `sink` keys, the last `window` keys up to the row, and the
//! `top_k` best-scoring keys of the middle — and attention runs exact softmax over those only.
//! Keys are encoded once, when they enter the cache (prefill included), and their codes are kept
//! beside K/V. Layers below `dense_layers` (0 and 1) stay dense.
//!
//! This path is written with Burn ops plus the top-keys kernel, so it runs on every backend and
//! serves both teacher-forced evaluation (selection applied on every row, budget from the full
//! length) and decoding. It still reads every key's score row, so it measures fidelity, not speed.

use std::fmt::Debug;
use std::sync::Arc;

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};
use spotlight_kernels::{Budget, SequencePlan};

use crate::backend::{top_keys, LlamaBackend};

/// Chooses keys by score. Rows are laid out as in attention: q is [batch, kv_heads, rows, d]
/// with rows ordered (position, head-in-group).
pub trait KeySelector<B: Backend>: Send + Sync + Debug {
    /// Label in results ("spotlight-group", "linear-128", "quest-16", "oracle").
    fn name(&self) -> String;

    /// Per-key data kept beside K/V, computed once when keys enter the cache:
    /// k [batch, kv_heads, len, d] → [batch, sets, len, width]. `None` (the default): the
    /// selector scores the keys themselves.
    fn encode_keys(&self, _layer: usize, _k: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        None
    }

    /// Scores [batch, kv_heads, rows, n] of q [batch, kv_heads, rows, d] against the first n
    /// cached keys [batch, kv_heads, n, d] and their codes [batch, sets, n, width]. Larger = keep.
    fn scores(
        &self,
        layer: usize,
        q: Tensor<B, 4>,
        keys: Tensor<B, 4>,
        codes: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4>;

    /// `Some(levels)` when scores are integers in 0..levels (hash codes): ties are everywhere at
    /// the cut and are then broken exactly, towards recent keys. `None` (the default):
    /// real-valued scores.
    fn score_levels(&self) -> Option<usize> {
        None
    }

    /// Decode attention done by the selector's own kernels, for one new token per sequence:
    /// q [batch, kv_heads, G, d] against the cache's keys and values [batch, kv_heads, cap, d] and
    /// key codes as stored ([batch, 1, cap, sets·width]), with each sequence's budget → the
    /// attention output [batch, kv_heads, G, d]. `None` (the default): use the mask path.
    fn decode_attend(
        &self,
        _layer: usize,
        _q: Tensor<B, 4>,
        _keys: &Tensor<B, 4>,
        _values: &Tensor<B, 4>,
        _codes: &Tensor<B, 4>,
        _plans: &[SequencePlan],
    ) -> Option<Tensor<B, 4>> {
        None
    }

    /// The hash as the fused decoder runs it ([`crate::fast`]), for selectors that have one
    /// (the trained hash in the group layout on a cube backend). `None` (the default): decoding
    /// with this selector stays on tensor ops.
    fn fused_hash(&self) -> Option<crate::fast::FusedHash> {
        None
    }
}

/// Which rows a selection applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectRows {
    /// Calls with one new token per sequence (decoding); prefill stays dense. The budget comes
    /// from each sequence's current length.
    Decode,
    /// Every row of every call, with the budget of `budget_len` tokens (teacher-forced
    /// evaluation: "budget from full length N").
    EveryRow { budget_len: usize },
}

/// A selector with its budget policy: what the KV cache carries to switch attention to sparse.
#[derive(Debug, Clone)]
pub struct Selection<B: Backend> {
    pub selector: Arc<dyn KeySelector<B>>,
    pub budget: Budget,
    /// Layers 0..dense_layers attend densely (METHOD.md: layers 0 and 1).
    pub dense_layers: usize,
    pub rows: SelectRows,
    /// Decoding: sequences shorter than this attend densely (below the length where retrieval
    /// saves more than it costs). 0 (the default, as in the paper): always select.
    pub dense_below: usize,
}

impl<B: Backend> Selection<B> {
    pub fn new(selector: Arc<dyn KeySelector<B>>, budget: Budget, rows: SelectRows) -> Self {
        Self {
            selector,
            budget,
            dense_layers: 2,
            rows,
            dense_below: 0,
        }
    }

    pub fn applies_to_layer(&self, layer: usize) -> bool {
        layer >= self.dense_layers
    }

    /// Whether this forward call's rows are selected (`len` new rows per sequence).
    pub fn applies_to_call(&self, len: usize) -> bool {
        match self.rows {
            SelectRows::Decode => len == 1,
            SelectRows::EveryRow { .. } => true,
        }
    }

    /// The budget of sequence b when it holds `len` tokens after this call.
    pub fn plan(&self, len: usize) -> SequencePlan {
        match self.rows {
            SelectRows::Decode if len < self.dense_below => SequencePlan::keep_all(len),
            SelectRows::Decode => self.budget.plan(len),
            SelectRows::EveryRow { budget_len } => self.budget.plan(budget_len),
        }
    }

    /// Share of the K/V rows of `len` cached tokens that one decode step reads, over all
    /// `layers` (dense layers read everything).
    pub fn read_share(&self, layers: usize, len: usize) -> f64 {
        if len == 0 || layers == 0 {
            return 1.0;
        }
        let dense = self.dense_layers.min(layers);
        let sparse = self.plan(len).selected() as f64 / len as f64;
        (dense as f64 + (layers - dense) as f64 * sparse) / layers as f64
    }
}

/// Largest integer an f32 holds exactly: tie-broken integer scores must stay below it.
const F32_EXACT: f64 = 16_777_216.0;

/// Mask [batch, kv, rows, n] (true = not selected) of the rows of one query chunk.
///
/// `row_pos[b][r]` is the absolute position of row r of sequence b (it sees keys 0..=pos);
/// `plans[b]` is sequence b's budget. Each row keeps its first `sink` keys, its last `window`
/// visible keys and the `top_k` best of the rest; rows that see no more than that keep all.
pub fn selection_mask<B: LlamaBackend>(
    scores: Tensor<B, 4>,
    row_pos: &[Vec<usize>],
    plans: &[SequencePlan],
    levels: Option<usize>,
) -> Tensor<B, 4, Bool> {
    let [batch, kv, rows, n] = scores.dims();
    let device = scores.device();
    let key_idx = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]);
    let masks: Vec<Tensor<B, 4, Bool>> = (0..batch)
        .map(|b| {
            let plan = plans[b];
            let pos: Vec<i64> = row_pos[b].iter().map(|&p| p as i64).collect();
            let pos_t = Tensor::<B, 1, Int>::from_data(TensorData::new(pos, [rows]), &device);
            let s = scores
                .clone()
                .slice([b..b + 1, 0..kv, 0..rows, 0..n])
                .reshape([kv * rows, n]);
            // Integer scores: s·n + j is unique per row and prefers recent keys at equal score.
            let s = match levels {
                Some(l) if (l * n) as f64 <= F32_EXACT => {
                    s * n as f64 + key_idx.clone().float().expand([kv * rows, n])
                }
                _ => s,
            };
            // Sink and window are forced: they rank above every scored key.
            let keys = key_idx.clone().expand([rows, n]);
            let p = pos_t.clone().reshape([rows, 1]).expand([rows, n]);
            let forced = keys
                .clone()
                .lower_elem(plan.sink as i64)
                .bool_or(keys.greater(p - plan.window as i64));
            let forced = forced
                .unsqueeze_dim::<3>(0)
                .expand([kv, rows, n])
                .reshape([kv * rows, n]);
            let s = s.mask_fill(forced, f32::MAX);
            let k = plan.selected().clamp(1, n);
            let (_, _, threshold) = top_keys(s.clone(), pos_t, k);
            // Rows that see at most k keys get threshold −3.4e38: nothing is masked.
            s.lower(threshold.reshape([kv * rows, 1]).expand([kv * rows, n]))
                .reshape([1, kv, rows, n])
        })
        .collect();
    if masks.len() == 1 {
        masks.into_iter().next().unwrap()
    } else {
        Tensor::cat(masks, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_vec, TestBackend};
    use spotlight_kernels::reference;

    /// Row r of a sequence keeps what the decode rules (`reference::select`) keep for a sequence
    /// of its visible length, with the sink, window and top-k of `plan`.
    fn expected(scores: &[u32], pos: usize, plan: &SequencePlan) -> Vec<u32> {
        let len = pos + 1;
        let sink = plan.sink.min(len);
        let window = plan.window.min(len - sink);
        let row_plan = SequencePlan {
            len,
            sink,
            window,
            top_k: plan.top_k.min(len - sink - window),
        };
        reference::select(&scores[..len], &row_plan)
    }

    #[test]
    fn mask_keeps_sink_window_and_top_k_with_recent_ties() {
        let device = Default::default();
        // Awkward sizes: one key, rows shorter than sink + window, few score levels (many ties).
        for (case, (batch, kv, n, levels, budget)) in [
            (1, 1, 1, 3, (0.02, 20, 4, 64)),
            (2, 2, 37, 4, (0.1, 3, 2, 5)),
            (1, 3, 130, 7, (0.0, 9, 4, 16)),
            (2, 1, 64, 200, (0.05, 1, 0, 0)),
        ]
        .into_iter()
        .enumerate()
        {
            let (fraction, min_tokens, sink, window) = budget;
            let b = Budget {
                fraction,
                min_tokens,
                sink,
                window,
            };
            let rows = n.min(11);
            let raw = random_vec(batch * kv * rows * n, case as u64 + 1, 1.0);
            let ints: Vec<u32> = raw
                .iter()
                .map(|x| ((x + 1.0) / 2.0 * levels as f32).min(levels as f32 - 1.0) as u32)
                .collect();
            let scores = Tensor::<TestBackend, 4>::from_data(
                TensorData::new(
                    ints.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    [batch, kv, rows, n],
                ),
                &device,
            );
            // Rows are the last `rows` positions, one plan per sequence from lengths n and n − 1.
            let row_pos: Vec<Vec<usize>> = (0..batch)
                .map(|s| {
                    (0..rows)
                        .map(|r| (n - rows + r).saturating_sub(s))
                        .collect()
                })
                .collect();
            let plans: Vec<SequencePlan> = (0..batch).map(|s| b.plan(n - s.min(n - 1))).collect();
            let mask = selection_mask(scores, &row_pos, &plans, Some(levels))
                .into_data()
                .to_vec::<bool>()
                .unwrap();
            for s in 0..batch {
                for h in 0..kv {
                    for (r, &pos) in row_pos[s].iter().enumerate() {
                        let at = ((s * kv + h) * rows + r) * n;
                        let kept: Vec<u32> = (0..=pos as u32)
                            .filter(|&j| !mask[at + j as usize])
                            .collect();
                        let want = expected(&ints[at..at + n], pos, &plans[s]);
                        assert_eq!(kept, want, "case {case} seq {s} head {h} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn read_share_counts_dense_layers_whole() {
        #[derive(Debug)]
        struct Nothing;
        impl KeySelector<TestBackend> for Nothing {
            fn name(&self) -> String {
                "nothing".into()
            }
            fn scores(
                &self,
                _: usize,
                q: Tensor<TestBackend, 4>,
                _: Tensor<TestBackend, 4>,
                _: Option<Tensor<TestBackend, 4>>,
            ) -> Tensor<TestBackend, 4> {
                q
            }
        }
        let sel = Selection::new(Arc::new(Nothing), Budget::default(), SelectRows::Decode);
        // 10000 tokens: 4 + 200 + 64 selected in each of 28 sparse layers, all in 2 dense ones.
        let share = sel.read_share(30, 10_000);
        let want = (2.0 + 28.0 * 268.0 / 10_000.0) / 30.0;
        assert!((share - want).abs() < 1e-12, "{share} vs {want}");
        assert_eq!(sel.read_share(30, 50), 1.0);
        // Below dense_below a sequence attends densely; at it, the budget applies again.
        let sel = Selection {
            dense_below: 10_000,
            ..sel
        };
        assert_eq!(sel.plan(9_999), SequencePlan::keep_all(9_999));
        assert_eq!(sel.read_share(30, 9_999), 1.0);
        assert!((sel.read_share(30, 10_000) - want).abs() < 1e-12);
    }
}
