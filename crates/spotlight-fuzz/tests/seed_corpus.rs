//! Writes the seed corpus under `corpus/<target>/` (committed; run again only to change it):
//! `cargo test -p spotlight-fuzz --test seed_corpus -- --ignored`. Real bytes where we have
//! them — the first 256 KiB of the SmolLM2 GGUF (its header and metadata: architecture keys, the
//! start of the vocabulary) and a GGUF holding SmolLM2's tokenizer cut to its first 3000 tokens,
//! when the model is in the fetched cache — plus small files of every format our own code
//! writes: tiny synthetic models (one tensor of each ggml type), hash files, checkpoints,
//! configs. Deterministic: the same files every run.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use spotlight_llama::gguf::{self, GgmlType, GgufFile, Value};
use spotlight_train::{tensor_file, Layout, TrainConfig, Trainer};

type Ad = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

fn dir(target: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 31 + seed * 17) % 97) as f32 - 48.0) / 480.0)
        .collect()
}

fn block_bytes(ty: GgmlType, v: &[f32]) -> Vec<u8> {
    match ty {
        GgmlType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        GgmlType::F16 => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        GgmlType::BF16 => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        // Quantised blocks: a scale and the quants (values are not round-tripped; any bytes of
        // the right length are a valid block).
        GgmlType::Q8_0 => v
            .chunks(32)
            .flat_map(|c| {
                let mut b = f16::from_f32(0.01).to_le_bytes().to_vec();
                b.extend(c.iter().map(|x| (x * 100.0) as i8 as u8));
                b
            })
            .collect(),
        GgmlType::Q4_0 => v
            .chunks(32)
            .flat_map(|c| {
                let mut b = f16::from_f32(0.02).to_le_bytes().to_vec();
                b.extend((0..16).map(|j| ((c[j] * 10.0) as i8 as u8 & 15) | ((j as u8) << 4)));
                b
            })
            .collect(),
        GgmlType::Q4_1 => v
            .chunks(32)
            .flat_map(|c| {
                let mut b = f16::from_f32(0.02).to_le_bytes().to_vec();
                b.extend(f16::from_f32(-0.1).to_le_bytes());
                b.extend((0..16).map(|j| ((c[j] * 10.0) as i8 as u8 & 15) | ((j as u8) << 4)));
                b
            })
            .collect(),
    }
}

fn tiny_vocab() -> Value {
    let mut v: Vec<String> = vec!["t".into()];
    v.extend((0..10).map(|d| d.to_string()));
    v.push("t1".into());
    v.extend((v.len()..40).map(|i| format!("f{i}")));
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// A tiny llama GGUF (hidden 32, 4/2 heads, head_dim 8, one layer) with every weight of type `ty`
/// (norms stay F32, as converters write them).
fn tiny_gguf(ty: GgmlType) -> Vec<u8> {
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(32)),
        ("llama.feed_forward_length", Value::U32(64)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", tiny_vocab()),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("t 1".into())]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ];
    let mut tensors: Vec<(String, Vec<usize>, GgmlType)> = vec![
        ("token_embd.weight".into(), vec![40, 32], ty),
        ("output_norm.weight".into(), vec![32], GgmlType::F32),
    ];
    for (n, s) in [
        ("attn_norm.weight", vec![32]),
        ("ffn_norm.weight", vec![32]),
        ("attn_q.weight", vec![32, 32]),
        ("attn_k.weight", vec![16, 32]),
        ("attn_v.weight", vec![16, 32]),
        ("attn_output.weight", vec![32, 32]),
        ("ffn_gate.weight", vec![64, 32]),
        ("ffn_up.weight", vec![64, 32]),
        ("ffn_down.weight", vec![32, 64]),
    ] {
        let t = if s.len() == 1 { GgmlType::F32 } else { ty };
        tensors.push((format!("blk.0.{n}"), s, t));
    }
    let data: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)> = tensors
        .into_iter()
        .enumerate()
        .map(|(i, (n, s, t))| {
            let b = block_bytes(t, &values(s.iter().product(), i));
            (n, s, t, b)
        })
        .collect();
    let refs: Vec<(&str, Vec<usize>, GgmlType, Vec<u8>)> = data
        .iter()
        .map(|(n, s, t, b)| (n.as_str(), s.clone(), *t, b.clone()))
        .collect();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    gguf::write(tmp.path(), &meta, &refs).unwrap();
    std::fs::read(tmp.path()).unwrap()
}

