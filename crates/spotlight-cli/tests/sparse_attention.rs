//! Sparse attention on the REAL model and held-out text (Moby-Dick), on the CPU: the shipped hash
//! inside the model, against dense and the untrained hash; `spotlight eval fidelity` and
//! `spotlight generate --attention` end to end. Small (512-token windows) so it runs in CI; the
//! full evaluation is `benches/results/fidelity.json`.

use std::path::PathBuf;
use std::process::Command;

use burn::backend::{Autodiff, NdArray};
use spotlight_cli::attention_args::{heads, selection};
use spotlight_cli::{assets, model_args};
use spotlight_kernels::Budget;
use spotlight_llama::{perplexity, SelectRows};
use spotlight_train::quality::Method;
use spotlight_train::{HashFile, Layout, TrainConfig, Trainer};

type Cpu = NdArray<f32>;

fn shipped_hash() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors")
}

fn moby_tokens(tok: &spotlight_llama::Tokenizer, start: usize, len: usize) -> Vec<u32> {
    assets::ensure(&assets::MOBY_DICK, &mut |m| eprintln!("{m}")).unwrap();
    let text = std::fs::read_to_string(assets::moby_dick_path()).unwrap();
    tok.encode(&text, false).unwrap()[start..start + len].to_vec()
}

/// Teacher-forced perplexity on 512 held-out tokens with every row selected at a 10% budget:
/// the trained hash must lose less to dense than the untrained one, and a full budget is dense.
#[test]
fn shipped_hash_keeps_perplexity_closer_to_dense_than_the_untrained_hash() {
    assets::ensure(&assets::SMOLLM2, &mut |m| eprintln!("{m}")).unwrap();
    let path = assets::default_model_path();
    let device = Default::default();
    let m = model_args::load::<Cpu>(&path, Some(512), &device).unwrap();
    let c = &m.config;
    let tokens = moby_tokens(&m.tokenizer, 20_000, 512);
    let ppl = |method: Option<&Method>, fraction: f64| {
        let sel = method.map(|method| {
            let budget = Budget {
                fraction,
                ..Budget::default()
            };
            selection::<Cpu>(method, budget, SelectRows::Decode, c, &device).unwrap()
        });
        let (nll, n) =
            perplexity::window_nll(&m.model, &tokens, perplexity::DEFAULT_CHUNK, sel.as_ref())
                .unwrap();
        (nll / n as f64).exp()
    };
    let model_id = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let trained = HashFile::load(&shipped_hash()).unwrap();
    let fingerprint = spotlight_llama::Checkpoint::open(&path)
        .unwrap()
        .fingerprint()
        .unwrap();
    trained
        .check_model(model_id, Some(&fingerprint), c)
        .unwrap();
    let untrained = Trainer::<Autodiff<Cpu>>::new(TrainConfig::default(), model_id, c, &device)
        .unwrap()
        .hash_file(Layout::Group)
        .unwrap();
    let hash = |name: &str, file: HashFile| Method::Hash {
        name: name.into(),
        file,
    };
    let (trained, untrained) = (hash("trained", trained), hash("untrained", untrained));
    let dense = ppl(None, 1.0);
    let full = ppl(Some(&trained), 1.0);
    let ours = ppl(Some(&trained), 0.1);
    let init = ppl(Some(&untrained), 0.1);
    eprintln!(
        "dense {dense:.3}  full budget {full:.3}  trained 10% {ours:.3}  untrained 10% {init:.3}"
    );
    assert!(
        (full - dense).abs() < 1e-4 * dense,
        "a full budget must be dense: {full} vs {dense}"
    );
    assert!(ours > dense, "10% of 512 keys must change something");
    assert!(
        ours - dense < 0.5 * (init - dense),
        "trained {ours} must lose less than half of what untrained {init} loses to dense {dense}"
    );
    // Sanity: the hash is wired into the same heads as the model.
    assert_eq!(heads(c).q_heads, c.num_attention_heads);
}

