//! Bad input reaches the user as one line on stderr and a non-zero exit, never a panic.
//! Checkpoints here are SYNTHETIC (tiny random weights written by the test), except where the
//! real default model is needed to reach the check (context overflow).

use std::path::{Path, PathBuf};
use std::process::Command;

use spotlight_llama::gguf::{self, GgmlType, Value};
use spotlight_llama::names::hf_to_gguf;

const VOCAB: usize = 40;
const HIDDEN: usize = 32;
const FFN: usize = 64;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;

fn f32_bytes(n: usize, seed: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((((i * 31 + seed * 17) % 97) as f32 - 48.0) / 480.0).to_le_bytes())
        .collect()
}

/// All tensors of a tiny 1-layer llama, as (GGUF name, shape [out, in]).
fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let mut t = vec![
        ("model.embed_tokens.weight".to_string(), vec![VOCAB, HIDDEN]),
        ("model.norm.weight".to_string(), vec![HIDDEN]),
    ];
    for (f, shape) in [
        ("input_layernorm.weight", vec![HIDDEN]),
        ("post_attention_layernorm.weight", vec![HIDDEN]),
        ("self_attn.q_proj.weight", vec![q, HIDDEN]),
        ("self_attn.k_proj.weight", vec![kv, HIDDEN]),
        ("self_attn.v_proj.weight", vec![kv, HIDDEN]),
        ("self_attn.o_proj.weight", vec![HIDDEN, q]),
        ("mlp.gate_proj.weight", vec![FFN, HIDDEN]),
        ("mlp.up_proj.weight", vec![FFN, HIDDEN]),
        ("mlp.down_proj.weight", vec![HIDDEN, FFN]),
    ] {
        t.push((format!("model.layers.0.{f}"), shape));
    }
    t.into_iter()
        .map(|(hf, s)| (hf_to_gguf(&hf).unwrap(), s))
        .collect()
}

/// "t", the ten digits, "t1" (from the one merge), then fillers: enough for byte-level BPE to
/// encode prompts made of "t" and digits.
fn tiny_vocab(n: usize) -> Value {
    let mut v: Vec<String> = vec!["t".into()];
    v.extend((0..10).map(|d| d.to_string()));
    v.push("t1".into());
    v.extend((v.len()..n).map(|i| format!("f{i}")));
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// Writes a tiny synthetic GGUF; `edit` may change metadata and tensors before writing.
fn write_tiny(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(
        &mut Vec<(&'static str, Value)>,
        &mut Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
    ),
) -> PathBuf {
    let mut meta: Vec<(&'static str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", tiny_vocab(VOCAB)),
        (
            "tokenizer.ggml.merges",
            Value::Array(vec![Value::String("t 1".into())]),
        ),
    ];
    let mut tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)> = tiny_tensors()
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let count = s.iter().product();
            (n, s, GgmlType::F32, f32_bytes(count, i))
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

/// Runs `spotlight ARGS` and returns (exit code, stdout, stderr).
fn spotlight(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spotlight"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Asserts a failure with exactly one line on stderr containing `needle`.
fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, _, err) = spotlight(args);
    assert_ne!(code, 0, "{args:?} should fail; stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line on stderr, got:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {:?} does not mention {needle:?}",
        lines[0]
    );
}

fn info(path: &Path) -> Vec<String> {
    ["info", "--model", path.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn check(path: &Path, needle: &str) {
    let args = info(path);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_one_line_error(&refs, needle);
}

/// `spotlight generate --model PATH --prompt PROMPT` plus `extra` must fail with `needle`.
fn check_generate(path: &Path, prompt: &str, extra: &[&str], needle: &str) {
    let mut args = vec![
        "generate",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        prompt,
    ];
    args.extend_from_slice(extra);
    assert_one_line_error(&args, needle);
}

#[test]
fn the_tiny_synthetic_model_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "ok.gguf", |_, _| {});
    let (code, out, err) = spotlight(&["info", "--model", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 query / 2 KV, head_dim 8"), "{out}");
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "t.gguf", |_, _| {});
    let bytes = std::fs::read(&path).unwrap();
    for cut in [3, 20, bytes.len() / 3, bytes.len() - 5] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        check(&path, "truncated file");
    }
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "m.gguf", |_, _| {});
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[..4].copy_from_slice(b"GGML");
    std::fs::write(&path, &bytes).unwrap();
    check(&path, "not a GGUF file (magic \"GGML\"");
}

#[test]
fn unknown_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "u.gguf", |_, _| {});
    let mut bytes = std::fs::read(&path).unwrap();
    // The first tensor info follows the metadata: find its name, skip n_dims and dims, patch the type.
    let name = hf_to_gguf("model.embed_tokens.weight").unwrap();
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap()
        + name.len();
    let type_at = at + 4 + 2 * 8;
    assert_eq!(
        &bytes[type_at..type_at + 4],
        &0u32.to_le_bytes(),
        "test must patch the F32 type field"
    );
    bytes[type_at..type_at + 4].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    check(&path, "unsupported ggml type 99");
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "x.gguf", |_, t| {
        t.retain(|(n, ..)| n != "blk.0.ffn_up.weight")
    });
    check_generate(
        &path,
        "t1",
        &["--backend", "cpu", "--max-tokens", "2"],
        "tensor model.layers.0.mlp.up_proj.weight is missing",
    );
}

