//! Bad input reaches the user as one line on stderr and a non-zero exit, never a panic.
//! Checkpoints here are SYNTHETIC (tiny random weights written by the test), except where the
//! real default model is needed to reach the check (context overflow).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::*;
use spotlight_llama::gguf::Value;
use spotlight_llama::names::hf_to_gguf;

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
    eval(
        &shipped,
        "trained with the weights of \"SmolLM2-135M-Instruct.Q4_1.gguf\"",
    );
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
        "trained with the weights of \"SmolLM2-135M-Instruct.Q4_1.gguf\"",
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

// ---- The reliability table (docs/reliability.md): each case below is one row. ----

type Ad = burn::backend::Autodiff<burn::backend::NdArray<f32>>;

/// The llama config of a tiny model of shape `d` (as `LlamaConfig::from_gguf` reads it).
fn config_of(d: Dims) -> spotlight_llama::LlamaConfig {
    spotlight_llama::LlamaConfig {
        vocab_size: VOCAB,
        hidden_size: d.hidden,
        intermediate_size: FFN,
        ..spotlight_llama::LlamaConfig::attention_shape(
            d.layers, d.heads, d.kv_heads, d.head_dim, 64,
        )
    }
}

/// An untrained hash file (group layout, `bits` per head) for a model named `model` of shape
/// `d`: valid in itself, so what a test changes is the only thing wrong.
fn hash_for(model: &str, d: Dims, bits: usize) -> spotlight_train::HashFile {
    let config = spotlight_train::TrainConfig {
        layouts: vec![spotlight_train::Layout::Group],
        steps: 1,
        seq_len: 32,
        bits,
        ..spotlight_train::TrainConfig::default()
    };
    spotlight_train::Trainer::<Ad>::new(config, model, &config_of(d), &Default::default())
        .unwrap()
        .hash_file(spotlight_train::Layout::Group)
        .unwrap()
}

/// `generate --attention spotlight --hash HASH` on `model` must fail with `needle`.
fn check_hash(model: &Path, hash: &Path, needle: &str) {
    check_generate(
        model,
        "t1",
        &[
            "--backend",
            "cpu",
            "--max-tokens",
            "2",
            "--attention",
            "spotlight",
            "--hash",
            hash.to_str().unwrap(),
        ],
        needle,
    );
}

/// `generate --attention spotlight --hash HASH` on `model` must succeed.
fn accepts_hash(model: &Path, hash: &Path) {
    let (code, _, err) = spotlight(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--backend",
        "cpu",
        "--prompt",
        "t1",
        "--max-tokens",
        "2",
        "--attention",
        "spotlight",
        "--hash",
        hash.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_valid_hash_for_the_tiny_model_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let hash = dir.path().join("ok.safetensors");
    hash_for("t32.gguf", TINY32, 0).save(&hash).unwrap();
    accepts_hash(&model, &hash);
}

#[test]
fn hash_file_for_another_model_layer_count_head_dim_or_bits() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let save = |name: &str, f: spotlight_train::HashFile| {
        let p = dir.path().join(name);
        f.save(&p).unwrap();
        p
    };
    // Another model (its file name differs).
    let other = save("other.safetensors", hash_for("other.gguf", TINY32, 0));
    check_hash(&model, &other, "trained with model \"other.gguf\"");
    // Another layer count.
    let one_layer = Dims {
        layers: 1,
        ..TINY32
    };
    let layers = save("layers.safetensors", hash_for("t32.gguf", one_layer, 0));
    check_hash(&model, &layers, "trained with layers 1, the model has 2");
    // Another head_dim (64 instead of 32).
    let wide = Dims {
        head_dim: 64,
        hidden: 128,
        ..TINY32
    };
    let head_dim = save("head_dim.safetensors", hash_for("t32.gguf", wide, 0));
    check_hash(
        &model,
        &head_dim,
        "trained with head_dim 64, the model has 32",
    );
    // Other weights under the model's own name: where the file records the weights'
    // fingerprint, it decides.
    let fingerprint = spotlight_llama::Checkpoint::open(&model)
        .unwrap()
        .fingerprint()
        .unwrap();
    let mut stranger = hash_for("t32.gguf", TINY32, 0);
    stranger.header.model_fingerprint = Some("w1:0123456789abcdef".into());
    let stranger = save("stranger.safetensors", stranger);
    check_hash(
        &model,
        &stranger,
        &format!("trained with the weights of \"t32.gguf\" (fingerprint w1:0123456789abcdef), the model has the fingerprint {fingerprint}"),
    );
    // The same weights under another file name are the same model.
    let mut ours = hash_for("t32.gguf", TINY32, 0);
    ours.header.model_fingerprint = Some(fingerprint);
    let ours = save("ours.safetensors", ours);
    let renamed = dir.path().join("renamed.gguf");
    std::fs::copy(&model, &renamed).unwrap();
    accepts_hash(&renamed, &ours);
    // Bits that are no multiple of head_dim: the header contradicts itself.
    let mut bad_bits = hash_for("t32.gguf", TINY32, 64);
    bad_bits.header.bits = 48;
    let bits = save("bits.safetensors", bad_bits);
    check_hash(&model, &bits, "inconsistent header");
}

