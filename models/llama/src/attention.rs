//! Grouped-query attention over the KV cache, without materialising repeated K/V.
//!
//! Dense rows run on the backend's causal attention kernel where it has one (cube backends:
//! `spotlight_kernels::prefill`, flash style — no score matrix, whatever the prompt length;
//! one-token calls use the decode kernel `attend`).
//! The tensor-op path below is the reference, the cpu path, and the one sparse rows take.
//!
//! The G query heads that share a KV head are laid out as extra rows of one matrix
//! ([batch, kv_heads, len·G, d], rows ordered (position, head-in-group)), so one product against
//! that KV head's keys serves the whole group — the layout the Spotlight score kernel also uses.

use burn::tensor::{activation::softmax, backend::Backend, Bool, Int, Tensor, TensorData};
use spotlight_kernels::SequencePlan;

use crate::backend::{causal_attention, LlamaBackend};
use crate::cache::LayerCache;
use crate::layers::Linear;
use crate::rope::Rope;
use crate::selector::{selection_mask, Selection};

/// Largest score block per query chunk (elements); bounds prefill memory independent of length.
const MAX_SCORE_ELEMENTS: usize = 1 << 26;

#[derive(Debug, Clone)]
pub struct Attention<B: Backend> {
    pub q: Linear<B>,
    pub k: Linear<B>,
    pub v: Linear<B>,
    pub o: Linear<B>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// A block of query positions [t0, t1) and the causal mask of its rows against keys 0..n_keys.
#[derive(Debug, Clone)]
pub struct QueryChunk<B: Backend> {
    pub t0: usize,
    pub t1: usize,
    pub n_keys: usize,
    /// [batch, 1, (t1−t0)·G, n_keys], true = masked (key after the row's position).
    pub mask: Tensor<B, 4, Bool>,
}

/// Everything about one forward call that all layers share: computed once, not per layer.
#[derive(Debug, Clone)]
pub struct Step<B: Backend> {
    /// Where sequence b's new rows go in the cache.
    pub starts: Vec<usize>,
    /// How many of the `len` rows of sequence b are real (the rest is right padding).
    pub new_lens: Vec<usize>,
    /// Padded number of new rows.
    pub len: usize,
    /// [batch·len] absolute position of each row (for RoPE).
    pub positions: Tensor<B, 1, Int>,
    pub chunks: Vec<QueryChunk<B>>,
    /// Keep each layer's post-RoPE queries in its cache (see `LayerCache::queries`).
    pub record_queries: bool,
    /// Sparse attention for the layers and rows it applies to (see [`Selection`]); set with
    /// [`Step::with_selection`].
    pub selection: Option<Selection<B>>,
    /// Each sequence's budget for this call (empty without a selection).
    pub plans: Vec<SequencePlan>,
    /// Whether this call's rows attend sparsely: the selection applies to the call and some
    /// sequence's budget leaves keys out (a budget that keeps every key is dense attention).
    pub prunes: bool,
    /// Dense rows attend on the backend's causal kernel where it has one
    /// ([`LlamaBackend::causal_attention`]); false keeps the tensor ops below.
    pub attention_kernels: bool,
}

impl<B: Backend> Step<B> {
    pub fn new(
        starts: Vec<usize>,
        new_lens: Vec<usize>,
        group: usize,
        kv_heads: usize,
        max_pos: usize,
        device: &B::Device,
    ) -> Self {
        let batch = starts.len();
        let len = new_lens.iter().copied().max().unwrap_or(0);
        // Padding rows get a clamped position: their output is discarded, only the index must be valid.
        let positions: Vec<i64> = (0..batch)
            .flat_map(|b| (0..len).map(move |t| (b, t)))
            .map(|(b, t)| (starts[b] + t).min(max_pos - 1) as i64)
            .collect();
        let positions = Tensor::from_data(TensorData::new(positions, [batch * len]), device);
        let total = (0..batch).map(|b| starts[b] + len).max().unwrap_or(0);
        let chunk =
            (MAX_SCORE_ELEMENTS / (batch * kv_heads * group * total.max(1))).clamp(1, len.max(1));
        let mut chunks = Vec::new();
        let mut t0 = 0;
        while t0 < len {
            let t1 = (t0 + chunk).min(len);
            // Keys past the chunk's last position are masked for every row: do not read them.
            let n_keys = (0..batch).map(|b| starts[b] + t1).max().unwrap();
            let rows = (t1 - t0) * group;
            let row_pos: Vec<i64> = (0..batch)
                .flat_map(|b| (0..rows).map(move |r| (b, r)))
                .map(|(b, r)| (starts[b] + t0 + r / group) as i64)
                .collect();
            let row_pos = Tensor::<B, 4, Int>::from_data(
                TensorData::new(row_pos, [batch, 1, rows, 1]),
                device,
            );
            let key_idx =
                Tensor::<B, 1, Int>::arange(0..n_keys as i64, device).reshape([1, 1, 1, n_keys]);
            let mask = key_idx
                .expand([batch, 1, rows, n_keys])
                .greater(row_pos.expand([batch, 1, rows, n_keys]));
            chunks.push(QueryChunk {
                t0,
                t1,
                n_keys,
                mask,
            });
            t0 = t1;
        }
        Self {
            starts,
            new_lens,
            len,
            positions,
            chunks,
            record_queries: false,
            selection: None,
            plans: Vec::new(),
            prunes: false,
            attention_kernels: true,
        }
    }