#[test]
fn shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "s.gguf", |_, t| {
        let e = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.0.ffn_down.weight")
            .unwrap();
        e.1 = vec![HIDDEN, FFN - 32];
        e.3 = f32_bytes(HIDDEN * (FFN - 32), 1);
    });
    check_generate(
        &path,
        "t1",
        &["--backend", "cpu", "--max-tokens", "2"],
        "expected shape [32, 64], found [32, 32]",
    );
}

#[test]
fn tokenizer_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "k.gguf", |m, _| {
        m.iter_mut()
            .find(|(k, _)| *k == "tokenizer.ggml.tokens")
            .unwrap()
            .1 = tiny_vocab(VOCAB + 5);
        m.push(("llama.vocab_size", Value::U32(VOCAB as u32)));
    });
    check(
        &path,
        "tokenizer has 45 tokens but the model's vocabulary has 40",
    );
}

#[test]
fn unknown_backend_and_missing_model() {
    assert_one_line_error(
        &["generate", "--backend", "tpu", "--prompt", "x"],
        "invalid value 'tpu'",
    );
    assert_one_line_error(
        &["info", "--model", "/nonexistent/model.gguf"],
        "no such file or directory",
    );
}

#[test]
fn cuda_without_gpu() {
    if spotlight_cli::backend::cuda_ready().is_ok() {
        eprintln!("a CUDA GPU is present: nothing to check here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "c.gguf", |_, _| {});
    check_generate(
        &path,
        "t1",
        &["--backend", "cuda"],
        "--backend cuda is not usable here",
    );
}

#[test]
fn prompt_over_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "o.gguf", |_, _| {});
    // "t1" repeated: one token each (the tiny vocabulary has no merges across tokens).
    let prompt = "t1".repeat(70);
    check_generate(
        &path,
        &prompt,
        &["--backend", "cpu", "--max-tokens", "1"],
        "exceeds the context of 64 tokens",
    );
}

#[test]
fn bad_training_flags_and_hash_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny(dir.path(), "t.gguf", |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    std::fs::write(text.join("a.txt"), "t1t1t1 t1 t2 t3").unwrap();
    let out = dir.path().join("run");
    let (m, t, o) = (
        model.to_str().unwrap(),
        text.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let train = |extra: &[&str], needle: &str| {
        let mut args = vec![
            "train",
            "--model",
            m,
            "--backend",
            "cpu",
            "--text",
            t,
            "--out",
            o,
        ];
        args.extend_from_slice(extra);
        assert_one_line_error(&args, needle);
    };
    let eval = |hash: &Path, needle: &str| {
        let h = hash.to_str().unwrap();
        let args = [
            "eval",
            "retrieval",
            "--model",
            m,
            "--backend",
            "cpu",
            "--hash",
            h,
            "--text",
            t,
        ];
        assert_one_line_error(&args, needle);
    };
    train(&["--steps", "0"], "must be positive");
    // head_dim 8: codes need d a multiple of 32.
    train(&["--seq-len", "8"], "head_dim");
    // Hash files: missing, not safetensors, truncated, made for another model.
    eval(&dir.path().join("missing.safetensors"), "hash file");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    eval(&garbage, "not a valid safetensors");
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors");
    let bytes = std::fs::read(&shipped).expect("the shipped hash file");
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    eval(&truncated, "hash file");
    eval(&shipped, "trained with model");
}

#[test]
fn bad_attention_flags_and_hash_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_tiny(dir.path(), "t.gguf", |_, _| {});
    let m = model.to_str().unwrap();
    let generate = |extra: &[&str], needle: &str| {
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--backend",
            "cpu",
            "--prompt",
            "t1",
            "--max-tokens",
            "2",
        ];
        args.extend_from_slice(extra);
        assert_one_line_error(&args, needle);
    };
    // No hash file exists for this model: spotlight needs one.
    generate(&["--attention", "spotlight"], "no hash weights");
    generate(
        &["--attention", "linear", "--linear-bits", "40"],
        "multiple of 32",
    );
    generate(&["--attention", "quest", "--quest-page", "0"], "quest-page");
    generate(
        &["--attention", "oracle", "--budget", "1.5"],
        "must be in [0, 1]",
    );
    let missing = dir.path().join("none.txt");
    assert_one_line_error(
        &[
            "generate",
            "--model",
            m,
            "--backend",
            "cpu",
            "--prompt-file",
            missing.to_str().unwrap(),
        ],
        "cannot read --prompt-file",
    );
    // Damaged hash files, and the shipped one, made for another model.
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    let g = garbage.to_str().unwrap();
    generate(
        &["--attention", "spotlight", "--hash", g],
        "not a valid safetensors",
    );
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors");
    let s = shipped.to_str().unwrap();
    generate(
        &["--attention", "spotlight", "--hash", s],
        "trained with model",
    );
    let fidelity = |extra: &[&str], needle: &str| {
        let mut args = vec!["eval", "fidelity", "--model", m, "--backend", "cpu"];
        args.extend_from_slice(extra);
        assert_one_line_error(&args, needle);
    };
    fidelity(&["--methods", "dense"], "dense is always the reference");
    fidelity(
        &["--methods", "oracle", "--budgets", "2"],
        "must be in [0, 1]",
    );
    fidelity(
        &["--methods", "spotlight", "--hash", g],
        "not a valid safetensors",
    );
}
