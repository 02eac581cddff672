//! y = x · Wᵀ, in f64.

/// y `[m][n]` for x `[m][k]` and W `[n][k]`.
pub fn linear(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    (0..m)
        .flat_map(|r| {
            (0..n).map(move |c| {
                (0..k)
                    .map(|i| x[r * k + i] as f64 * w[c * k + i] as f64)
                    .sum::<f64>() as f32
            })
        })
        .collect()
}
