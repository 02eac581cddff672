//! Exact softmax(q·Kᵀ/√d)·V for one query row over a list of cached rows, in f64.

use crate::AttendShape;

/// Output `[q_heads][d]` for one query row `q` `[q_heads][d]`. `k`, `v` hold one sequence's cache
/// `[kv_heads][cap][d]` (already converted to f32); `rows[set]` lists the rows each set attends to.
pub fn attend(
    shape: &AttendShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cap: usize,
    rows: &[Vec<u32>],
) -> Vec<f32> {
    let d = shape.head_dim;
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0f64; shape.q_heads * d];
    for head in 0..shape.q_heads {
        let set = head / shape.group();
        let kv = shape.kv_head_of_set(set);
        let q = &q[head * d..][..d];
        let logits: Vec<f64> = rows[set]
            .iter()
            .map(|&t| {
                let krow = &k[(kv * cap + t as usize) * d..][..d];
                q.iter()
                    .zip(krow)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        for (wgt, &t) in weights.iter().zip(&rows[set]) {
            let vrow = &v[(kv * cap + t as usize) * d..][..d];
            for j in 0..d {
                out[head * d + j] += wgt / total * vrow[j] as f64;
            }
        }
    }
    out.into_iter().map(|x| x as f32).collect()
}
