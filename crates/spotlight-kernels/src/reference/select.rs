//! Group scores and the sink + top-k + window selection, by full sort.

use crate::{CodeShape, SequencePlan};

/// Score of every token of one sequence for one set: Σ over the set's query heads of
/// popcount(!(q ^ k)). `q_codes` `[q_heads][words]`, `k_codes` `[len][sets][words]`.
pub fn scores(
    shape: &CodeShape,
    q_codes: &[u32],
    k_codes: &[u32],
    len: usize,
    set: usize,
) -> Vec<u32> {
    let (w, g) = (shape.words(), shape.group());
    (0..len)
        .map(|t| {
            let k = &k_codes[(t * shape.sets + set) * w..][..w];
            (0..g)
                .map(|i| {
                    let q = &q_codes[(set * g + i) * w..][..w];
                    q.iter()
                        .zip(k)
                        .map(|(q, k)| (!(q ^ k)).count_ones())
                        .sum::<u32>()
                })
                .sum()
        })
        .collect()
}

/// Selected token indices of one (sequence, set), ascending: the sink, the `top_k` best-scoring
/// middle tokens (ties broken towards recent tokens), the window.
pub fn select(scores: &[u32], plan: &SequencePlan) -> Vec<u32> {
    let mut middle: Vec<usize> = (plan.sink..plan.middle_end()).collect();
    middle.sort_by(|&a, &b| scores[b].cmp(&scores[a]).then(b.cmp(&a)));
    let mut chosen: Vec<usize> = middle[..plan.top_k].to_vec();
    chosen.sort_unstable();
    (0..plan.sink)
        .chain(chosen)
        .chain(plan.middle_end()..plan.len)
        .map(|t| t as u32)
        .collect()
}
