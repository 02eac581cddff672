//! Architecture of a Llama-family model, read from an HF `config.json` or from GGUF metadata.
//!
//! Architecture only: no paths, no batch size. Facts that differ between checkpoints (tied head,
//! q/k/v bias, RoPE scaling) are fields, never build features.

use serde::{Deserialize, Serialize};

use crate::error::LlamaError;
use crate::gguf::{GgufFile, Value};

/// Caps on a config's sizes ([`LlamaConfig::validate`]).
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_HIDDEN: usize = 1 << 16;
pub const MAX_FFN: usize = 1 << 18;
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_CONTEXT: usize = 1 << 24;

/// How RoPE frequencies are rescaled for long context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RopeScaling {
    /// Llama 3.1's smooth interpolation between original and `factor`-scaled frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Per-frequency divisors as stored by llama.cpp in `rope_freqs.weight` (d/2 values).
    Factors(Vec<f32>),
}

/// Model architecture (HF field names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    /// Longest sequence the model was trained for: prompts beyond it are refused.
    pub max_position_embeddings: usize,
    /// LM head shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (Qwen2).
    pub attention_bias: bool,
}

/// The subset of an HF `config.json` we read; names are HF's verbatim.
#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f64,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default = "default_max_pos")]
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    4096
}

impl LlamaConfig {
    /// Number of query heads sharing one KV head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// A configuration of which only the attention shape means anything (layers, heads, head_dim,
    /// context): for code that works on q/k alone, such as hash training on synthetic inputs.
    pub fn attention_shape(
        layers: usize,
        q_heads: usize,
        kv_heads: usize,
        head_dim: usize,
        context: usize,
    ) -> Self {
        Self {
            vocab_size: 1,
            hidden_size: q_heads * head_dim,
            intermediate_size: 1,
            num_hidden_layers: layers,
            num_attention_heads: q_heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            rope_scaling: None,
            max_position_embeddings: context,
            tie_word_embeddings: true,
            attention_bias: false,
        }
    }

