//! RoPE in the HF `rotate_half` layout, for one head vector at one position.

/// Rotates `x` (length d) by the angles whose cos/sin are `cos`/`sin` (length d/2).
pub fn rotate_half(x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let half = x.len() / 2;
    let mut out = vec![0.0; x.len()];
    for j in 0..half {
        let (a, b) = (x[j] as f64, x[j + half] as f64);
        let (c, s) = (cos[j] as f64, sin[j] as f64);
        out[j] = (a * c - b * s) as f32;
        out[j + half] = (b * c + a * s) as f32;
    }
    out
}
