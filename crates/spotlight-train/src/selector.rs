//! The key selectors the model's sparse attention runs (`spotlight_llama::KeySelector`): the
//! trained hash (Spotlight Attention, either GQA layout) and the baselines of the retrieval
//! evaluation — oracle top-k, random linear hashing, Quest — so fidelity is measured with the same
//! methods and the same rules as retrieval quality (`quality.rs`).
//!
//! Hash codes are kept as ±1 floats, so the code similarity popcount(¬(a ⊕ b)) is (bits + a·b)/2,
//! an exact small integer from one matmul.

use std::sync::Arc;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use spotlight_llama::KeySelector;

use crate::hash_file::HashFile;
use crate::hash_mlp::HashMlp;
use crate::quality::{random_rotation, Heads, Method};
use crate::trainer::mix_seed;
use crate::Layout;

/// ±1 signs of x (a positive value is a set bit, as in `pack_signs`).
fn signs<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.greater_elem(0.0).float() * 2.0 - 1.0
}

/// The selector of a retrieval method, with its per-layer state on `device`.
pub fn selector_for<B: Backend>(
    method: &Method,
    heads: Heads,
    layers: usize,
    device: &B::Device,
) -> Arc<dyn KeySelector<B>> {
    match method {
        Method::Oracle => Arc::new(Oracle),
        Method::Quest { page } => Arc::new(Quest { page: *page }),
        Method::Hash { name, file } => Arc::new(Hash::new(name, file, heads, device)),
        Method::Linear { bits, seed } => Arc::new(Linear::new(*bits, *seed, heads, layers, device)),
    }
}

/// Exact q·k: the ceiling every method is compared with.
#[derive(Debug)]
pub struct Oracle;

impl<B: Backend> KeySelector<B> for Oracle {
    fn name(&self) -> String {
        "oracle".into()
    }
    fn scores(
        &self,
        _: usize,
        q: Tensor<B, 4>,
        keys: Tensor<B, 4>,
        _: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        q.matmul(keys.swap_dims(2, 3))
    }
}

/// The learned hash: per layer, query networks (one per q-head) and key networks (one per KV head
/// in the group layout; the query networks themselves in the faithful layout).
#[derive(Debug)]
pub struct Hash<B: Backend> {
    name: String,
    layout: Layout,
    heads: Heads,
    bits: usize,
    query: Vec<HashMlp<B>>,
    key: Vec<HashMlp<B>>,
}

impl<B: Backend> Hash<B> {
    pub fn new(name: &str, file: &HashFile, heads: Heads, device: &B::Device) -> Self {
        Self {
            name: name.into(),
            layout: file.header.layout,
            heads,
            bits: file.header.bits,
            query: file
                .layers
                .iter()
                .map(|l| HashMlp::from_weights(&l.query, device))
                .collect(),
            key: file
                .layers
                .iter()
                .map(|l| HashMlp::from_weights(l.key_weights(), device))
                .collect(),
        }
    }

    fn group(&self) -> usize {
        self.heads.q_heads / self.heads.kv_heads
    }
}

impl<B: Backend> KeySelector<B> for Hash<B> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn encode_keys(&self, layer: usize, k: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        let [batch, kv, len, d] = k.dims();
        let (nets, x) = match self.layout {
            Layout::Group => (kv, k),
            // Faithful: each query head's network codes the keys of its KV head.
            Layout::Faithful => {
                let g = self.group();
                let x = k
                    .reshape([batch, kv, 1, len, d])
                    .expand([batch, kv, g, len, d])
                    .reshape([batch, kv * g, len, d]);
                (kv * g, x)
            }
        };
        let x = x.swap_dims(0, 1).reshape([nets, batch * len, d]);
        let codes = signs(self.key[layer].forward(x));
        Some(codes.reshape([nets, batch, len, self.bits]).swap_dims(0, 1))
    }

    fn scores(
        &self,
        layer: usize,
        q: Tensor<B, 4>,
        _: Tensor<B, 4>,
        codes: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let codes = codes.expect("hash selector keys are encoded at insert");
        let [batch, kv, rows, d] = q.dims();
        let (g, bits) = (self.group(), self.bits);
        let t = rows / g;
        let n = codes.dims()[2];
        // [batch, kv, T, G, d] → [kv·G nets, batch·T, d]: head h = kv_head·G + g.
        let x = q
            .reshape([batch, kv, t, g, d])
            .permute([1, 3, 0, 2, 4])
            .reshape([kv * g, batch * t, d]);
        let qc = signs(self.query[layer].forward(x)).reshape([kv, g, batch, t, bits]);
        match self.layout {
            Layout::Group => {
                // One score per (position, KV head): the query codes of the group summed.
                let qs = qc.sum_dim(1).reshape([kv, batch, t, bits]).swap_dims(0, 1);
                let s = (qs.matmul(codes.swap_dims(2, 3)) + (bits * g) as f64) / 2.0;
                s.reshape([batch, kv, t, 1, n])
                    .expand([batch, kv, t, g, n])
                    .reshape([batch, kv, rows, n])
            }
            Layout::Faithful => {
                let qc = qc.permute([2, 0, 1, 3, 4]); // [batch, kv, G, T, bits]
                let kc = codes.reshape([batch, kv, g, n, bits]);
                let s = (qc.matmul(kc.swap_dims(3, 4)) + bits as f64) / 2.0;
                s.permute([0, 1, 3, 2, 4]).reshape([batch, kv, rows, n])
            }
        }
    }

    fn score_levels(&self) -> Option<usize> {
        Some(match self.layout {
            Layout::Group => self.bits * self.group() + 1,
            Layout::Faithful => self.bits + 1,
        })
    }
}