    /// Attaches `selection` and works out, once for all layers, each sequence's budget.
    pub fn with_selection(mut self, selection: Option<Selection<B>>) -> Self {
        if let Some(sel) = &selection {
            let lens: Vec<usize> = (0..self.starts.len())
                .map(|b| self.starts[b] + self.new_lens[b])
                .collect();
            self.plans = lens.iter().map(|&n| sel.plan(n)).collect();
            self.prunes = sel.applies_to_call(self.len)
                && self.plans.iter().zip(&lens).any(|(p, &n)| p.selected() < n);
        }
        self.selection = selection;
        self
    }
}

impl<B: LlamaBackend> Attention<B> {
    /// x: [batch, len, hidden] → [batch, len, hidden]; writes this step's K/V (and the
    /// selector's key codes) into `cache`. `layer` is this layer's index in the model.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        step: &Step<B>,
        layer: usize,
        cache: &mut LayerCache<B>,
    ) -> Tensor<B, 3> {
        let [batch, len, _] = x.dims();
        let (h, kv, d) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let g = h / kv;
        let q = rope.apply(
            self.q.forward(x.clone()).reshape([batch, len, h, d]),
            step.positions.clone(),
        );
        let k = rope.apply(
            self.k.forward(x.clone()).reshape([batch, len, kv, d]),
            step.positions.clone(),
        );
        let v = self.v.forward(x).reshape([batch, len, kv, d]);
        if step.record_queries {
            cache.queries = Some(q.clone());
        }
        let k = k.swap_dims(1, 2);
        let selection = step
            .selection
            .as_ref()
            .filter(|s| s.applies_to_layer(layer));
        if let Some(sel) = selection {
            // Keys are encoded once, as they enter the cache (prefill included).
            if let Some(codes) = sel.selector.encode_keys(layer, k.clone()) {
                cache.write_codes(codes, &step.starts, &step.new_lens);
            }
        }
        let selection = selection.filter(|_| step.prunes);
        cache.write(k, v.swap_dims(1, 2), &step.starts, &step.new_lens);
        if selection.is_none() && step.attention_kernels {
            if let Some(out) = causal_attention(
                q.clone(),
                &cache.k,
                &cache.v,
                (&step.starts, &step.new_lens),
            ) {
                return self.o.forward(out.reshape([batch, len, h * d]));
            }
        }
        // [batch, len, kv·G, d] → [batch, kv, len·G, d]: head h = kv_head·G + g.
        let q = q
            .reshape([batch, len, kv, g, d])
            .permute([0, 2, 1, 3, 4])
            .reshape([batch, kv, len * g, d]);
        if let Some(sel) = selection.filter(|_| len == 1) {
            // Decode: a selector with its own kernels (score → select → sparse attend) reads only
            // the selected K/V rows.
            if let Some(codes) = &cache.codes {
                if let Some(out) = sel.selector.decode_attend(
                    layer,
                    q.clone(),
                    &cache.k,
                    &cache.v,
                    codes,
                    &step.plans,
                ) {
                    return self.o.forward(out.reshape([batch, 1, h * d]));
                }
            }
        }
        let scale = (d as f64).sqrt().recip();
        let outs: Vec<Tensor<B, 4>> = step
            .chunks
            .iter()
            .map(|c| {
                let rows = (c.t1 - c.t0) * g;
                let q = q.clone().slice([0..batch, 0..kv, c.t0 * g..c.t1 * g, 0..d]);
                let keys = cache.k.clone().slice([0..batch, 0..kv, 0..c.n_keys, 0..d]);
                let values = cache.v.clone().slice([0..batch, 0..kv, 0..c.n_keys, 0..d]);
                let scores = q.clone().matmul(keys.clone().swap_dims(2, 3)) * scale;
                let mut mask = c.mask.clone().expand([batch, kv, rows, c.n_keys]);
                if let Some(sel) = selection {
                    let codes = cache.codes_of(c.n_keys);
                    let s = sel.selector.scores(layer, q, keys, codes);
                    let row_pos: Vec<Vec<usize>> = (0..batch)
                        .map(|b| (0..rows).map(|r| step.starts[b] + c.t0 + r / g).collect())
                        .collect();
                    let levels = sel.selector.score_levels();
                    mask = mask.bool_or(selection_mask(s, &row_pos, &step.plans, levels));
                }
                let probs = softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
                probs.matmul(values)
            })
            .collect();
        let out = if outs.len() == 1 {
            outs.into_iter().next().unwrap()
        } else {
            Tensor::cat(outs, 2)
        };
        let out = out
            .reshape([batch, kv, len, g, d])
            .permute([0, 2, 1, 3, 4])
            .reshape([batch, len, h * d]);
        self.o.forward(out)
    }
}
