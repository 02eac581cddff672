//! `spotlight hash merge` on hashes of the REAL model trained on disjoint layer ranges (CPU, tiny
//! sizes): the merge equals one run over the union of the ranges, and files that do not fit
//! together are refused with one line naming the file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spotlight_train::HashFile;

fn spotlight(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spotlight"))
        .args(args)
        .output()
        .expect("binary runs")
}

/// Trains layers `layers` (group layout, 2 steps of 128-token windows) into `dir`.
fn train(text: &Path, dir: &Path, layers: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "train",
        "--backend",
        "cpu",
        "--text",
        text.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--steps",
        "2",
        "--seq-len",
        "128",
        "--queries",
        "16",
        "--pairs",
        "16",
        "--layout",
        "group",
        "--init",
        "rotation",
        "--layers",
        layers,
    ];
    args.extend_from_slice(extra);
    let out = spotlight(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("hash-group.safetensors")
}

#[test]
fn merged_layer_ranges_equal_one_run_and_misfits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    let para = "We the People of the United States, in Order to form a more perfect Union, establish \
                Justice, insure domestic Tranquility, provide for the common defence, promote the general \
                Welfare, and secure the Blessings of Liberty to ourselves and our Posterity. ";
    std::fs::write(text.join("a.txt"), para.repeat(8)).unwrap();
    let d = |n: &str| dir.path().join(n);
    let a = train(&text, &d("a"), "2..4", &[]);
    let b = train(&text, &d("b"), "4,5", &[]);
    let whole = train(&text, &d("whole"), "2..6", &[]);
    let merged = d("merged.safetensors");
    let out = spotlight(&[
        "hash",
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (m, w) = (
        HashFile::load(&merged).unwrap(),
        HashFile::load(&whole).unwrap(),
    );
    let (fa, fb) = (HashFile::load(&a).unwrap(), HashFile::load(&b).unwrap());
    assert_eq!(m.header.trained_layers, Some(vec![2, 3, 4, 5]));
    assert_eq!(m.header, w.header, "headers (training record included)");
    // Each layer comes bit for bit from the file that trained it (the others: the first's start).
    for (l, layer) in m.layers.iter().enumerate() {
        let from = if (4..6).contains(&l) { &fb } else { &fa };
        assert!(
            *layer == from.layers[l],
            "layer {l} not taken from its file"
        );
    }
    // And the join equals one run over the union: layers train independently (own optimiser
    // state and clipping, targets seeded by step and layer). CPU training is not bit-reproducible
    // from run to run (float sums in another order: differences of ~1e-7), so weights must agree
    // to 1e-5 — a layer taken from the wrong file or left at its start is ~1e-3 away (the 2
    // Adam steps of lr 1e-3 move weights by about that).
    let weights = |f: &HashFile, l: usize| -> Vec<f32> {
        let layer = &f.layers[l];
        let mut v = Vec::new();
        for net in std::iter::once(&layer.query).chain(layer.key.as_ref()) {
            for part in [&net.w1, &net.b1, &net.w2, &net.b2] {
                v.extend_from_slice(part);
            }
        }
        v
    };
    for l in 0..m.layers.len() {
        let (x, y) = (weights(&m, l), weights(&w, l));
        let differ = x.iter().zip(&y).filter(|(a, b)| a != b).count();
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 1e-5,
            "layer {l}: {differ} of {} weights differ from the single run (max {worst})",
            x.len()
        );
    }

    // The bound can fail: a trained layer is far from its start (layer 2 is untrained in b).
    let moved = weights(&m, 2)
        .iter()
        .zip(&weights(&fb, 2))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(moved > 1e-4, "training moved layer 2 by only {moved}");

    // Misfits: an overlap, a gap, another code length. Each one line naming the file.
    let overlap = train(&text, &d("overlap"), "3..5", &[]);
    let gap = train(&text, &d("gap"), "7", &[]);
    let bits = train(&text, &d("bits"), "4,5", &["--bits", "128"]);
    for (other, why) in [
        (&overlap, "layer 3 is also trained in"),
        (&gap, "layer 4 is trained in none of the files"),
        (&bits, "128 bits"),
    ] {
        let out = spotlight(&[
            "hash",
            "merge",
            a.to_str().unwrap(),
            other.to_str().unwrap(),
            "--out",
            d("refused.safetensors").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{other:?} merged");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(why), "{why:?} not in {err}");
        assert!(!d("refused.safetensors").exists(), "nothing written");
    }
}
