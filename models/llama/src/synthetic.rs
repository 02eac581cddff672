//! SYNTHETIC weights: deterministic pseudo-random checkpoints for any configuration. For tests
//! and benchmarks of shapes whose real weights are not at hand — never a real model, and every
//! result produced with them must say so.

use std::collections::HashMap;

use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::load::WeightSource;

/// Deterministic pseudo-random numbers in [−scale, scale) (splitmix64).
pub fn random_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// An in-memory checkpoint with synthetic weights for `config`.
pub struct SyntheticWeights(pub HashMap<String, (Vec<usize>, Vec<f32>)>);

impl SyntheticWeights {
    pub fn new(c: &LlamaConfig, seed: u64) -> Self {
        let mut m = HashMap::new();
        let mut k = seed;
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            k += 1;
            let data = random_vec(shape.iter().product(), k, scale)
                .into_iter()
                .map(|x| x + offset)
                .collect();
            m.insert(name, (shape, data));
        };
        let (h, q, kv, f) = (
            c.hidden_size,
            c.num_attention_heads * c.head_dim,
            c.num_key_value_heads * c.head_dim,
            c.intermediate_size,
        );
        add(
            "model.embed_tokens.weight".into(),
            vec![c.vocab_size, h],
            1.0,
            0.0,
        );
        add("model.norm.weight".into(), vec![h], 0.1, 1.0);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            add(format!("{p}.input_layernorm.weight"), vec![h], 0.1, 1.0);
            add(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                0.1,
                1.0,
            );
            add(format!("{p}.self_attn.q_proj.weight"), vec![q, h], 0.5, 0.0);
            add(
                format!("{p}.self_attn.k_proj.weight"),
                vec![kv, h],
                0.5,
                0.0,
            );
            add(
                format!("{p}.self_attn.v_proj.weight"),
                vec![kv, h],
                0.5,
                0.0,
            );
            add(format!("{p}.self_attn.o_proj.weight"), vec![h, q], 0.3, 0.0);
            add(format!("{p}.mlp.gate_proj.weight"), vec![f, h], 0.3, 0.0);
            add(format!("{p}.mlp.up_proj.weight"), vec![f, h], 0.3, 0.0);
            add(format!("{p}.mlp.down_proj.weight"), vec![h, f], 0.3, 0.0);
        }
        Self(m)
    }
}

impl WeightSource for SyntheticWeights {
    fn get(&self, name: &str) -> Result<Option<crate::load::HostTensor>, LlamaError> {
        Ok(self.0.get(name).cloned())
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}