/// Random linear hashing: sign(x·R) with R `bits` columns of stacked random orthogonal d×d
/// matrices (one R per layer, the same as `quality.rs`), one key code per KV head.
#[derive(Debug)]
pub struct Linear<B: Backend> {
    bits: usize,
    rotations: Vec<Tensor<B, 2>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(bits: usize, seed: u64, heads: Heads, layers: usize, device: &B::Device) -> Self {
        let d = heads.head_dim;
        let rotations = (0..layers)
            .map(|layer| {
                let blocks = bits.div_ceil(d);
                let r = random_rotation(d, blocks, mix_seed(seed, &[layer as u64]));
                Tensor::<B, 2>::from_data(TensorData::new(r, [d, blocks * d]), device)
                    .slice([0..d, 0..bits])
            })
            .collect();
        Self { bits, rotations }
    }

    fn codes(&self, layer: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [a, b, c, d] = x.dims();
        let proj = x
            .reshape([a * b * c, d])
            .matmul(self.rotations[layer].clone());
        signs(proj).reshape([a, b, c, self.bits])
    }
}

impl<B: Backend> KeySelector<B> for Linear<B> {
    fn name(&self) -> String {
        format!("linear-{}", self.bits)
    }
    fn encode_keys(&self, layer: usize, k: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        Some(self.codes(layer, k))
    }
    fn scores(
        &self,
        layer: usize,
        q: Tensor<B, 4>,
        _: Tensor<B, 4>,
        codes: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let codes = codes.expect("linear selector keys are encoded at insert");
        let qc = self.codes(layer, q);
        (qc.matmul(codes.swap_dims(2, 3)) + self.bits as f64) / 2.0
    }
    fn score_levels(&self) -> Option<usize> {
        Some(self.bits + 1)
    }
}

/// Quest: keys in pages of `page`; a page scores Σᵢ max(qᵢ·minᵢ, qᵢ·maxᵢ) over its per-channel
/// bounds, and every key takes its page's score, so the budget is filled page by page (the page at
/// the cut is kept whole: at most page − 1 keys over the budget, as Quest itself does).
#[derive(Debug)]
pub struct Quest {
    pub page: usize,
}

impl<B: Backend> KeySelector<B> for Quest {
    fn name(&self) -> String {
        format!("quest-{}", self.page)
    }
    fn scores(
        &self,
        _: usize,
        q: Tensor<B, 4>,
        keys: Tensor<B, 4>,
        _: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let [batch, kv, rows, d] = q.dims();
        let n = keys.dims()[2];
        let page = self.page;
        let pages = n.div_ceil(page);
        // Pad the last page with copies of the last key: its bounds do not change.
        let pad = pages * page - n;
        let keys = if pad > 0 {
            let last = keys
                .clone()
                .slice([0..batch, 0..kv, n - 1..n, 0..d])
                .expand([batch, kv, pad, d]);
            Tensor::cat(vec![keys, last], 2)
        } else {
            keys
        };
        let paged = keys.reshape([batch, kv, pages, page, d]);
        let lo = paged.clone().min_dim(3).reshape([batch, kv, pages, d]);
        let hi = paged.max_dim(3).reshape([batch, kv, pages, d]);
        // max(q·lo, q·hi) per channel = q·mid + |q|·half_width.
        let mid = (lo.clone() + hi.clone()) / 2.0;
        let half = (hi - lo) / 2.0;
        let s = q.clone().matmul(mid.swap_dims(2, 3)) + q.abs().matmul(half.swap_dims(2, 3));
        s.reshape([batch, kv, rows, pages, 1])
            .expand([batch, kv, rows, pages, page])
            .reshape([batch, kv, rows, pages * page])
            .slice([0..batch, 0..kv, 0..rows, 0..n])
    }
}
