//! The Llama-family decoder: embedding → blocks → final norm → LM head.

use std::collections::HashSet;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rayon::prelude::*;

use crate::attention::{Attention, Step};
use crate::backend::LlamaBackend;
use crate::block::Block;
use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::layers::{Linear, RmsNorm};
use crate::load::WeightSource;
use crate::mlp::Mlp;
use crate::names;
use crate::rope::Rope;

/// Bytes of K and V for every layer: 2 · layers · batch · kv_heads · capacity · head_dim
/// elements of `elem` bytes; None if that overflows.
pub fn kv_cache_bytes(c: &LlamaConfig, batch: usize, capacity: usize, elem: usize) -> Option<u64> {
    [
        2,
        c.num_hidden_layers,
        batch,
        c.num_key_value_heads,
        capacity,
        c.head_dim,
        elem,
    ]
    .iter()
    .try_fold(1u64, |acc, &x| acc.checked_mul(x as u64))
}

/// Refuses an allocation of `needed` bytes that the device cannot hold, before trying it
/// (`free`: None where the backend cannot tell).
pub fn check_free_memory(needed: u64, free: Option<u64>) -> Result<(), LlamaError> {
    match free {
        Some(free) if needed > free => Err(LlamaError::OutOfMemory { needed, free }),
        _ => Ok(()),
    }
}

#[derive(Debug, Clone)]
pub struct Llama<B: Backend> {
    pub config: LlamaConfig,
    /// [vocab, hidden]
    pub embed: Tensor<B, 2>,
    pub layers: Vec<Block<B>>,
    pub norm: RmsNorm<B>,
    pub lm_head: Linear<B>,
    pub rope: Rope<B>,
}

/// One layer's post-RoPE queries [q_heads, len, d] and keys [kv_heads, len, d].
#[derive(Debug, Clone)]
pub struct LayerQk<B: Backend> {
    pub q: Tensor<B, 3>,
    pub k: Tensor<B, 3>,
}

/// Reads tensors by name, checks their shapes, and remembers which were used.
struct Loader<'a, S: WeightSource + ?Sized> {
    source: &'a S,
    used: HashSet<String>,
}