#[test]
fn hash_file_truncated_at_every_section() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let good = dir.path().join("good.safetensors");
    hash_for("t32.gguf", TINY32, 0).save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let cut_file = dir.path().join("cut.safetensors");
    // Inside the length field, inside the JSON header, right after it, inside the first tensor,
    // inside the last one, one byte short.
    for cut in [
        4,
        8 + header / 2,
        8 + header,
        8 + header + 10,
        bytes.len() - 100,
        bytes.len() - 1,
    ] {
        std::fs::write(&cut_file, &bytes[..cut]).unwrap();
        check_hash(&model, &cut_file, "cut.safetensors");
    }
}

#[test]
fn out_at_a_run_of_another_config_refuses_and_overwrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    std::fs::write(text.join("a.txt"), "t1t1t1 t1 t2 t3 ".repeat(40)).unwrap();
    let out = dir.path().join("run");
    let train = |seed: &str| {
        vec![
            "train".to_string(),
            "--model".into(),
            model.display().to_string(),
            "--backend".into(),
            "cpu".into(),
            "--text".into(),
            text.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--steps".into(),
            "2".into(),
            "--seq-len".into(),
            "48".into(),
            "--queries".into(),
            "8".into(),
            "--pairs".into(),
            "8".into(),
            "--seed".into(),
            seed.into(),
        ]
    };
    let args = train("0");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, err) = spotlight(&refs);
    assert_eq!(code, 0, "the first run trains: {err}");
    let before = snapshot(&out);
    assert!(before
        .iter()
        .any(|(p, _)| p.ends_with("checkpoint.safetensors")));
    let args = train("1");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_one_line_error(&refs, "written with other training flags");
    assert!(
        before == snapshot(&out),
        "a refused run changed {}",
        out.display()
    );
}

#[test]
fn unwritable_output_directory() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    std::fs::write(text.join("a.txt"), "t1t1t1 t1 t2 t3 ".repeat(40)).unwrap();
    // A file where a directory should be: unwritable even for root.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("run");
    assert_one_line_error(
        &[
            "train",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
            "--text",
            text.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "1",
        ],
        "a-file",
    );
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
}

#[test]
fn text_that_is_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    std::fs::write(text.join("latin1.txt"), b"caf\xe9 t1 t2").unwrap();
    let m = model.to_str().unwrap();
    assert_one_line_error(
        &[
            "train",
            "--model",
            m,
            "--backend",
            "cpu",
            "--text",
            text.to_str().unwrap(),
            "--out",
            dir.path().join("run").to_str().unwrap(),
        ],
        "latin1.txt: stream did not contain valid UTF-8",
    );
    let prompt = text.join("latin1.txt");
    assert_one_line_error(
        &[
            "generate",
            "--model",
            m,
            "--backend",
            "cpu",
            "--prompt-file",
            prompt.to_str().unwrap(),
        ],
        "cannot read --prompt-file",
    );
}

#[test]
fn empty_prompt_and_zero_max_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "e.gguf", |_, _| {});
    check_generate(&path, "", &["--backend", "cpu"], "--prompt is empty");
    check_generate(
        &path,
        "t1",
        &["--backend", "cpu", "--max-tokens", "0"],
        "--max-tokens must be at least 1",
    );
}

