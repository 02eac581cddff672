//! Tiny SYNTHETIC llama checkpoints written by the tests (GGUF), shared by the CLI test files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use spotlight_llama::gguf::{self, GgmlType, Value};
use spotlight_llama::names::hf_to_gguf;

pub const VOCAB: usize = 40;
pub const HIDDEN: usize = 32;
pub const FFN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 8;

/// The shape of a tiny synthetic llama.
#[derive(Clone, Copy)]
pub struct Dims {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The default tiny model (head_dim 8: too small for a hash).
pub const TINY: Dims = Dims {
    layers: 1,
    hidden: HIDDEN,
    heads: HEADS,
    kv_heads: KV_HEADS,
    head_dim: HEAD_DIM,
};

/// A tiny model a hash can be trained for (head_dim 32), two layers.
pub const TINY32: Dims = Dims {
    layers: 2,
    hidden: 64,
    heads: 2,
    kv_heads: 1,
    head_dim: 32,
};

pub fn f32_bytes(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((((i * 31 + seed * 17) % 97) as f32 - 48.0) / 480.0).to_le_bytes())
        .collect()
}

/// All tensors of a tiny llama, as (GGUF name, shape [out, in]).
pub fn tiny_tensors(d: Dims) -> Vec<(String, Vec<usize>)> {
    let (q, kv, h) = (d.heads * d.head_dim, d.kv_heads * d.head_dim, d.hidden);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, h]),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    for l in 0..d.layers {
        for (f, shape) in [
            ("input_layernorm.weight", vec![h]),
            ("post_attention_layernorm.weight", vec![h]),
            ("self_attn.q_proj.weight", vec![q, h]),
            ("self_attn.k_proj.weight", vec![kv, h]),
            ("self_attn.v_proj.weight", vec![kv, h]),
            ("self_attn.o_proj.weight", vec![h, q]),
            ("mlp.gate_proj.weight", vec![FFN, h]),
            ("mlp.up_proj.weight", vec![FFN, h]),
            ("mlp.down_proj.weight", vec![h, FFN]),
        ] {
            t.push((format!("model.layers.{l}.{f}"), shape));
        }
    }
    t
}

/// "t", the ten digits, "t1" (from the one merge), then fillers: enough for byte-level BPE to
/// encode prompts made of "t" and digits.
pub fn tiny_vocab(n: usize) -> Value {
    let mut v: Vec<String> = vec!["t".into()];
    v.extend((0..10).map(|d| d.to_string()));
    v.push("t1".into());
    v.extend((v.len()..n).map(|i| format!("f{i}")));
    Value::Array(v.into_iter().map(Value::String).collect())
}

pub type Meta = Vec<(&'static str, Value)>;
pub type GgufTensors = Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>;

/// Writes a tiny synthetic GGUF; `edit` may change metadata and tensors before writing.
pub fn write_tiny(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut Meta, &mut GgufTensors),
) -> PathBuf {
    write_model(dir, name, TINY, edit)
}

/// Writes a tiny synthetic GGUF of shape `d`.
pub fn write_model(
    dir: &Path,
    name: &str,
    d: Dims,
    edit: impl FnOnce(&mut Meta, &mut GgufTensors),
) -> PathBuf {
    let u = |x: usize| Value::U32(x as u32);
    let mut meta: Meta = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", u(d.layers)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", u(d.hidden)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", u(d.heads)),
        ("llama.attention.head_count_kv", u(d.kv_heads)),
        ("llama.rope.dimension_count", u(d.head_dim)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", tiny_vocab(VOCAB)),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("t 1".into())]),
        ),
    ];
    let mut tensors: GgufTensors = tiny_tensors(d)
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let count = s.iter().product();
            (
                hf_to_gguf(&n).unwrap(),
                s,
                GgmlType::F32,
                f32_bytes(count, i),
            )
        })
        .collect();
    edit(&mut meta, &mut tensors);
    let path = dir.join(name);
    let t: Vec<(&str, Vec<usize>, GgmlType, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, ty, b)| (n.as_str(), s.clone(), *ty, b.clone()))
        .collect();
    gguf::write(&path, &meta, &t).unwrap();
    path
}
