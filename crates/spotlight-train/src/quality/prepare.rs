//! Per-layer state of each retrieval method, computed once per layer: packed codes of the sampled
//! queries and of every key (hash and linear methods), or the page bounds of Quest.

use burn::backend::NdArray;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use spotlight_kernels::reference::{pack_signs, HashWeights};
use spotlight_llama::selector::KeySelector;
use spotlight_llama::LayerQk;

use super::Method;
use crate::hash_mlp::HashMlp;
use crate::linear_hash::{head_projection, layer_rotations};
use crate::Layout;

/// What a method needs at every query row of one layer.
pub(super) enum Prepared {
    Oracle,
    /// Query codes [T][q_heads][words]; key codes [N][sets][words] (sets = q_heads: a key code
    /// per query head; kv_heads: one per KV head).
    Codes {
        q: Vec<u32>,
        k: Vec<u32>,
        sets: usize,
        words: usize,
    },
    /// Per-page, per-channel bounds of each KV head: [kv][page][d] min and max.
    Quest {
        page: usize,
        lo: Vec<f32>,
        hi: Vec<f32>,
    },
    /// A selector's scores at each sampled query: `per_row[ti]` is [q_heads][len] over the
    /// row's visible keys (query head s·g + i is row i of KV head s).
    Scores {
        per_row: Vec<Vec<f32>>,
    },
}

/// `selector`'s scores on `layer` at each of `positions`, as decoding calls it: the G query
/// heads of each KV head at one position against the keys up to that position (the last of
/// them), on the CPU. `qh` [q_heads][T][d] holds the sampled queries, `kh` [kv][N][d] every key.
fn selector_scores(
    selector: &dyn KeySelector<NdArray>,
    layer: usize,
    (qh, kh): (&[f32], &[f32]),
    positions: &[usize],
    [h, kv, n, d]: [usize; 4],
) -> Vec<Vec<f32>> {
    let device = Default::default();
    let (g, t) = (h / kv, positions.len());
    let keys = Tensor::<NdArray, 1>::from_data(TensorData::new(kh.to_vec(), [kv * n * d]), &device)
        .reshape([1, kv, n, d]);
    let codes = selector.encode_keys(layer, keys.clone());
    positions
        .iter()
        .enumerate()
        .map(|(ti, &p)| {
            let q: Vec<f32> = (0..h)
                .flat_map(|head| qh[(head * t + ti) * d..][..d].iter().copied())
                .collect();
            let q = Tensor::<NdArray, 1>::from_data(TensorData::new(q, [h * d]), &device)
                .reshape([1, kv, g, d]);
            let visible = keys.clone().narrow(2, 0, p + 1);
            let codes = codes.as_ref().map(|c| c.clone().narrow(2, 0, p + 1));
            selector
                .scores(layer, q, visible, codes)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 scores")
        })
        .collect()
}

/// Packed sign codes `[rows][nets][words]` of x: [nets, rows, d] under `w`, on the device.
fn hash_codes<B: Backend>(w: &HashWeights, x: Tensor<B, 3>) -> Vec<u32> {
    let d = x.dims()[2];
    let h2 = HashMlp::<B>::from_weights(w, &x.device()).forward(x);
    let h2 = h2
        .swap_dims(0, 1)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    h2.chunks(d).flat_map(pack_signs).collect()
}

/// Packed codes `[rows][sets][words]` of sign(x·P_s) for x: [sets, rows, d] on the device and
/// P: [sets][d][bits] on the host.
fn linear_codes<B: Backend>(x: Tensor<B, 3>, p: &[f32], bits: usize) -> Vec<u32> {
    let [sets, _, d] = x.dims();
    let p = Tensor::<B, 3>::from_data(TensorData::new(p.to_vec(), [sets, d, bits]), &x.device());
    let proj = x
        .matmul(p)
        .swap_dims(0, 1)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    proj.chunks(bits).flat_map(pack_signs).collect()
}

impl Prepared {
    /// The state of `method` on `layer`, for the sampled queries `q_sel` [q_heads, T, d] at
    /// `positions`.
    pub(super) fn new<B: Backend>(
        method: &Method,
        layer: usize,
        qk: &LayerQk<B>,
        (q_sel, positions): (&Tensor<B, 3>, &[usize]),
        kh: &[f32],
    ) -> Self {
        let [h, t, d] = q_sel.dims();
        let [kv, n, _] = qk.k.dims();
        let g = h / kv;
        match method {
            Method::Oracle { .. } => Prepared::Oracle,
            Method::Selector { selector, .. } => {
                let qh = q_sel.clone().into_data().convert::<f32>().to_vec::<f32>();
                let qh = qh.expect("f32 queries");
                let shape = [h, kv, n, d];
                Prepared::Scores {
                    per_row: selector_scores(selector.as_ref(), layer, (&qh, kh), positions, shape),
                }
            }
            Method::Quest { page } => {
                let (lo, hi) = quest_bounds(kh, kv, n, d, *page);
                Prepared::Quest {
                    page: *page,
                    lo,
                    hi,
                }
            }
            Method::Hash { file, .. } => {
                let lh = &file.layers[layer];
                let q = hash_codes(&lh.query, q_sel.clone()); // [t][h][w]
                let (k, sets) = match file.header.layout {
                    Layout::Group => (hash_codes(lh.key_weights(), qk.k.clone()), kv),
                    Layout::Faithful => {
                        let rep =
                            qk.k.clone()
                                .reshape([kv, 1, n, d])
                                .expand([kv, g, n, d])
                                .reshape([h, n, d]);
                        (hash_codes(&lh.query, rep), h)
                    }
                };
                Prepared::Codes {
                    q,
                    k,
                    sets,
                    words: file.header.bits / 32,
                }
            }
            Method::Linear { bits, seed, .. } => {
                let r = layer_rotations(d, kv, *bits, *seed, layer);
                let p: Vec<f32> = (0..kv)
                    .flat_map(|s| head_projection(&r, d, *bits, s))
                    .collect();
                // A query is projected by its KV head's P: the group's rows side by side.
                let qc = linear_codes(q_sel.clone().reshape([kv, g * t, d]), &p, *bits);
                // [g·t][kv][w] (row i·t + ti of set s is head s·g + i) → [t][h][w].
                let w = bits / 32;
                let mut q = vec![0u32; t * h * w];
                for s in 0..kv {
                    for i in 0..g {
                        for ti in 0..t {
                            let from = ((i * t + ti) * kv + s) * w;
                            let to = (ti * h + s * g + i) * w;
                            q[to..to + w].copy_from_slice(&qc[from..from + w]);
                        }
                    }
                }
                Prepared::Codes {
                    q,
                    k: linear_codes(qk.k.clone(), &p, *bits),
                    sets: kv,
                    words: w,
                }
            }
        }
    }
}

/// Quest's per-page, per-channel bounds of each KV head: [kv][page][d] min and max.
fn quest_bounds(kh: &[f32], kv: usize, n: usize, d: usize, page: usize) -> (Vec<f32>, Vec<f32>) {
    let pages = n.div_ceil(page);
    let (mut lo, mut hi) = (
        vec![f32::INFINITY; kv * pages * d],
        vec![f32::NEG_INFINITY; kv * pages * d],
    );
    for kk in 0..kv {
        for j in 0..n {
            for c in 0..d {
                let v = kh[(kk * n + j) * d + c];
                let i = (kk * pages + j / page) * d + c;
                lo[i] = lo[i].min(v);
                hi[i] = hi[i].max(v);
            }
        }
    }
    (lo, hi)
}