    /// Architectures by name, for benchmarks with SYNTHETIC weights: `llama3-8b` (Meta-Llama-3.1-8B's
    /// config.json) and `smollm2-135m` (SmolLM2-135M's).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "llama3-8b" => Some(Self {
                vocab_size: 128_256,
                hidden_size: 4096,
                intermediate_size: 14_336,
                num_hidden_layers: 32,
                num_attention_heads: 32,
                num_key_value_heads: 8,
                head_dim: 128,
                rms_norm_eps: 1e-5,
                rope_theta: 500_000.0,
                rope_scaling: Some(RopeScaling::Llama3 {
                    factor: 8.0,
                    low_freq_factor: 1.0,
                    high_freq_factor: 4.0,
                    original_max_position_embeddings: 8192,
                }),
                max_position_embeddings: 131_072,
                tie_word_embeddings: false,
                attention_bias: false,
            }),
            "smollm2-135m" => Some(Self {
                vocab_size: 49_152,
                hidden_size: 576,
                intermediate_size: 1536,
                num_hidden_layers: 30,
                num_attention_heads: 9,
                num_key_value_heads: 3,
                head_dim: 64,
                rms_norm_eps: 1e-5,
                rope_theta: 100_000.0,
                rope_scaling: None,
                max_position_embeddings: 8192,
                tie_word_embeddings: true,
                attention_bias: false,
            }),
            _ => None,
        }
    }

    /// Parses an HF `config.json` (Llama 2/3, Mistral, Qwen2/2.5, SmolLM2).
    pub fn from_hf_json(json: &str) -> Result<Self, LlamaError> {
        let hf: HfConfig = serde_json::from_str(json)
            .map_err(|e| LlamaError::Config(format!("config.json: {e}")))?;
        let model_type = hf.model_type.unwrap_or_else(|| "llama".into());
        if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(LlamaError::Config(format!(
                "model_type {model_type} is not supported (llama, mistral, qwen2)"
            )));
        }
        let rope_scaling = match hf.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
                match kind {
                    "llama3" => Some(RopeScaling::Llama3 {
                        factor: num("factor").unwrap_or(8.0),
                        low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
                        high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
                        original_max_position_embeddings: num("original_max_position_embeddings")
                            .unwrap_or(8192.0)
                            as usize,
                    }),
                    "default" => None,
                    other => {
                        return Err(LlamaError::Config(format!(
                            "rope_scaling type {other:?} is not supported"
                        )))
                    }
                }
            }
        };
        let config = Self {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
            rms_norm_eps: hf.rms_norm_eps,
            rope_theta: hf.rope_theta,
            rope_scaling,
            max_position_embeddings: hf.max_position_embeddings,
            tie_word_embeddings: hf.tie_word_embeddings,
            attention_bias: hf.attention_bias.unwrap_or(model_type == "qwen2"),
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads the architecture from GGUF metadata (`general.architecture` = llama or qwen2).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LlamaError> {
        let arch = gguf
            .get("general.architecture")?
            .as_str()
            .ok_or_else(|| LlamaError::Config("general.architecture is not a string".into()))?
            .to_string();
        if !matches!(arch.as_str(), "llama" | "qwen2") {
            return Err(LlamaError::Config(format!(
                "GGUF architecture {arch} is not supported (llama, qwen2)"
            )));
        }
        let int = |key: &str| -> Result<usize, LlamaError> {
            let k = format!("{arch}.{key}");
            gguf.get(&k)?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| LlamaError::Config(format!("{k} is not an unsigned integer")))
        };
        let float = |key: &str| -> Option<f64> {
            gguf.metadata
                .get(&format!("{arch}.{key}"))
                .and_then(Value::as_f64)
        };
        let hidden_size = int("embedding_length")?;
        let num_attention_heads = int("attention.head_count")?;
        let num_key_value_heads = int("attention.head_count_kv").unwrap_or(num_attention_heads);
        let head_dim =
            int("rope.dimension_count").unwrap_or(hidden_size / num_attention_heads.max(1));
        // Not every converter writes vocab_size; the token list is authoritative.
        let vocab_size = match int("vocab_size") {
            Ok(v) => v,
            Err(_) => match gguf
                .metadata
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
            {
                Some(tokens) => tokens.len(),
                None => gguf
                    .tensors
                    .get("token_embd.weight")
                    .map(|t| t.shape()[0])
                    .ok_or_else(|| LlamaError::Config("cannot determine vocab_size".into()))?,
            },
        };
        let rope_scaling = match gguf.tensors.get("rope_freqs.weight") {
            Some(_) => Some(RopeScaling::Factors(
                gguf.dequantize("rope_freqs.weight")?.1,
            )),
            None => None,
        };
        let config = Self {
            vocab_size,
            hidden_size,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings: int("context_length")?,
            tie_word_embeddings: !gguf.tensors.contains_key("output.weight"),
            attention_bias: gguf.tensors.contains_key("blk.0.attn_q.bias"),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the model code relies on, and caps every size: a config.json or
    /// GGUF header claiming absurd dimensions gets this error, not an allocation. The caps sit
    /// far above every released Llama-family model (the largest: vocabulary 256K, hidden 16384,
    /// 126 layers, 128 heads, head_dim 256, context 1M).
    pub fn validate(&self) -> Result<(), LlamaError> {
        let fail = |m: String| Err(LlamaError::Config(m));
        for (what, value, cap) in [
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_HIDDEN),
            ("intermediate_size", self.intermediate_size, MAX_FFN),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_HEAD_DIM),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_CONTEXT,
            ),
        ] {
            if value > cap {
                return fail(format!("{what} {value} is implausible (at most {cap})"));
            }
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0 && self.rms_norm_eps < 1.0) {
            return fail(format!(
                "rms_norm_eps {} must be in (0, 1)",
                self.rms_norm_eps
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return fail(format!("rope_theta {} must be positive", self.rope_theta));
        }
        match &self.rope_scaling {
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                ..
            }) => {
                let ok = |x: f64| x.is_finite() && x > 0.0;
                if !(ok(*factor) && ok(*low_freq_factor) && ok(*high_freq_factor))
                    || low_freq_factor >= high_freq_factor
                {
                    return fail(format!(
                        "rope_scaling factors {factor}, {low_freq_factor}, {high_freq_factor} \
                         must be positive with low_freq_factor < high_freq_factor"
                    ));
                }
            }
            Some(RopeScaling::Factors(f)) => {
                if let Some(x) = f.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
                    return fail(format!("rope_freqs holds {x}: factors must be positive"));
                }
            }
            None => {}
        }
        if self.num_attention_heads == 0
            || self.num_key_value_heads == 0
            || self.num_hidden_layers == 0
        {
            return fail("heads and layers must be non-zero".into());
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return fail(format!(
                "{} query heads are not a multiple of {} KV heads",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return fail(format!(
                "head_dim {} must be even and non-zero (RoPE rotates pairs)",
                self.head_dim
            ));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 {
            return fail("vocab_size, hidden_size and intermediate_size must be non-zero".into());
        }
        if let Some(RopeScaling::Factors(f)) = &self.rope_scaling {
            if f.len() != self.head_dim / 2 {
                return fail(format!(
                    "rope_freqs has {} values, expected head_dim/2 = {}",
                    f.len(),
                    self.head_dim / 2
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_config_parses() {
        let json = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,
            "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,
            "rope_theta":500000.0,"max_position_embeddings":131072,"tie_word_embeddings":false,
            "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert_eq!(c.head_dim, 128);
        assert_eq!(c.group_size(), 4);
        assert!(matches!(c.rope_scaling, Some(RopeScaling::Llama3 { .. })));
        assert!(!c.attention_bias);
    }

    #[test]
    fn absurd_sizes_are_refused_before_any_allocation() {
        let base = r#"{"vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3}"#;
        assert!(LlamaConfig::from_hf_json(base).is_ok());
        for (field, value, needle) in [
            (
                "vocab_size",
                "49152",
                "vocab_size 18446744073709551615 is implausible",
            ),
            (
                "hidden_size",
                "576",
                "hidden_size 18446744073709551615 is implausible",
            ),
            (
                "num_hidden_layers",
                "30",
                "num_hidden_layers 18446744073709551615",
            ),
            (
                "num_attention_heads",
                "9",
                "num_attention_heads 18446744073709551615",
            ),
        ] {
            let json = base.replace(
                &format!("\"{field}\":{value}"),
                &format!("\"{field}\":{}", u64::MAX),
            );
            let e = LlamaConfig::from_hf_json(&json).unwrap_err().to_string();
            assert!(e.contains(needle), "{field}: {e}");
        }
        let json = base.replace("}", r#","rms_norm_eps":-1}"#);
        assert!(LlamaConfig::from_hf_json(&json).is_err());
        let json = base.replace("}", r#","head_dim":4096}"#);
        assert!(LlamaConfig::from_hf_json(&json).is_err());
    }

    #[test]
    fn qwen2_has_bias_and_bad_heads_fail() {
        let json = r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,
            "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"tie_word_embeddings":true}"#;
        let c = LlamaConfig::from_hf_json(json).unwrap();
        assert!(c.attention_bias && c.tie_word_embeddings);
        let bad = json.replace("\"num_key_value_heads\":2", "\"num_key_value_heads\":3");
        assert!(LlamaConfig::from_hf_json(&bad)
            .unwrap_err()
            .to_string()
            .contains("not a multiple"));
    }
}