/// Runs the `spotlight` binary; it must succeed. Returns its stderr.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_spotlight"))
        .args(args)
        .output()
        .expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

#[test]
fn eval_fidelity_and_generate_with_each_attention() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("fid.json");
    run_ok(&[
        "eval",
        "fidelity",
        "--backend",
        "cpu",
        "--tasks",
        "ppl,passkey",
        "--ppl-contexts",
        "256",
        "--ppl-windows",
        "1",
        "--contexts",
        "256",
        "--depths",
        "2",
        "--needles",
        "1",
        "--methods",
        "spotlight,quest",
        "--budgets",
        "0.1",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // 2 methods × 1 budget × (ppl + passkey), each against its dense score.
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in rows {
        assert!(r["score"].as_f64().unwrap().is_finite());
        assert!(r["dense_score"].as_f64().unwrap().is_finite());
    }
    let aux = dir.path().join("fid");
    for f in ["rows.csv", "trials.csv", "ppl.png", "passkey_heatmap.png"] {
        assert!(aux.join(f).is_file(), "{f} missing");
    }
    // --merge keeps rows the new run does not redo.
    run_ok(&[
        "eval",
        "fidelity",
        "--backend",
        "cpu",
        "--tasks",
        "ppl",
        "--ppl-contexts",
        "256",
        "--ppl-windows",
        "1",
        "--methods",
        "oracle",
        "--budgets",
        "0.1",
        "--merge",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 5);
    assert_eq!(report["commands"].as_array().unwrap().len(), 2);
    // --replot redraws every plot from the report and the trials, without the model.
    for f in std::fs::read_dir(&aux).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(f).unwrap();
        }
    }
    run_ok(&[
        "eval",
        "fidelity",
        "--replot",
        "--json",
        json.to_str().unwrap(),
    ]);
    for f in ["ppl.png", "passkey_heatmap.png", "passkey_depth_dense.png"] {
        assert!(aux.join(f).is_file(), "{f} not redrawn");
    }

    // Every attention generates, and reports what share of the cache it read.
    let prompt = dir.path().join("prompt.txt");
    std::fs::write(
        &prompt,
        "It was the best of times, it was the worst of times, ".repeat(20),
    )
    .unwrap();
    // By default generation attends densely below 32K tokens; --dense-below 0 selects from the
    // first token past the budget.
    let generate = |attention: &str, dense_below: Option<&str>| {
        let mut args = vec![
            "generate",
            "--backend",
            "cpu",
            "--attention",
            attention,
            "--prompt-file",
            prompt.to_str().unwrap(),
            "--max-tokens",
            "3",
            "--temperature",
            "0",
        ];
        if let Some(n) = dense_below {
            args.extend(["--dense-below", n]);
        }
        run_ok(&args)
    };
    let default = generate("spotlight", None);
    assert!(
        default.contains("dense below 32768 tokens") && default.contains("read 100.0%"),
        "{default}"
    );
    for attention in ["dense", "spotlight", "linear", "quest", "oracle"] {
        let err = generate(attention, Some("0"));
        let share = err
            .lines()
            .find(|l| l.starts_with("[attention]"))
            .unwrap_or_else(|| panic!("{attention}: no attention line in {err}"));
        if attention == "dense" {
            assert!(share.contains("read 100.0%"), "{share}");
        } else {
            assert!(
                !share.contains("read 100.0%"),
                "{attention} read everything: {share}"
            );
        }
    }
}

/// The shipped hash follows the model's weights, not its file name: a renamed copy of the default
/// GGUF still decodes with Spotlight Attention by default.
#[test]
fn a_renamed_model_keeps_its_shipped_hash() {
    let dir = tempfile::tempdir().unwrap();
    let renamed = dir.path().join("my-model.gguf");
    std::fs::copy(assets::default_model_path(), &renamed).unwrap();
    let err = run_ok(&[
        "generate",
        "--backend",
        "cpu",
        "--model",
        renamed.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "2",
        "--temperature",
        "0",
    ]);
    assert!(err.contains("spotlight-group"), "{err}");
}