/// The default model of the fetched cache, if it is there.
fn smollm2() -> Option<PathBuf> {
    let home = std::env::var_os("SPOTLIGHT_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/spotlight")))?;
    let p = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

/// SmolLM2's tokenizer metadata cut to its first `n` tokens and the merges among them.
fn smollm2_tokenizer(path: &Path, n: usize) -> Vec<u8> {
    let f = GgufFile::open(path).unwrap();
    let strings = |k: &str| -> Vec<String> {
        f.metadata[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let tokens: Vec<String> = strings("tokenizer.ggml.tokens")
        .into_iter()
        .take(n)
        .collect();
    let known: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let merges: Vec<String> = strings("tokenizer.ggml.merges")
        .into_iter()
        .filter(|m| {
            m.split_once(' ').is_some_and(|(a, b)| {
                known.contains(a) && known.contains(b) && known.contains(format!("{a}{b}").as_str())
            })
        })
        .collect();
    let types: Vec<Value> =
        f.metadata["tokenizer.ggml.token_type"].as_array().unwrap()[..n].to_vec();
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        (
            "tokenizer.ggml.pre",
            f.metadata["tokenizer.ggml.pre"].clone(),
        ),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
    ];
    for k in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.chat_template",
    ] {
        if let Some(v) = f.metadata.get(k) {
            meta.push((k, v.clone()));
        }
    }
    let tmp = tempfile::NamedTempFile::new().unwrap();
    gguf::write(tmp.path(), &meta, &[]).unwrap();
    std::fs::read(tmp.path()).unwrap()
}

