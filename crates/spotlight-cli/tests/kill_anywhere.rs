//! Kill anywhere: a short CPU training run SIGKILLed 20 times, resumed after each kill, ends with
//! hash files and a training log identical, byte for byte, to an uninterrupted run's. SYNTHETIC
//! tiny model (head_dim 32, two layers) and a tiny text.
//!
//! Kill moments: the i-th kill waits until the run has logged a seeded target step spread over
//! the whole run, then a seeded random share of up to 1.5 steps' time (a step's log rows are
//! written just before its checkpoint, so many kills land in a checkpoint write); a target the
//! resumed run has already passed kills it while it loads the model.
//!
//! Bit-identical results across processes rest on the binary's 64-byte-aligning allocator
//! (`spotlight_train::aligned_alloc`): with the system allocator two runs differ by an ulp.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const KILLS: usize = 20;
const STEPS: usize = 40;

fn train_command(model: &Path, text: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spotlight"));
    c.args([
        "train",
        "--backend",
        "cpu",
        "--steps",
        &STEPS.to_string(),
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

/// Steps whose rows are complete in `dir`'s training log (0 before the log exists).
fn logged_steps(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("train_log.csv")).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |s| s + 1)
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

    let step_time = whole / STEPS as u32;
    let killed = dir.path().join("killed");
    let mut seed = 21u64;
    let mut kills = 0;
    let mut attempts = 0;
    let mut at_steps = Vec::new();
    let mut torn_checkpoints = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(attempts < 200, "only {kills} kills in 200 attempts");
        let target = kills * STEPS / KILLS + (next(&mut seed) % 2) as usize;
        let delay = step_time.mul_f64((next(&mut seed) % 1000) as f64 / 1000.0 * 1.5);
        let mut child = train_command(&model, &text, &killed).spawn().unwrap();
        while logged_steps(&killed) < target && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
            at_steps.push(logged_steps(&killed));
            torn_checkpoints += usize::from(killed.join("checkpoint.safetensors.tmp").exists());
        }
        child.wait().unwrap();
    }
    at_steps.dedup();
    assert!(
        at_steps.len() >= KILLS / 2,
        "the kills did not spread over the run: killed at logged steps {at_steps:?}"
    );
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
        "{kills} kills in {attempts} attempts at logged steps {at_steps:?}, {torn_checkpoints} \
         during a checkpoint write; the uninterrupted run took {:.1} s",
        whole.as_secs_f64()
    );
}
