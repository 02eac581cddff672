//! Retrieval quality (METHOD.md "Evaluation protocol"): for sampled query rows of a layer, how well
//! each method's selection matches the oracle top-k of the exact logits q·k — IoU, recall, and the
//! share of the softmax attention mass it covers — at a budget k = max(min(n, 20), ⌈fraction·n⌉)
//! of the n visible keys (no sink or window: the authors' IoU protocol).
//!
//! Methods: the oracle, a hash file (trained or untrained; faithful or group layout), random linear
//! hashing (random orthogonal projections, sign), and Quest (pages of 16, per-channel min/max bound).
//! Selections use the decode rules: integer scores, ties towards recent tokens.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::{rngs::StdRng, SeedableRng};
use rayon::prelude::*;
use spotlight_kernels::reference::{pack_signs, HashWeights};
use spotlight_kernels::Budget;
use spotlight_llama::LayerQk;

use crate::hash_file::HashFile;
use crate::hash_mlp::{standard_normal, HashMlp};
use crate::trainer::mix_seed;
use crate::Layout;

/// A way of choosing which cached keys a query attends to.
#[derive(Debug, Clone)]
pub enum Method {
    /// Exact top-k of q·k: the ceiling.
    Oracle,
    /// A learned (or untrained) hash; `name` labels it in results.
    Hash { name: String, file: HashFile },
    /// Sign of `bits / d` stacked random orthogonal projections, one code per KV head.
    Linear { bits: usize, seed: u64 },
    /// Quest: pages of `page` tokens scored by Σᵢ max(qᵢ·minᵢ, qᵢ·maxᵢ).
    Quest { page: usize },
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
            Method::Oracle => "oracle".into(),
            Method::Hash { name, .. } => name.clone(),
            Method::Linear { .. } => "linear".into(),
            Method::Quest { .. } => "quest".into(),
        }
    }

    /// "group" when one selection serves a whole KV group, else "per-head".
    pub fn layout(&self) -> &'static str {
        match self {
            Method::Hash { file, .. } => file.header.layout.name(),
            _ => "per-head",
        }
    }

    /// Code length per key code (0 for methods without codes).
    pub fn bits(&self) -> usize {
        match self {
            Method::Oracle | Method::Quest { .. } => 0,
            Method::Hash { file, .. } => file.header.bits,
            Method::Linear { bits, .. } => *bits,
        }
    }

    /// Bytes of retrieval metadata read per cached token per layer (bf16 for keys and Quest's
    /// bounds; the oracle reads every key).
    pub fn bytes_per_token(&self, h: &Heads) -> f64 {
        match self {
            Method::Oracle => (h.kv_heads * h.head_dim * 2) as f64,
            Method::Hash { file, .. } => {
                (file.header.layout.key_nets(h.q_heads, h.kv_heads) * file.header.bits / 8) as f64
            }
            Method::Linear { bits, .. } => (h.kv_heads * bits / 8) as f64,
            Method::Quest { page } => (h.kv_heads * 2 * h.head_dim * 2) as f64 / *page as f64,
        }
    }
}

/// Averages of one (method, layer, budget) over heads and query rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerQuality {
    pub method: String,
    pub layout: String,
    pub bits: usize,
    pub layer: usize,
    pub budget: f64,
    pub iou: f64,
    pub recall: f64,
    pub mass_recall: f64,
    /// Distinct K/V rows read per KV head, relative to the budget k (1 for group selections;
    /// up to G for per-query-head selections).
    pub kv_read: f64,
    pub bytes_per_token: f64,
    /// Number of (head, query) samples averaged.
    pub samples: usize,
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

/// `blocks` random orthogonal d×d matrices side by side, [d][blocks·d] (Gram–Schmidt on Gaussians).
pub(crate) fn random_rotation(d: usize, blocks: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![0f32; d * blocks * d];
    for b in 0..blocks {
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(d);
        while cols.len() < d {
            let mut v: Vec<f64> = (0..d).map(|_| standard_normal(&mut rng)).collect();
            for c in &cols {
                let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
            }
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm > 1e-6 {
                cols.push(v.into_iter().map(|a| a / norm).collect());
            }
        }
        for (j, c) in cols.iter().enumerate() {
            for (i, &x) in c.iter().enumerate() {
                out[i * blocks * d + b * d + j] = x as f32;
            }
        }
    }
    out
}

/// Packed codes `[rows][words]` of sign(x·R), x: [rows, d] on the device, R: [d][cols] host.
fn linear_codes<B: Backend>(x: Tensor<B, 2>, r: &[f32], words: usize) -> Vec<u32> {
    let d = x.dims()[1];
    let cols = r.len() / d;
    let r = Tensor::<B, 2>::from_data(TensorData::new(r.to_vec(), [d, cols]), &x.device());
    let proj = x
        .matmul(r)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    proj.chunks(cols)
        .flat_map(|row| pack_signs(&row[..words * 32]))
        .collect()
}