impl<S: WeightSource + ?Sized> Loader<'_, S> {
    fn take(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>, LlamaError> {
        let (shape, data) = self
            .source
            .get(name)?
            .ok_or_else(|| LlamaError::MissingTensor(name.to_string()))?;
        if shape != expected {
            return Err(LlamaError::Shape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        // A NaN or infinity in a weight poisons every logit downstream: refuse it here, by name.
        if let Some(i) = data.par_iter().position_first(|x| !x.is_finite()) {
            return Err(LlamaError::DamagedTensor {
                name: name.to_string(),
                index: i,
                value: data[i],
            });
        }
        self.used.insert(name.to_string());
        Ok(data)
    }

    fn vector<B: Backend>(
        &mut self,
        name: &str,
        len: usize,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>, LlamaError> {
        Ok(Tensor::from_data(
            TensorData::new(self.take(name, &[len])?, [len]),
            device,
        ))
    }

    /// A projection stored as HF's [out, in].
    fn linear<B: Backend>(
        &mut self,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Linear<B>, LlamaError> {
        let w = self.take(&format!("{prefix}.weight"), &[d_out, d_in])?;
        let bias = if bias {
            Some(self.vector(&format!("{prefix}.bias"), d_out, device)?)
        } else {
            None
        };
        Ok(Linear {
            weight: Tensor::from_data(TensorData::new(w, [d_out, d_in]), device),
            bias,
        })
    }
}

impl<B: LlamaBackend> Llama<B> {
    /// Builds the model from a checkpoint. Every model tensor must be present with the expected
    /// shape, and every checkpoint tensor must be used (a leftover means a different architecture).
    /// `max_positions` bounds the RoPE table (≤ the model's context).
    pub fn load<S: WeightSource + ?Sized>(
        config: &LlamaConfig,
        source: &S,
        max_positions: usize,
        device: &B::Device,
    ) -> Result<Self, LlamaError> {
        config.validate()?;
        let c = config;
        let (hd, kvd) = (
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
        );
        let mut l = Loader {
            source,
            used: HashSet::new(),
        };
        let embed_data = l.take("model.embed_tokens.weight", &[c.vocab_size, c.hidden_size])?;
        let norm = |l: &mut Loader<S>, name: &str| -> Result<RmsNorm<B>, LlamaError> {
            Ok(RmsNorm {
                gamma: l.vector(name, c.hidden_size, device)?,
                eps: c.rms_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                attention_norm: norm(&mut l, &format!("{p}.input_layernorm.weight"))?,
                attention: Attention {
                    q: l.linear(
                        &format!("{p}.self_attn.q_proj"),
                        c.hidden_size,
                        hd,
                        c.attention_bias,
                        device,
                    )?,
                    k: l.linear(
                        &format!("{p}.self_attn.k_proj"),
                        c.hidden_size,
                        kvd,
                        c.attention_bias,
                        device,
                    )?,
                    v: l.linear(
                        &format!("{p}.self_attn.v_proj"),
                        c.hidden_size,
                        kvd,
                        c.attention_bias,
                        device,
                    )?,
                    o: l.linear(
                        &format!("{p}.self_attn.o_proj"),
                        hd,
                        c.hidden_size,
                        false,
                        device,
                    )?,
                    n_heads: c.num_attention_heads,
                    n_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                mlp_norm: norm(&mut l, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate: l.linear(
                        &format!("{p}.mlp.gate_proj"),
                        c.hidden_size,
                        c.intermediate_size,
                        false,
                        device,
                    )?,
                    up: l.linear(
                        &format!("{p}.mlp.up_proj"),
                        c.hidden_size,
                        c.intermediate_size,
                        false,
                        device,
                    )?,
                    down: l.linear(
                        &format!("{p}.mlp.down_proj"),
                        c.intermediate_size,
                        c.hidden_size,
                        false,
                        device,
                    )?,
                },
            });
        }
        let norm = norm(&mut l, "model.norm.weight")?;
        let embed = Tensor::from_data(
            TensorData::new(embed_data, [c.vocab_size, c.hidden_size]),
            device,
        );
        // Tied head: the same [vocab, hidden] tensor serves lookup and projection (no copy).
        let lm_head = if c.tie_word_embeddings {
            Linear {
                weight: embed.clone(),
                bias: None,
            }
        } else {
            l.linear("lm_head", c.hidden_size, c.vocab_size, false, device)?
        };
        let mut unused: Vec<String> = source
            .names()
            .into_iter()
            .filter(|n| !l.used.contains(n) && !names::is_ignorable(n))
            .filter(|n| !(c.tie_word_embeddings && n == "lm_head.weight"))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(LlamaError::UnusedTensors {
                count: unused.len(),
                example: unused[0].clone(),
            });
        }
        let rope = Rope::new(
            c,
            max_positions.min(c.max_position_embeddings).max(1),
            device,
        );
        Ok(Self {
            config: c.clone(),
            embed,
            layers,
            norm,
            lm_head,
            rope,
        })
    }

    /// An empty cache for `batch` sequences of up to `capacity` tokens.
    pub fn new_cache(&self, batch: usize, capacity: usize) -> Result<KvCache<B>, LlamaError> {
        if capacity > self.rope.max_positions() {
            return Err(LlamaError::ContextOverflow {
                tokens: capacity,
                new: 0,
                context: self.rope.max_positions(),
            });
        }
        let c = &self.config;
        let device = self.embed.device();
        let needed = kv_cache_bytes(c, batch, capacity, size_of::<B::FloatElem>())
            .ok_or(LlamaError::CacheTooLarge { batch, capacity })?;
        check_free_memory(needed, B::free_memory(&device))?;
        Ok(KvCache::new(
            c.num_hidden_layers,
            batch,
            c.num_key_value_heads,
            capacity,
            c.head_dim,
            &device,
        ))
    }

    /// Runs new tokens through the model, appending them to `cache`. `tokens[b]` are sequence b's new
    /// tokens (lengths may differ; an empty list leaves that sequence unchanged).
    /// Returns the final-norm hidden states [batch, max_len, hidden], right-padded.
    pub fn forward(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 3>, LlamaError> {
        let device = self.embed.device();
        let new_lens: Vec<usize> = tokens.iter().map(Vec::len).collect();
        cache.check_room(&new_lens)?;
        let len = new_lens.iter().copied().max().unwrap_or(0);
        if len == 0 {
            return Err(LlamaError::TooFewTokens("no tokens to run"));
        }
        let batch = tokens.len();
        let mut ids = Vec::with_capacity(batch * len);
        for seq in tokens {
            for &t in seq {
                if t as usize >= self.config.vocab_size {
                    return Err(LlamaError::TokenOutOfVocabulary {
                        token: t,
                        vocab: self.config.vocab_size,
                    });
                }
                ids.push(t as i64);
            }
            ids.extend(std::iter::repeat_n(0, len - seq.len())); // right padding, masked out
        }
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [batch * len]), &device);
        let c = &self.config;
        let mut step = Step::new(
            cache.lens.clone(),
            new_lens.clone(),
            c.group_size(),
            c.num_key_value_heads,
            self.rope.max_positions(),
            &device,
        )
        .with_selection(cache.selection.clone());
        step.record_queries = cache.record_queries;
        step.attention_kernels = cache.attention_kernels;
        let mut x = self
            .embed
            .clone()
            .select(0, ids)
            .reshape([batch, len, c.hidden_size]);
        for (i, (block, layer_cache)) in self.layers.iter().zip(cache.layers.iter_mut()).enumerate()
        {
            x = block.forward(x, &self.rope, &step, i, layer_cache);
        }
        for (l, n) in cache.lens.iter_mut().zip(&new_lens) {
            *l += n;
        }
        Ok(self.norm.forward(x))
    }

    /// Runs one sequence through the dense model and returns every layer's post-RoPE queries and
    /// keys, per head: (q [q_heads, len, head_dim], k [kv_heads, len, head_dim]), HF `rotate_half`
    /// layout — the inputs of the Spotlight hash (METHOD.md "Training").
    pub fn queries_and_keys(&self, tokens: &[u32]) -> Result<Vec<LayerQk<B>>, LlamaError> {
        let mut cache = self.new_cache(1, tokens.len())?;
        cache.record_queries = true;
        self.forward(&[tokens.to_vec()], &mut cache)?;
        let len = tokens.len();
        let c = &self.config;
        Ok(cache
            .layers
            .into_iter()
            .map(|layer| {
                let q = layer
                    .queries
                    .expect("recorded by forward")
                    .reshape([len, c.num_attention_heads, c.head_dim])
                    .swap_dims(0, 1);
                let k = layer
                    .k
                    .slice([0..1, 0..c.num_key_value_heads, 0..len, 0..c.head_dim])
                    .reshape([c.num_key_value_heads, len, c.head_dim]);
                LayerQk { q, k }
            })
            .collect())
    }

    /// LM head over hidden states: [batch, len, hidden] → [batch, len, vocab].
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        self.lm_head.forward(hidden)
    }

    /// Runs `tokens` and returns the logits of each sequence's last new token: [batch, vocab].
    /// A sequence given no new tokens gets the logits of padding row 0 (callers skip it).
    pub fn forward_last(
        &self,
        tokens: &[Vec<u32>],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>, LlamaError> {
        let hidden = self.forward(tokens, cache)?;
        let [batch, len, d] = hidden.dims();
        let last: Vec<i64> = tokens
            .iter()
            .enumerate()
            .map(|(b, t)| (b * len + t.len().max(1) - 1) as i64)
            .collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(last, [batch]), &hidden.device());
        let rows = hidden.reshape([batch * len, d]).select(0, idx);
        Ok(self.logits(rows.unsqueeze_dim(1)).squeeze_dim(1))
    }
}
