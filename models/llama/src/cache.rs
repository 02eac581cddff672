//! Preallocated per-layer KV cache, GQA-native: [batch, kv_heads, capacity, head_dim].
//!
//! Allocated once; new rows are written in place with `slice_assign` (no per-token concatenation).
//! Running past the capacity is an error, never a silent shift (positions would change meaning).

use burn::tensor::{backend::Backend, Tensor};

use crate::error::LlamaError;
use crate::selector::Selection;

/// K and V of one layer.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    /// [batch, kv_heads, capacity, head_dim]
    pub k: Tensor<B, 4>,
    /// [batch, kv_heads, capacity, head_dim]
    pub v: Tensor<B, 4>,
    /// The last forward call's post-RoPE queries [batch, len, q_heads, head_dim], kept only when
    /// the cache records queries (hash training reads q and k of every layer from here).
    pub queries: Option<Tensor<B, 4>>,
    /// Key codes of the selector, allocated at the first write, stored [batch, 1, capacity,
    /// sets·width] — position-major, the layout the score kernel reads (`[batch][cap][sets][words]`).
    pub codes: Option<Tensor<B, 4>>,
    /// Code sets per token (the `sets` of [`Self::codes`]).
    pub code_sets: usize,
}

/// The whole model's cache plus each sequence's current length.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerCache<B>>,
    /// Tokens already cached per sequence (they may differ: ragged batches).
    pub lens: Vec<usize>,
    capacity: usize,
    /// Keep each layer's queries of the last call in `LayerCache::queries`.
    pub record_queries: bool,
    /// Sparse attention: the selector, its budget and which rows it applies to. `None` = dense.
    pub selection: Option<Selection<B>>,
    /// Dense attention on the backend's causal kernel where it has one (default); false keeps
    /// Burn tensor ops (the reference, and A/B comparisons).
    pub attention_kernels: bool,
}

impl<B: Backend> KvCache<B> {
    pub fn new(
        n_layers: usize,
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        let layer = || LayerCache {
            k: Tensor::zeros([batch, kv_heads, capacity, head_dim], device),
            v: Tensor::zeros([batch, kv_heads, capacity, head_dim], device),
            queries: None,
            codes: None,
            code_sets: 0,
        };
        Self {
            layers: (0..n_layers).map(|_| layer()).collect(),
            lens: vec![0; batch],
            capacity,
            record_queries: false,
            selection: None,
            attention_kernels: true,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    /// Checks that `new_tokens[b]` more tokens fit for every sequence b.
    pub fn check_room(&self, new_tokens: &[usize]) -> Result<(), LlamaError> {
        if new_tokens.len() != self.lens.len() {
            return Err(LlamaError::BatchSize {
                given: new_tokens.len(),
                cache: self.lens.len(),
            });
        }
        for (&len, &n) in self.lens.iter().zip(new_tokens) {
            if len + n > self.capacity {
                return Err(LlamaError::ContextOverflow {
                    tokens: len,
                    new: n,
                    context: self.capacity,
                });
            }
        }
        Ok(())
    }
}

impl<B: Backend> LayerCache<B> {
    /// Writes rows 0..new_lens[b] of `k`, `v` ([batch, kv_heads, len, d]) at `starts[b]`.
    pub fn write(
        &mut self,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        starts: &[usize],
        new_lens: &[usize],
    ) {
        write_rows(&mut self.k, k, starts, new_lens);
        write_rows(&mut self.v, v, starts, new_lens);
    }

    /// Writes key codes ([batch, sets, len, width]) like [`Self::write`] writes keys.
    pub fn write_codes(&mut self, codes: Tensor<B, 4>, starts: &[usize], new_lens: &[usize]) {
        let [batch, sets, len, width] = codes.dims();
        let cap = self.k.dims()[2];
        self.code_sets = sets;
        let target = self
            .codes
            .get_or_insert_with(|| Tensor::zeros([batch, 1, cap, sets * width], &codes.device()));
        let rows = codes.swap_dims(1, 2).reshape([batch, 1, len, sets * width]);
        write_rows(target, rows, starts, new_lens);
    }

    /// The codes of the first `n` positions as [batch, sets, n, width].
    pub fn codes_of(&self, n: usize) -> Option<Tensor<B, 4>> {
        self.codes.as_ref().map(|t| {
            let [batch, _, _, all] = t.dims();
            let sets = self.code_sets;
            t.clone()
                .slice([0..batch, 0..1, 0..n, 0..all])
                .reshape([batch, n, sets, all / sets])
                .swap_dims(1, 2)
        })
    }
}

/// Writes rows 0..new_lens[b] of `x` ([batch, heads, len, d]) into `target` at `starts[b]`.
fn write_rows<B: Backend>(
    target: &mut Tensor<B, 4>,
    x: Tensor<B, 4>,
    starts: &[usize],
    new_lens: &[usize],
) {
    let [batch, heads, len, d] = x.dims();
    let uniform = starts.iter().all(|&s| s == starts[0]) && new_lens.iter().all(|&n| n == len);
    if uniform {
        // The common case (batch 1, or equal lengths): one write for the whole batch.
        let s = starts[0];
        target.inplace(|c| c.slice_assign([0..batch, 0..heads, s..s + len, 0..d], x));
        return;
    }
    for b in 0..batch {
        let (s, n) = (starts[b], new_lens[b]);
        if n == 0 {
            continue;
        }
        let xb = x.clone().slice([b..b + 1, 0..heads, 0..n, 0..d]);
        target.inplace(|c| c.slice_assign([b..b + 1, 0..heads, s..s + n, 0..d], xb));
    }
}
