//! What the loss compares, sampled as the authors do (METHOD.md "Training", steps 1–4).
//!
//! For a sequence of N tokens and each head: up to `queries` query positions t; the true logits
//! A[t, j] = q_t·k_j (no 1/√d) over the causally visible keys j ≤ t; "top" = the first ⌊0.02·N⌋
//! ranks. `pairs` top rank positions and `pairs` other keys are drawn once per step and shared by all
//! heads and queries. The top set of each row comes from the `top_keys` kernel in index order, so a
//! sampled top rank picks a uniformly random top key (the authors' uniform rank, without a sort);
//! the other keys are drawn uniformly from the positions — the same distribution as a uniform rank
//! among the non-top ranks. A pair is valid when both keys are visible (slot < the row's top count,
//! position ≤ t) and the other key is below the k-th value. The targets depend only on the frozen
//! model, never on the hash being trained.
//!
//! Beyond the authors: `near_fraction` of the other keys may instead be drawn from the near misses —
//! the keys ranked just below the top (ranks ⌊0.02·N⌋ … ⌊0.1·N⌋), drawn per head and query. A
//! uniform other key is almost always far below the top and easy to rank; retrieval IoU is decided
//! at the cut, between the top and its near misses. 0 is the authors' sampling.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{rngs::StdRng, seq::index::sample, Rng};

use spotlight_llama::backend::top_keys;
use spotlight_llama::LlamaBackend;

/// Sampling sizes (METHOD.md: up to 1024 queries, 1024 + 1024 rank positions, top 2%).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetConfig {
    pub queries: usize,
    pub pairs: usize,
    pub top_fraction: f64,
    /// Share of the other keys drawn from the near misses (0: the authors' uniform sampling).
    #[serde(default)]
    pub near_fraction: f64,
}

/// The near misses are the ranks below the top down to this many times the top count.
pub const NEAR_SPAN: f64 = 5.0;

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            queries: 1024,
            pairs: 1024,
            top_fraction: 0.02,
            near_fraction: 0.0,
        }
    }
}

/// One layer's sampled pairs for one sequence.
#[derive(Debug, Clone)]
pub struct Targets<B: burn::tensor::backend::Backend> {
    /// [T] the sampled query positions, ascending.
    pub positions: Tensor<B, 1, Int>,
    /// [q_heads, T, d] the queries at those positions.
    pub queries: Tensor<B, 3>,
    /// [q_heads, T, P] key index of each pair's top key.
    pub top: Tensor<B, 3, Int>,
    /// [q_heads, T, P] key index of each pair's other key.
    pub other: Tensor<B, 3, Int>,
    /// [q_heads, T, P] 1 where the pair counts, else 0.
    pub valid: Tensor<B, 3>,
}

/// Number of top ranks for a sequence of `n` tokens: ⌊fraction·n⌋, at least 1.
pub fn top_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).floor() as usize).clamp(1, n.max(1))
}

impl<B: LlamaBackend> Targets<B> {
    /// q: [q_heads, N, d], k: [kv_heads, N, d] of one layer (post-RoPE).
    pub fn sample(
        q: &Tensor<B, 3>,
        k: &Tensor<B, 3>,
        cfg: &TargetConfig,
        rng: &mut StdRng,
    ) -> Self {
        let [h, n, _] = q.dims();
        let device = q.device();
        let t_count = cfg.queries.min(n);
        let mut pos: Vec<usize> = sample(rng, n, t_count).into_vec();
        pos.sort_unstable();
        let top_k = top_count(n, cfg.top_fraction);
        let p = cfg.pairs;
        let top_rank: Vec<i64> = (0..p).map(|_| rng.random_range(0..top_k) as i64).collect();
        // The first `near` pairs take a near-miss other key, the rest a uniform one.
        let near = ((cfg.near_fraction.clamp(0.0, 1.0) * p as f64).round() as usize).min(p);
        let near_k = top_count(n, (NEAR_SPAN * cfg.top_fraction).min(1.0));
        let near_slot: Vec<i64> = (0..near)
            .map(|_| rng.random_range(0..near_k) as i64)
            .collect();
        let other_key: Vec<i64> = (near..p).map(|_| rng.random_range(0..n) as i64).collect();

        let positions = Tensor::<B, 1, Int>::from_data(
            TensorData::new(pos.iter().map(|&t| t as i64).collect::<Vec<_>>(), [t_count]),
            &device,
        );
        let queries = q.clone().select(1, positions.clone());
        // True logits of the sampled queries; query t sees keys 0..=t (the kernel reads no further).
        let logits = crate::bradley_terry::draft_scores(queries.clone(), k.clone());
        let (top_idx, count, threshold) = top_keys(
            logits.clone().reshape([h * t_count, n]),
            positions.clone(),
            top_k,
        );
        let top_idx = top_idx.reshape([h, t_count, top_k]);
        let count = count.reshape([h, t_count, 1]);
        let threshold = threshold.reshape([h, t_count, 1]);
        let t_col = positions.clone().reshape([1, t_count, 1]);

        let shared = |v: Vec<i64>| {
            let len = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [len]), &device)
                .reshape([1, 1, len])
                .expand([h, t_count, len])
        };
        let ranks = shared(top_rank);
        // Each part of the other keys with what must be ≤ t for it to be visible and real: a
        // uniform key's index; a near miss's slot (slot ≤ t ⟺ slot < min(near_k, t + 1), the
        // row's near count).
        let mut parts = Vec::new();
        if near > 0 {
            // Near misses: a random slot of the row's top-`near_k` set (index order, like the
            // top set); the validity test below drops the slots that fall inside the top.
            let (near_idx, _, _) = top_keys(
                logits.clone().reshape([h * t_count, n]),
                positions.clone(),
                near_k,
            );
            let slots = shared(near_slot);
            let keys = near_idx
                .reshape([h, t_count, near_k])
                .gather(2, slots.clone());
            parts.push((keys, slots));
        }
        if near < p {
            let keys = shared(other_key);
            parts.push((keys.clone(), keys));
        }
        let (others, reaches): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        let (other, reach) = (Tensor::cat(others, 2), Tensor::cat(reaches, 2));
        let top = top_idx.gather(2, ranks.clone());
        let t_pairs = t_col.expand([h, t_count, p]);
        let other_logit = logits.gather(2, other.clone());
        let valid = ranks
            .clone()
            .lower(count.expand([h, t_count, p]))
            .bool_and(reach.lower_equal(t_pairs))
            .bool_and(other_logit.lower(threshold.expand([h, t_count, p])))
            .float();
        Self {
            positions,
            queries,
            top,
            other,
            valid,
        }
    }
}
