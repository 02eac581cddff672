//! The shipped hash of the default model, on the REAL model and held-out text (Moby-Dick), on the
//! CPU: the trained hash must retrieve the true top keys far better than the untrained one.
//! Small (one 512-token window, 16 query rows), so it runs in CI; the full evaluation is
//! `benches/results/retrieval_quality.json`.

use std::path::Path;
use std::process::Command;

#[test]
fn shipped_hash_beats_the_untrained_hash_on_held_out_text() {
    let hash = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/hash/SmolLM2-135M-Instruct.Q4_1.gguf.group.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("q.json");
    let out = Command::new(env!("CARGO_BIN_EXE_spotlight"))
        .args([
            "eval",
            "retrieval",
            "--backend",
            "cpu",
            "--hash",
            hash.to_str().unwrap(),
            "--tokens",
            "512",
            "--windows",
            "1",
            "--queries",
            "16",
            "--budgets",
            "0.05",
            "--linear-bits",
            "0",
            "--quest-page",
            "0",
            "--json",
            json.to_str().unwrap(),
        ])
        .output()
        .expect("binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let row = |method: &str, layout: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == method && r["layout"] == layout)
            .unwrap_or_else(|| panic!("no row {method} {layout}"))
            .clone()
    };
    let (trained, untrained, oracle) = (
        row("spotlight", "group"),
        row("untrained", "group"),
        row("oracle", "per-head"),
    );
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    eprintln!("trained {trained}\nuntrained {untrained}");
    // At full scale (benches/results) the gaps are 0.18 IoU and 0.37 mass; demand a clear margin.
    assert!(
        f(&trained, "iou") > f(&untrained, "iou") + 0.05,
        "IoU {trained} vs {untrained}"
    );
    assert!(
        f(&trained, "mass_recall") > f(&untrained, "mass_recall") + 0.1,
        "mass {trained} vs {untrained}"
    );
    assert!(f(&oracle, "mass_recall") >= f(&trained, "mass_recall"));
    assert_eq!(
        f(&trained, "kv_read"),
        1.0,
        "group selections read each K/V row once"
    );
}