fn tiny_safetensors(dtype: &str) -> Vec<u8> {
    // Written by hand for f16/bf16 (our writer only writes f32 and f16).
    let names = ["model.embed_tokens.weight", "model.norm.weight"];
    let shapes = [vec![40usize, 32], vec![32]];
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (i, (n, s)) in names.iter().zip(&shapes).enumerate() {
        let v = values(s.iter().product(), i);
        let b: Vec<u8> = match dtype {
            "F16" => block_bytes(GgmlType::F16, &v),
            "BF16" => block_bytes(GgmlType::BF16, &v),
            _ => block_bytes(GgmlType::F32, &v),
        };
        header.insert(
            n.to_string(),
            serde_json::json!({"dtype": dtype, "shape": s, "data_offsets": [data.len(), data.len() + b.len()]}),
        );
        data.extend(b);
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

fn small_config(layouts: Vec<Layout>, bits: usize) -> TrainConfig {
    TrainConfig {
        layouts,
        steps: 3,
        seq_len: 32,
        checkpoint_every: 1,
        bits,
        ..TrainConfig::default()
    }
}

#[test]
#[ignore = "writes the committed seed corpus"]
fn write_seed_corpus() {
    // gguf: one tiny model per ggml type, and the real header.
    for (ty, name) in [
        (GgmlType::F32, "tiny-f32"),
        (GgmlType::F16, "tiny-f16"),
        (GgmlType::BF16, "tiny-bf16"),
        (GgmlType::Q8_0, "tiny-q8_0"),
        (GgmlType::Q4_0, "tiny-q4_0"),
        (GgmlType::Q4_1, "tiny-q4_1"),
    ] {
        std::fs::write(dir("gguf").join(name), tiny_gguf(ty)).unwrap();
    }
    std::fs::write(dir("tokenizer").join("tiny"), tiny_gguf(GgmlType::F32)).unwrap();
    // Regressions: the two crashes fuzzing found in the GGUF path, kept as inputs.
    let tiny = tiny_gguf(GgmlType::F32);
    let after = |name: &str| {
        tiny.windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
            + name.len()
    };
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/gguf");
    std::fs::create_dir_all(&regressions).unwrap();
    // data_start + offset + size overflowed u64.
    let mut b = tiny.clone();
    let at = after("token_embd.weight") + 4 + 16 + 4;
    b[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    std::fs::write(regressions.join("tensor-offset-overflow"), b).unwrap();
    // A q projection with a zero row length: the q/k un-permutation divided by it.
    let mut b = tiny.clone();
    let at = after("blk.0.attn_q.weight") + 4;
    b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    std::fs::write(regressions.join("zero-dim-q-unpermute"), b).unwrap();
    if let Some(real) = smollm2() {
        let bytes = std::fs::read(&real).unwrap();
        std::fs::write(dir("gguf").join("smollm2-head-256k"), &bytes[..256 << 10]).unwrap();
        std::fs::write(
            dir("tokenizer").join("smollm2-3000-tokens"),
            smollm2_tokenizer(&real, 3000),
        )
        .unwrap();
    } else {
        eprintln!("the SmolLM2 GGUF is not in the cache (spotlight fetch): its seeds are skipped");
    }
    // safetensors: f32, f16, bf16 shards and an index.
    for dt in ["F32", "F16", "BF16"] {
        std::fs::write(
            dir("safetensors").join(format!("tiny-{}", dt.to_lowercase())),
            tiny_safetensors(dt),
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 5248}, "weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.norm.weight": "model-00002-of-00002.safetensors"}});
    std::fs::write(dir("safetensors").join("index.json"), index.to_string()).unwrap();
    // config: the HF configs of the supported families.
    for (name, json) in [
        (
            "smollm2",
            r#"{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-05,"rope_theta":100000,"max_position_embeddings":8192,"tie_word_embeddings":true,"eos_token_id":2}"#,
        ),
        (
            "llama3",
            r#"{"model_type":"llama","vocab_size":128256,"hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,"max_position_embeddings":131072,"tie_word_embeddings":false,"rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}"#,
        ),
        (
            "qwen2",
            r#"{"model_type":"qwen2","vocab_size":151936,"hidden_size":896,"intermediate_size":4864,"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"tie_word_embeddings":true,"head_dim":64,"attention_bias":true}"#,
        ),
    ] {
        std::fs::write(dir("config").join(name), json).unwrap();
    }
    // hash files: both layouts, 1 and 2 networks per head, f32 and f16; from a 2-layer model.
    let llama = spotlight_llama::LlamaConfig::attention_shape(2, 2, 1, 32, 64);
    let device = Default::default();
    for (layouts, bits, name) in [
        (vec![Layout::Group], 0, "group"),
        (vec![Layout::Faithful], 64, "faithful-64bits"),
    ] {
        let t = Trainer::<Ad>::new(small_config(layouts.clone(), bits), "fuzz", &llama, &device)
            .unwrap();
        let f = t.hash_file(layouts[0]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        f.save(&a).unwrap();
        f.save_f16(&b).unwrap();
        std::fs::copy(&a, dir("hash_file").join(name)).unwrap();
        std::fs::copy(&b, dir("hash_file").join(format!("{name}-f16"))).unwrap();
    }
    // checkpoints: the fuzz target's own trainer, fresh and with a previous checkpoint kept.
    let t = spotlight_fuzz::targets::checkpoint_trainer();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("checkpoint.safetensors");
    t.save_checkpoint(&p).unwrap();
    std::fs::copy(&p, dir("checkpoint").join("step0")).unwrap();
    let (meta, tensors) = tensor_file::read(&p).unwrap();
    let mut meta = meta;
    meta.remove(tensor_file::CRC_KEY);
    tensor_file::write(&tmp.path().join("other"), &tensors, meta, true).unwrap();
    std::fs::copy(
        tmp.path().join("other"),
        dir("checkpoint").join("step0-f16"),
    )
    .unwrap();
}
