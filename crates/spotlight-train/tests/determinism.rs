//! Hash training on the CPU is a function of its inputs, to the bit: the same steps twice in one
//! process and in two processes give the same weights and the same gradient norms (the
//! kill-anywhere test of the CLI relies on it). SYNTHETIC q/k.
//!
//! The test binary installs the trainer's 64-byte-aligning allocator, as the `spotlight` binary
//! does: with the system allocator the weights differ by an ulp from one process to the next
//! (see `spotlight_train::aligned_alloc`).

use burn::backend::{ndarray::NdArray, Autodiff};
use burn::tensor::{Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_llama::{LayerQk, LlamaConfig};
use spotlight_train::targets::TargetConfig;
use spotlight_train::{Aligned64, Layout, TrainConfig, TrainOps, Trainer};

#[global_allocator]
static ALLOC: Aligned64 = Aligned64;

type Cpu = NdArray<f32>;

fn qk(c: &LlamaConfig, n: usize, step: usize) -> Vec<LayerQk<Cpu>> {
    let mut rng = StdRng::seed_from_u64(7 + step as u64);
    let mut t = |h: usize| {
        let v: Vec<f32> = (0..h * n * c.head_dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        Tensor::<Cpu, 3>::from_data(TensorData::new(v, [h, n, c.head_dim]), &Default::default())
    };
    (0..c.num_hidden_layers)
        .map(|_| LayerQk {
            q: t(c.num_attention_heads),
            k: t(c.num_key_value_heads),
        })
        .collect()
}

/// The bits of every weight and gradient norm after three steps, as a checksum and the first
/// gradient norms (for the failure message).
fn fingerprint(ops: TrainOps) -> (u64, Vec<f64>) {
    let c = LlamaConfig::attention_shape(2, 6, 2, 32, 256);
    let config = TrainConfig {
        steps: 3,
        seq_len: 128,
        targets: TargetConfig {
            queries: 32,
            pairs: 32,
            ..TargetConfig::default()
        },
        ..TrainConfig::default()
    };
    let mut t = Trainer::<Autodiff<Cpu>>::new(config, "tiny", &c, &Default::default()).unwrap();
    t.ops = Some(ops);
    let mut norms = Vec::new();
    for s in 0..3 {
        norms.extend(
            t.train_step(&qk(&c, 128, s))
                .unwrap()
                .iter()
                .map(|r| r.grad_norm),
        );
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bits: u64| {
        h ^= bits;
        h = h.wrapping_mul(0x100_0000_01b3);
    };
    for layout in Layout::ALL {
        for l in t.hash_file(layout).unwrap().layers {
            for w in std::iter::once(&l.query).chain(l.key.as_ref()) {
                for part in [&w.w1, &w.b1, &w.w2, &w.b2] {
                    part.iter().for_each(|x| eat(x.to_bits() as u64));
                }
            }
        }
    }
    norms.iter().for_each(|x| eat(x.to_bits()));
    (h, norms)
}

#[test]
fn same_steps_same_bits_in_one_process() {
    for ops in [TrainOps::Custom, TrainOps::TensorOps] {
        let (a, na) = fingerprint(ops);
        let (b, nb) = fingerprint(ops);
        assert_eq!(a, b, "{ops:?}: gradient norms {na:?} vs {nb:?}");
    }
}

/// The child of [`same_steps_same_bits_in_two_processes`]: prints its fingerprints.
#[test]
#[ignore = "run by same_steps_same_bits_in_two_processes"]
fn fingerprint_child() {
    for ops in [TrainOps::Custom, TrainOps::TensorOps] {
        println!("FINGERPRINT {ops:?} {:016x}", fingerprint(ops).0);
    }
}

#[test]
fn same_steps_same_bits_in_two_processes() {
    let run = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["fingerprint_child", "--exact", "--ignored", "--nocapture"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("FINGERPRINT"))
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 2, "child output:\n{text}");
        lines
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    let mine: Vec<String> = [TrainOps::Custom, TrainOps::TensorOps]
        .iter()
        .map(|&ops| format!("FINGERPRINT {ops:?} {:016x}", fingerprint(ops).0))
        .collect();
    assert_eq!(a, mine, "a child process trained other bits than this one");
}
