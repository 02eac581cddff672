//! Top keys per row by full sort (value descending, then index ascending), then ascending indices.

/// (top [rows][k] padded with 0, count [rows], threshold [rows]) — see `crate::top_keys::top_keys`
/// (`row_k`: the per-position top count, at least 1; None: `stride` for every row).
pub fn top_keys(
    logits: &[f32],
    n: usize,
    positions: &[u32],
    row_k: Option<&[u32]>,
    stride: usize,
) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let k_max = stride;
    let rows = logits.len() / n;
    let (mut top, mut count, mut threshold) =
        (vec![0u32; rows * k_max], vec![0u32; rows], vec![0f32; rows]);
    for r in 0..rows {
        let visible = (positions[r % positions.len()] as usize + 1).min(n);
        let k = row_k.map_or(k_max, |ks| (ks[r % ks.len()] as usize).clamp(1, k_max));
        let row = &logits[r * n..r * n + visible];
        let mut order: Vec<usize> = (0..visible).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let taken = k.min(visible);
        let mut chosen: Vec<usize> = order[..taken].to_vec();
        chosen.sort_unstable();
        for (i, &j) in chosen.iter().enumerate() {
            top[r * k_max + i] = j as u32;
        }
        count[r] = taken as u32;
        threshold[r] = if visible > k {
            row[order[k - 1]]
        } else {
            -3.4e38
        };
    }
    (top, count, threshold)
}
