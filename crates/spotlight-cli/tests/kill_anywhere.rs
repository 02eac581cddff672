//! Kill anywhere: a short CPU training run SIGKILLed at 20+ seeded random moments (model
//! loading, training steps, checkpoint and hash-file writes alike), resumed after each kill,
//! ends with hash files and a training log identical, byte for byte, to an uninterrupted run's.
//! SYNTHETIC tiny model (head_dim 32, two layers) and a tiny text.
//!
//! Ignored for now: CPU training is not bit-reproducible from one process to the next, killed or
//! not, so "identical" cannot hold yet. Measured (`spotlight train --backend cpu --layers 2
//! --steps 2 --seq-len 256` twice on SmolLM2): step 1's gradient norm is 96.366234 in some runs
//! and 96.366241 in others — the same two values with RAYON_NUM_THREADS=1 and
//! MATMUL_NUM_THREADS=1, and with address-space randomisation off (`setarch -R`); with the
//! process's random seed fixed (getrandom/getentropy answering a constant through LD_PRELOAD)
//! every run is bit-identical, threads and ASLR back on. So the cause is iteration order of a
//! randomly seeded hash map or set (std's RandomState or hashbrown's) feeding the order of float
//! sums — in Burn's autodiff graph bookkeeping as far as our code is concerned (no hash map is
//! iterated in our training path). Run it with `--ignored` once that order is fixed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

const KILLS: usize = 20;

fn train_command(model: &Path, text: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spotlight"));
    c.args([
        "train",
        "--backend",
        "cpu",
        "--steps",
        "24",
        "--checkpoint-every",
        "1",
    ])
    .args([
        "--seq-len",
        "48",
        "--queries",
        "8",
        "--pairs",
        "8",
        "--seed",
        "3",
    ])
    .arg("--model")
    .arg(model)
    .arg("--text")
    .arg(text)
    .arg("--out")
    .arg(out)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// splitmix64 from a fixed seed: the kill moments are the same on every run of the test.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn results(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    [
        "hash-group.safetensors",
        "hash-faithful.safetensors",
        "train_log.csv",
    ]
    .iter()
    .map(|f| {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (PathBuf::from(f), bytes)
    })
    .collect()
}

#[test]
#[ignore = "CPU training is not yet bit-reproducible across processes (hash-seeded order); see the module docs"]
fn training_killed_anywhere_resumes_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), "t32.gguf", TINY32, |_, _| {});
    let text = dir.path().join("text");
    std::fs::create_dir_all(&text).unwrap();
    let words: Vec<String> = (0..600).map(|i| format!("t{} ", i % 10)).collect();
    std::fs::write(text.join("a.txt"), words.concat()).unwrap();

    let straight = dir.path().join("straight");
    let t0 = Instant::now();
    let status = train_command(&model, &text, &straight).status().unwrap();
    assert!(status.success(), "the uninterrupted run failed");
    let whole = t0.elapsed();

    // Each attempt lives a random share of up to a fifth of the whole run: a few steps at most,
    // so the kills spread over the run (a restart costs the model load again).
    let killed = dir.path().join("killed");
    let mut seed = 21u64;
    let mut kills = 0;
    let mut attempts = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(attempts < 200, "only {kills} kills in 200 attempts");
        let delay = whole.mul_f64((next(&mut seed) % 1000) as f64 / 1000.0 / 5.0);
        let mut child = train_command(&model, &text, &killed).spawn().unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    let status = train_command(&model, &text, &killed).status().unwrap();
    assert!(status.success(), "the resumed run failed");
    let (a, b) = (results(&straight), results(&killed));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            x == y,
            "{} differs after {kills} kills ({attempts} attempts)",
            name.display()
        );
    }
    eprintln!(
        "{kills} kills in {attempts} attempts; the uninterrupted run took {:.1} s",
        whole.as_secs_f64()
    );
}
