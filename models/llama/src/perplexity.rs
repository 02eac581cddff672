//! Teacher-forced perplexity of a token window, computed chunk by chunk through the KV cache so
//! memory stays bounded (only [chunk, vocab] logits exist at a time).

use burn::tensor::{activation::log_softmax, Int, Tensor, TensorData};

use crate::backend::LlamaBackend;
use crate::error::LlamaError;
use crate::model::Llama;
use crate::selector::{SelectRows, Selection};

/// Query positions per forward call.
pub const DEFAULT_CHUNK: usize = 512;

/// Sum of −log p(token[t+1] | tokens[..=t]) over the window, and the number of predicted tokens.
/// With a `selection`, every row attends sparsely with the budget of the whole window
/// (METHOD.md: "teacher-forced with the sparse selection applied on every row").
pub fn window_nll<B: LlamaBackend>(
    model: &Llama<B>,
    tokens: &[u32],
    chunk: usize,
    selection: Option<&Selection<B>>,
) -> Result<(f64, usize), LlamaError> {
    if tokens.len() < 2 {
        return Err(LlamaError::TooFewTokens(
            "perplexity needs at least two tokens",
        ));
    }
    let device = model.embed.device();
    let mut cache = model.new_cache(1, tokens.len())?;
    let inputs = &tokens[..tokens.len() - 1];
    cache.selection = selection.map(|s| Selection {
        rows: SelectRows::EveryRow {
            budget_len: inputs.len(),
        },
        ..s.clone()
    });
    let mut total = 0.0;
    for (i, part) in inputs.chunks(chunk.max(1)).enumerate() {
        let start = i * chunk.max(1);
        let targets: Vec<i64> = tokens[start + 1..start + 1 + part.len()]
            .iter()
            .map(|&t| t as i64)
            .collect();
        let logits = model.logits(model.forward(&[part.to_vec()], &mut cache)?); // [1, n, vocab]
        let targets =
            Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [1, part.len(), 1]), &device);
        let logp = log_softmax(logits, 2).gather(2, targets);
        // sync: one scalar per chunk.
        total -= logp.sum().into_scalar().to_f64_lossy();
    }
    Ok((total, inputs.len()))
}

trait ToF64 {
    fn to_f64_lossy(self) -> f64;
}
impl<E: burn::tensor::ElementConversion> ToF64 for E {
    fn to_f64_lossy(self) -> f64 {
        self.elem::<f64>()
    }
}

/// exp(mean NLL) of one window.
pub fn perplexity<B: LlamaBackend>(
    model: &Llama<B>,
    tokens: &[u32],
    chunk: usize,
) -> Result<f64, LlamaError> {
    let (nll, n) = window_nll(model, tokens, chunk, None)?;
    Ok((nll / n as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{tiny_config, SyntheticWeights, TestBackend};

    #[test]
    fn chunking_does_not_change_perplexity() {
        let c = tiny_config();
        let model =
            Llama::<TestBackend>::load(&c, &SyntheticWeights::new(&c, 9), 64, &Default::default())
                .unwrap();
        let tokens: Vec<u32> = (0..23).map(|i| (i * 7 % 50) as u32).collect();
        let whole = perplexity(&model, &tokens, 64).unwrap();
        let chunked = perplexity(&model, &tokens, 5).unwrap();
        assert!(
            (whole - chunked).abs() < 1e-4 * whole,
            "{whole} vs {chunked}"
        );
        assert!(whole > 1.0 && whole.is_finite());
    }
}