#[test]
fn fractions_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    std::fs::write(text.join("a.txt"), "t1 t2 ".repeat(40)).unwrap();
    let (m, t) = (model.to_str().unwrap(), text.to_str().unwrap());
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    for (flag, needle) in [
        ("--top-fraction=1.5", "top fraction 1.5 is not in (0, 1)"),
        (
            "--near-fraction=-0.1",
            "near-miss fraction -0.1 is not in [0, 1]",
        ),
        ("--hard-fraction=2", "hard-negative fraction 2 is not in"),
    ] {
        assert_one_line_error(
            &[
                "train",
                "--model",
                m,
                "--backend",
                "cpu",
                "--text",
                t,
                "--out",
                o,
                flag,
            ],
            needle,
        );
    }
    assert!(!out.exists(), "a refused run created {o}");
    check_generate(
        &model,
        "t1",
        &["--backend", "cpu", "--attention", "oracle", "--budget=-0.5"],
        "must be in [0, 1]",
    );
}

/// An HF directory of the tiny model: config.json, tokenizer.json and the weights as
/// `model.safetensors`; `edit` may change the tensors first.
fn write_hf_dir(dir: &Path, edit: impl FnOnce(&mut spotlight_train::tensor_file::Tensors)) {
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "model_type": "llama", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": 1, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 64, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let Value::Array(tokens) = tiny_vocab(VOCAB) else {
        unreachable!()
    };
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str().unwrap().to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false,
        "trim_offsets": true, "use_regex": true}, "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": ["t 1"]}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let mut tensors: spotlight_train::tensor_file::Tensors = tiny_tensors(TINY)
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let v = f32_bytes(s.iter().product(), i)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, (s, v))
        })
        .collect();
    edit(&mut tensors);
    spotlight_train::tensor_file::write(
        &dir.join("model.safetensors"),
        &tensors,
        Default::default(),
        false,
    )
    .unwrap();
}

#[test]
fn the_tiny_hf_directory_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    write_hf_dir(&hf, |_| {});
    let (code, out, err) = spotlight(&["info", "--model", hf.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("4 query / 2 KV, head_dim 8"), "{out}");
}

#[test]
fn shard_index_naming_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    write_hf_dir(&hf, |_| {});
    std::fs::rename(
        hf.join("model.safetensors"),
        hf.join("model-00001-of-00002.safetensors"),
    )
    .unwrap();
    let mut map = serde_json::Map::new();
    for (i, (name, _)) in tiny_tensors(TINY).iter().enumerate() {
        let shard = if i < 5 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(name.clone(), serde_json::json!(shard));
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(hf.join("model.safetensors.index.json"), index.to_string()).unwrap();
    check(
        &hf,
        "names shard model-00002-of-00002.safetensors, which is missing",
    );
}

#[test]
fn tokenizer_json_vocabulary_does_not_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("hf");
    write_hf_dir(&hf, |_| {});
    let config = std::fs::read_to_string(hf.join("config.json")).unwrap();
    let config = config.replace("\"vocab_size\":40", "\"vocab_size\":36");
    std::fs::write(hf.join("config.json"), config).unwrap();
    check(
        &hf,
        "tokenizer has 40 tokens but the model's vocabulary has 36",
    );
}

#[test]
fn nan_and_inf_weights_are_refused_at_load_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "nan.gguf", |_, t| {
        let e = t
            .iter_mut()
            .find(|(n, ..)| n == "blk.0.ffn_up.weight")
            .unwrap();
        e.3[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    check_generate(
        &path,
        "t1",
        &["--backend", "cpu", "--max-tokens", "2"],
        "tensor model.layers.0.mlp.up_proj.weight holds NaN at index 10",
    );
    let hf = dir.path().join("hf");
    write_hf_dir(&hf, |t| {
        t.get_mut("model.norm.weight").unwrap().1[3] = f32::INFINITY;
    });
    check_generate(
        &hf,
        "t1",
        &["--backend", "cpu", "--max-tokens", "2"],
        "tensor model.norm.weight holds inf at index 3",
    );
}

#[test]
fn wgpu_without_a_driver() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny(dir.path(), "w.gguf", |_, _| {});
    // No Vulkan driver and no other wgpu backend: what a machine without GPU drivers sees.
    let out = Command::new(env!("CARGO_BIN_EXE_spotlight"))
        .args([
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--prompt",
            "t1",
        ])
        .args(["--backend", "wgpu", "--max-tokens", "2"])
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("--backend wgpu is not usable here"),
        "{err}"
    );
}
