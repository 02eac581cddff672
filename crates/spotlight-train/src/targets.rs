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
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            queries: 1024,
            pairs: 1024,
            top_fraction: 0.02,
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
        let other_key: Vec<i64> = (0..p).map(|_| rng.random_range(0..n) as i64).collect();

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
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [p]), &device)
                .reshape([1, 1, p])
                .expand([h, t_count, p])
        };
        let ranks = shared(top_rank);
        let other = shared(other_key);
        let top = top_idx.gather(2, ranks.clone());
        let t_pairs = t_col.expand([h, t_count, p]);
        let other_logit = logits.gather(2, other.clone());
        let valid = ranks
            .clone()
            .lower(count.expand([h, t_count, p]))
            .bool_and(other.clone().lower_equal(t_pairs))
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
