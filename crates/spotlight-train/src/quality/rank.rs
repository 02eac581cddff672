//! How each method ranks the visible keys of one query row for one selection unit (a query head,
//! or a KV head's group): the order its top-k is a prefix of.

use super::prepare::Prepared;
use super::Row;

pub(super) fn popcount_score(q: &[u32], k: &[u32]) -> u32 {
    q.iter().zip(k).map(|(a, b)| (!(a ^ b)).count_ones()).sum()
}

/// Indices of the k largest values, ties towards the larger (more recent) index.
pub(super) fn top_k_by<T: PartialOrd + Copy>(values: &[T], k: usize) -> Vec<usize> {
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

/// The ranking of unit `u` (query head u, or KV head u when `group`) at query row `ti`.
/// `by_logit`: keys tied at equal code score are ordered by the unit's true relevance instead of
/// recency (a ceiling, not a decoder). Quest ranks pages, which [`expand_pages`] turns into keys.
pub(super) fn unit_order(
    prep: &Prepared,
    row: &Row,
    ti: usize,
    u: usize,
    group: bool,
    by_logit: bool,
) -> Vec<usize> {
    let (h, g, len) = (row.heads, row.group, row.len);
    match prep {
        Prepared::Oracle => {
            if group {
                row.group_order[u].clone()
            } else {
                row.head_order[u].clone()
            }
        }
        Prepared::Codes { q, k, sets, words } => {
            let w = *words;
            let score = |hh: usize, j: usize| {
                let set = if *sets == h { hh } else { hh / g };
                popcount_score(
                    &q[(ti * h + hh) * w..][..w],
                    &k[(j * sets + set) * w..][..w],
                )
            };
            let scores: Vec<u32> = (0..len)
                .map(|j| {
                    if group {
                        (0..g).map(|i| score(u * g + i, j)).sum()
                    } else {
                        score(u, j)
                    }
                })
                .collect();
            if by_logit {
                let relevance = if group {
                    &row.group_probs[u]
                } else {
                    &row.probs[u]
                };
                let keyed: Vec<(u32, f64)> = scores
                    .iter()
                    .copied()
                    .zip(relevance.iter().copied())
                    .collect();
                top_k_by(&keyed, len)
            } else {
                top_k_by(&scores, len)
            }
        }
        Prepared::Scores { per_row } => {
            // [q_heads][len]; a group sums its heads' scores.
            let at = |head: usize| &per_row[ti][head * len..][..len];
            let unit: Vec<f32> = if group {
                (0..len)
                    .map(|j| (0..g).map(|i| at(u * g + i)[j]).sum())
                    .collect()
            } else {
                at(u).to_vec()
            };
            top_k_by(&unit, len)
        }
        Prepared::Quest { page, lo, hi } => {
            // Per query head (Quest has no group form here): Σ_c max(q_c·min_c, q_c·max_c).
            let (page, d, n) = (*page, row.dim, row.keys);
            let qv = &row.queries[(u * row.rows + ti) * d..][..d];
            let all_pages = n.div_ceil(page);
            let pages = len.div_ceil(page);
            let kvh = u / g;
            let score: Vec<f32> = (0..pages)
                .map(|pg| {
                    let at = (kvh * all_pages + pg) * d;
                    let end = (pg + 1) * page;
                    (0..d)
                        .map(|c| {
                            let (l, hv) = if end <= len {
                                (lo[at + c], hi[at + c])
                            } else {
                                // The query's own, partial page: only keys ≤ its position exist.
                                (pg * page..len)
                                    .map(|j| row.key_values[(kvh * n + j) * d + c])
                                    .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
                                        (l.min(v), h.max(v))
                                    })
                            };
                            (qv[c] * l).max(qv[c] * hv)
                        })
                        .sum()
                })
                .collect();
            top_k_by(&score, pages)
        }
    }
}

/// Quest's selection at budget k: whole pages in rank order until k keys are covered (the page
/// at the cut is kept whole, as Quest does).
pub(super) fn expand_pages(order: &[usize], page: usize, k: usize, len: usize) -> Vec<usize> {
    order[..k.div_ceil(page).min(order.len())]
        .iter()
        .flat_map(|&pg| pg * page..((pg + 1) * page).min(len))
        .collect()
}
