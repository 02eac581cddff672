//! The key selectors the model's sparse attention runs (`spotlight_llama::KeySelector`): the
//! trained hash (Spotlight Attention, either GQA layout) and the baselines of the retrieval
//! evaluation — oracle top-k, random linear hashing, Quest — so fidelity is measured with the same
//! methods and the same rules as retrieval quality (`quality.rs`).
//!
//! Hash codes are kept as ±1 floats, so the code similarity popcount(¬(a ⊕ b)) is (bits + a·b)/2,
//! an exact small integer from one matmul.

use std::sync::Arc;

use burn::backend::NdArray;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use spotlight_llama::KeySelector;

use crate::hash_file::HashFile;
use crate::hash_mlp::HashMlp;
use crate::linear_hash::{head_projection, layer_rotations};
use crate::quality::{Heads, Method};
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
        Method::Oracle { group: false } => Arc::new(Oracle),
        Method::Oracle { group: true } => Arc::new(OracleGroup { heads }),
        Method::Quest { page } => Arc::new(Quest { page: *page }),
        Method::Hash { name, file } => Arc::new(Hash::new(name, file, heads, device)),
        Method::Linear { bits, seed, group } => {
            Arc::new(Linear::new(*bits, *seed, *group, heads, layers, device))
        }
        Method::Selector { selector, .. } => Arc::new(OnCpu(selector.clone())),
    }
}

/// A selector written for the CPU backend, used on any backend: its inputs are copied to the
/// host and its outputs back (correct everywhere, fast nowhere but the CPU).
#[derive(Debug)]
pub struct OnCpu(pub Arc<dyn KeySelector<NdArray>>);

fn to_cpu<B: Backend>(x: Tensor<B, 4>) -> Tensor<NdArray, 4> {
    let data = x.into_data().convert::<f32>();
    Tensor::from_data(data, &Default::default())
}

fn from_cpu<B: Backend>(x: Tensor<NdArray, 4>, device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(x.into_data(), device)
}

impl<B: Backend> KeySelector<B> for OnCpu {
    fn name(&self) -> String {
        self.0.name()
    }
    fn encode_keys(&self, layer: usize, k: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        let device = k.device();
        let codes = self.0.encode_keys(layer, to_cpu(k))?;
        Some(from_cpu(codes, &device))
    }
    fn scores(
        &self,
        layer: usize,
        q: Tensor<B, 4>,
        keys: Tensor<B, 4>,
        codes: Option<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        let device = q.device();
        let scores = self
            .0
            .scores(layer, to_cpu(q), to_cpu(keys), codes.map(to_cpu));
        from_cpu(scores, &device)
    }
    fn score_levels(&self) -> Option<usize> {
        self.0.score_levels()
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

/// The group oracle: one ranking per KV head by the group's summed attention probability
/// softmax(q·k/√d), the ceiling of every one-list-per-KV-head selector. Every row of a group gets
/// the group's score, so the group selects one shared set.
#[derive(Debug)]
pub struct OracleGroup {
    heads: Heads,
}

impl<B: Backend> KeySelector<B> for OracleGroup {
    fn name(&self) -> String {
        "oracle-group".into()
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
        let g = self.heads.q_heads / self.heads.kv_heads;
        let t = rows / g;
        // The call's T positions are the last T of the n keys (row ti at n − T + ti): the
        // softmax runs over each row's visible keys only, so the group's sum weighs its heads
        // as attention does.
        let device = q.device();
        let key = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        let row = Tensor::<B, 1, Int>::arange((n - t) as i64..n as i64, &device).reshape([t, 1]);
        let future = key
            .expand([t, n])
            .greater(row.expand([t, n]))
            .reshape([1, 1, t, 1, n])
            .expand([batch, kv, t, g, n]);
        let logits = (q.matmul(keys.swap_dims(2, 3)) / (d as f64).sqrt())
            .reshape([batch, kv, t, g, n])
            .mask_fill(future, f32::NEG_INFINITY);
        burn::tensor::activation::softmax(logits, 4)
            .sum_dim(3)
            .expand([batch, kv, t, g, n])
            .reshape([batch, kv, rows, n])
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

/// Random linear hashing: sign(x·P) with P the `bits` columns of stacked random orthogonal d×d
/// matrices of the query's or key's KV head (one set per KV head and layer, the same as
/// `quality.rs` and the trained hash's rotation start), one key code per KV head. With `group`
/// the group's scores are summed and every row of a group gets them (one shared selection).
#[derive(Debug)]
pub struct Linear<B: Backend> {
    bits: usize,
    group: Option<usize>,
    /// Per layer [kv, d, bits].
    projections: Vec<Tensor<B, 3>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(
        bits: usize,
        seed: u64,
        group: bool,
        heads: Heads,
        layers: usize,
        device: &B::Device,
    ) -> Self {
        let (d, kv) = (heads.head_dim, heads.kv_heads);
        let projections = (0..layers)
            .map(|layer| {
                let r = layer_rotations(d, kv, bits, seed, layer);
                let p: Vec<f32> = (0..kv)
                    .flat_map(|s| head_projection(&r, d, bits, s))
                    .collect();
                Tensor::<B, 3>::from_data(TensorData::new(p, [kv, d, bits]), device)
            })
            .collect();
        Self {
            bits,
            group: group.then_some(heads.q_heads / kv),
            projections,
        }
    }

    /// ±1 codes of x [batch, kv, rows, d] (rows of KV head s projected by its P_s).
    fn codes(&self, layer: usize, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, kv, rows, d] = x.dims();
        let p = self.projections[layer]
            .clone()
            .reshape([1, kv, d, self.bits])
            .expand([batch, kv, d, self.bits]);
        signs(x.matmul(p)).reshape([batch, kv, rows, self.bits])
    }
}

impl<B: Backend> KeySelector<B> for Linear<B> {
    fn name(&self) -> String {
        match self.group {
            Some(_) => format!("linear-group-{}", self.bits),
            None => format!("linear-{}", self.bits),
        }
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
        let s = (qc.matmul(codes.swap_dims(2, 3)) + self.bits as f64) / 2.0;
        match self.group {
            None => s,
            Some(g) => {
                // Rows of a KV head are [T][G]: the group's scores summed, shared by its rows.
                let [batch, kv, rows, n] = s.dims();
                s.reshape([batch, kv, rows / g, g, n])
                    .sum_dim(3)
                    .expand([batch, kv, rows / g, g, n])
                    .reshape([batch, kv, rows, n])
            }
        }
    }
    fn score_levels(&self) -> Option<usize> {
        Some(self.bits * self.group.unwrap_or(1) + 1)
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
