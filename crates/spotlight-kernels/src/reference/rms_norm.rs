//! RMSNorm, in f64.

/// out `[m][k]` = x / sqrt(mean(x²) + eps) ⊙ γ.
pub fn rms_norm(x: &[f32], gamma: &[f32], k: usize, eps: f32) -> Vec<f32> {
    x.chunks(k)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            row.iter()
                .zip(gamma)
                .map(move |(&v, &g)| (v as f64 * inv * g as f64) as f32)
        })
        .collect()
}