fn popcount_score(q: &[u32], k: &[u32]) -> u32 {
    q.iter().zip(k).map(|(a, b)| (!(a ^ b)).count_ones()).sum()
}

/// Indices of the k largest values, ties towards the larger (more recent) index.
fn top_k_by<T: PartialOrd + Copy>(values: &[T], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| {
        values[b]
            .partial_cmp(&values[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.cmp(&a))
    });
    idx.truncate(k);
    idx
}

/// Per-layer state of a method: key codes or page bounds, computed once per layer.
enum Prepared {
    Oracle,
    /// q codes [T][q_heads][w], k codes [N][sets][w]; `group` = scores summed over the group.
    Codes {
        q: Vec<u32>,
        k: Vec<u32>,
        sets: usize,
        words: usize,
        group: bool,
    },
    Quest {
        page: usize,
    },
}

/// Evaluates `methods` on one layer at the query `positions` (ascending, < N), for each budget.
/// With `logit_ties`, every code method is also evaluated with the keys tied at equal code score
/// ordered by their true logit instead of by recency (method name + "+logit-ties"): a ceiling on
/// what finer scores (more bits) could add to the same codes, not something a decoder can run.
pub fn evaluate_layer<B: Backend>(
    layer: usize,
    qk: &LayerQk<B>,
    positions: &[usize],
    methods: &[Method],
    budgets: &[f64],
    logit_ties: bool,
) -> Vec<LayerQuality> {
    let [h, n, d] = qk.q.dims();
    let kv = qk.k.dims()[0];
    let g = h / kv;
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
        .map(|m| match m {
            Method::Oracle => Prepared::Oracle,
            Method::Quest { page } => Prepared::Quest { page: *page },
            Method::Hash { file, .. } => {
                let lh = &file.layers[layer];
                let words = file.header.bits / 32;
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
                    words,
                    group: file.header.layout == Layout::Group,
                }
            }
            Method::Linear { bits, seed } => {
                let r = random_rotation(d, bits.div_ceil(d), mix_seed(*seed, &[layer as u64]));
                let words = bits / 32;
                // q rows in [t][h] order, k rows in [n][kv] order.
                let q = linear_codes(q_sel.clone().swap_dims(0, 1).reshape([t * h, d]), &r, words);
                let k = linear_codes(qk.k.clone().swap_dims(0, 1).reshape([n * kv, d]), &r, words);
                Prepared::Codes {
                    q,
                    k,
                    sets: kv,
                    words,
                    group: false,
                }
            }
        })
        .collect();

    // Quest's per-page, per-channel bounds of each KV head: [kv][page][d] min and max.
    let quest_bounds = |page: usize| -> (Vec<f32>, Vec<f32>) {
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
    };
    let bounds: Vec<Option<(Vec<f32>, Vec<f32>)>> = prepared
        .iter()
        .map(|p| match p {
            Prepared::Quest { page } => Some(quest_bounds(*page)),
            _ => None,
        })
        .collect();

    // (method, ties by logit) pairs evaluated: every method, then the code methods again with
    // logit tie-breaking when asked.
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

    // Per query row (parallel): each method ranks the visible keys once per head; every budget
    // takes a prefix of that ranking.
    let per_row: Vec<Vec<[f64; 4]>> = (0..t)
        .into_par_iter()
        .map(|ti| {
            let p = positions[ti];
            let len = p + 1;
            let scale = 1.0 / (d as f64).sqrt();
            let logits: Vec<Vec<f32>> = (0..h)
                .map(|hh| {
                    let q = &qh[(hh * t + ti) * d..][..d];
                    (0..len)
                        .map(|j| {
                            let k = &kh[((hh / g) * n + j) * d..][..d];
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
            let oracle_order: Vec<Vec<usize>> = logits.iter().map(|l| top_k_by(l, len)).collect();
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
                let (prep, bound) = (&prepared[mi], &bounds[mi]);
                // Ranking of keys (or of pages, for Quest) per head.
                let order: Vec<Vec<usize>> = (0..h)
                    .map(|hh| match prep {
                        Prepared::Oracle => oracle_order[hh].clone(),
                        Prepared::Codes {
                            q,
                            k: kc,
                            sets,
                            words,
                            group,
                        } => {
                            let w = *words;
                            let scores: Vec<u32> = (0..len)
                                .map(|j| {
                                    if *group {
                                        let set = hh / g;
                                        (0..g)
                                            .map(|i| {
                                                let qc = &q[(ti * h + set * g + i) * w..][..w];
                                                popcount_score(qc, &kc[(j * sets + set) * w..][..w])
                                            })
                                            .sum()
                                    } else {
                                        let set = if *sets == h { hh } else { hh / g };
                                        let qc = &q[(ti * h + hh) * w..][..w];
                                        popcount_score(qc, &kc[(j * sets + set) * w..][..w])
                                    }
                                })
                                .collect();
                            if by_logit {
                                // Equal scores ordered by the true logit (then recency).
                                let keyed: Vec<(u32, f32)> = scores
                                    .iter()
                                    .copied()
                                    .zip(logits[hh].iter().copied())
                                    .collect();
                                top_k_by(&keyed, len)
                            } else {
                                top_k_by(&scores, len)
                            }
                        }
                        Prepared::Quest { page } => {
                            let (lo, hi) = bound.as_ref().expect("quest bounds");
                            let q = &qh[(hh * t + ti) * d..][..d];
                            let all_pages = n.div_ceil(*page);
                            let pages = len.div_ceil(*page);
                            let score: Vec<f32> = (0..pages)
                                .map(|pg| {
                                    let at = ((hh / g) * all_pages + pg) * d;
                                    let end = (pg + 1) * page;
                                    (0..d)
                                        .map(|c| {
                                            let (l, u) = if end <= len {
                                                (lo[at + c], hi[at + c])
                                            } else {
                                                // The query's own, partial page: only keys ≤ p exist.
                                                (pg * page..len)
                                                    .map(|j| kh[((hh / g) * n + j) * d + c])
                                                    .fold(
                                                        (f32::INFINITY, f32::NEG_INFINITY),
                                                        |(l, u), v| (l.min(v), u.max(v)),
                                                    )
                                            };
                                            (q[c] * l).max(q[c] * u)
                                        })
                                        .sum()
                                })
                                .collect();
                            top_k_by(&score, pages)
                        }
                    })
                    .collect();
                for &k in &budgets_k {
                    let sel: Vec<Vec<usize>> = (0..h)
                        .map(|hh| match prep {
                            Prepared::Quest { page } => order[hh]
                                [..k.div_ceil(*page).min(order[hh].len())]
                                .iter()
                                .flat_map(|&pg| pg * page..((pg + 1) * page).min(len))
                                .collect(),
                            _ => order[hh][..k].to_vec(),
                        })
                        .collect();
                    let (mut iou, mut recall, mut mass) = (0.0, 0.0, 0.0);
                    for hh in 0..h {
                        let mut in_oracle = vec![false; len];
                        for &j in &oracle_order[hh][..k] {
                            in_oracle[j] = true;
                        }
                        let inter = sel[hh].iter().filter(|&&j| in_oracle[j]).count() as f64;
                        let union = (sel[hh].len() + k) as f64 - inter;
                        iou += if union > 0.0 { inter / union } else { 1.0 };
                        recall += inter / k.max(1) as f64;
                        mass += sel[hh].iter().map(|&j| probs[hh][j]).sum::<f64>();
                    }
                    let mut kv_read = 0.0;
                    for kk in 0..kv {
                        let mut rows: Vec<usize> = (0..g)
                            .flat_map(|i| sel[kk * g + i].iter().copied())
                            .collect();
                        rows.sort_unstable();
                        rows.dedup();
                        kv_read += rows.len() as f64 / k.max(1) as f64;
                    }
                    out.push([
                        iou / h as f64,
                        recall / h as f64,
                        mass / h as f64,
                        kv_read / kv as f64,
                    ]);
                }
            }
            out
        })
        .collect();

    let mut results = Vec::new();
    for (vi, &(mi, by_logit)) in variants.iter().enumerate() {
        let m = &methods[mi];
        for (bi, &b) in budgets.iter().enumerate() {
            let idx = vi * budgets.len() + bi;
            let mean = |c: usize| per_row.iter().map(|r| r[idx][c]).sum::<f64>() / t.max(1) as f64;
            results.push(LayerQuality {
                method: if by_logit {
                    format!("{}+logit-ties", m.name())
                } else {
                    m.name()
                },
                layout: m.layout().into(),
                bits: m.bits(),
                layer,
                budget: b,
                iou: mean(0),
                recall: mean(1),
                mass_recall: mean(2),
                kv_read: mean(3),
                bytes_per_token: m.bytes_per_token(&heads),
                samples: t * h,
            });
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::random_rotation;

    /// Each d×d block of the linear-hash projection is orthogonal: RᵀR = I (f32, 1e-5).
    #[test]
    fn random_rotation_blocks_are_orthogonal() {
        for (d, blocks) in [(32, 1), (64, 3)] {
            let r = random_rotation(d, blocks, 7);
            let cols = blocks * d;
            for b in 0..blocks {
                for i in 0..d {
                    for j in 0..d {
                        let dot: f64 = (0..d)
                            .map(|row| {
                                r[row * cols + b * d + i] as f64 * r[row * cols + b * d + j] as f64
                            })
                            .sum();
                        let want = if i == j { 1.0 } else { 0.0 };
                        assert!(
                            (dot - want).abs() < 1e-5,
                            "d {d} block {b} ({i},{j}): {dot}"
                        );
                    }
                }
            }
        }
        // Different seeds give different projections.
        assert_ne!(random_rotation(32, 1, 1), random_rotation(32, 1, 2));
    }
}
