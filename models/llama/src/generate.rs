//! Autoregressive generation: one prefill, then one decode step per token, with streaming.

use std::time::Instant;

use crate::backend::LlamaBackend;
use crate::error::LlamaError;
use crate::fast::{FastDecode, GraphMode, GraphState, StepRow};
use crate::model::Llama;
use crate::sampling::{Sampler, Sampling};
use crate::selector::Selection;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Generation of a sequence ends at any of these (the stop token is not returned).
    pub stop_ids: Vec<u32>,
    /// Decode with the backend's fused kernels where it has them ([`crate::fast`]); false keeps
    /// every step on Burn tensor ops (the reference, and A/B comparisons).
    pub fused_decode: bool,
    /// Dense attention (prefill included) on the backend's causal kernel where it has one; false
    /// keeps it on Burn tensor ops.
    pub attention_kernels: bool,
    /// Whether the fused decoder records its steps as CUDA graphs (see [`GraphMode`]).
    pub cuda_graphs: GraphMode,
}

/// Timings of one `generate` call.
#[derive(Debug, Clone, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt processing until the first sampled token is on the host.
    pub prefill_secs: f64,
    /// All decode steps after the first token.
    pub decode_secs: f64,
    /// Mean share of the cached K/V rows a decode step reads, over all layers and steps
    /// (1 for dense attention).
    pub kv_read_share: f64,
    /// Kernel launches of the last decode step when it ran on the fused decoder (None: tensor ops).
    pub fused_launches: Option<usize>,
    /// What the fused decoder did with its steps (None: tensor ops).
    pub graphs: Option<GraphState>,
}

impl GenerateStats {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    /// Decode tokens per second, all sequences together.
    pub fn decode_tok_s(&self, batch: usize) -> f64 {
        let steps = self.generated_tokens.saturating_sub(batch);
        steps as f64 / self.decode_secs.max(1e-9)
    }
}

/// Generates continuations of a batch of prompts. `on_token(seq, token)` is called as each token
/// is chosen, so callers can stream. Returns the new tokens per prompt. With a `selection`,
/// decode steps attend sparsely (the prompt is prefilled densely; its keys are coded on insert).
pub fn generate<B: LlamaBackend>(
    model: &Llama<B>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    selection: Option<&Selection<B>>,
    mut on_token: impl FnMut(usize, u32) -> Result<(), LlamaError>,
) -> Result<(Vec<Vec<u32>>, GenerateStats), LlamaError> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(LlamaError::TooFewTokens(
            "every prompt needs at least one token",
        ));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap();
    let context = model.rope.max_positions();
    if longest + config.max_tokens > context {
        return Err(LlamaError::ContextOverflow {
            tokens: longest,
            new: config.max_tokens,
            context,
        });
    }
    let batch = prompts.len();
    let mut cache = model.new_cache(batch, longest + config.max_tokens)?;
    cache.selection = selection.cloned();
    cache.attention_kernels = config.attention_kernels;
    let layers = model.config.num_hidden_layers;
    let (mut read_sum, mut read_steps) = (0.0, 0usize);
    let mut samplers: Vec<Sampler> = (0..batch)
        .map(|b| {
            Sampler::new(
                config.sampling.clone(),
                config.repetition_penalty,
                config.seed.wrapping_add(b as u64),
            )
        })
        .collect();
    let mut seen: Vec<Vec<u32>> = prompts.to_vec();
    let mut out = vec![Vec::new(); batch];
    let mut done = vec![config.max_tokens == 0; batch];
    let mut stats = GenerateStats {
        prompt_tokens: prompts.iter().map(Vec::len).sum(),
        ..Default::default()
    };
    let start = Instant::now();
    let mut input: Vec<Vec<u32>> = prompts.to_vec();
    let mut first = true;
    let mut fused: Option<Box<dyn FastDecode>> = None;
    while !done.iter().all(|&d| d) {
        let active = input.iter().filter(|i| !i.is_empty()).count();
        if !first && fused.is_none() {
            for (b, inp) in input.iter().enumerate() {
                if !inp.is_empty() {
                    let len = cache.lens[b] + 1;
                    read_sum += selection.map_or(1.0, |s| s.read_share(layers, len));
                    read_steps += 1;
                }
            }
        }
        let vocab = model.config.vocab_size;
        // Row of each sequence in this step's logits.
        let mut row_of: Vec<usize> = (0..batch).collect();
        let logits = match fused.as_mut() {
            Some(decoder) => {
                // A decoder that needs every sequence in each step gets finished ones too, fed
                // their last token again (their outputs are dropped).
                let every = decoder.full_batch();
                let rows: Vec<StepRow> = (0..batch)
                    .filter(|&b| every || !input[b].is_empty())
                    .map(|b| StepRow {
                        seq: b,
                        token: input[b].first().or(seen[b].last()).copied().unwrap_or(0),
                    })
                    .collect();
                for (i, r) in rows.iter().enumerate() {
                    row_of[r.seq] = i;
                }
                let logits = decoder.step(&rows)?;
                stats.fused_launches = Some(decoder.launches());
                stats.graphs = Some(decoder.graph_state());
                read_sum += decoder.read_share() * active as f64;
                read_steps += active;
                logits
            }
            // sync: read the logits of every sequence's last position (one host round-trip per step).
            None => model
                .forward_last(&input, &mut cache)?
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| LlamaError::Device(format!("{e:?}")))?,
        };
        for b in 0..batch {
            input[b].clear();
            if done[b] {
                continue;
            }
            let r = row_of[b];
            let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
            let token = samplers[b].sample(&mut row, &seen[b]);
            if config.stop_ids.contains(&token) {
                done[b] = true;
                continue;
            }
            on_token(b, token)?;
            out[b].push(token);
            seen[b].push(token);
            stats.generated_tokens += 1;
            if out[b].len() == config.max_tokens {
                done[b] = true;
            } else {
                input[b].push(token);
            }
        }
        if first {
            stats.prefill_secs = start.elapsed().as_secs_f64();
            first = false;
            if config.fused_decode {
                // The decoder takes over the prefilled cache (the tensor path no longer runs).
                fused = B::fast_decoder(model, &cache)?;
                if let Some(decoder) = fused.as_mut() {
                    decoder.set_graphs(config.cuda_graphs)?;
                }
            }
        }
        if input.iter().all(Vec::is_empty) {
            break;
        }
    }
    stats.decode_secs = start.elapsed().as_secs_f64() - stats.prefill_secs;
    stats.kv_read_share = if read_steps > 0 {
        read_sum / read_steps as f64
    } else {
        1.0
    };
    Ok((out, stats))
}
