//! `spotlight bench linear`: the decode linear kernel (y = x·Wᵀ, bf16 weights, m ≤ 16 rows) at the
//! projection shapes of Llama-3-8B and SmolLM2, as GB/s of weights streamed next to the copy rate
//! measured in the same run. Same timing method as `bench retrieval`.

use std::path::PathBuf;

use cubecl::prelude::*;
use cubecl::server::Handle;
use half::bf16;
use serde::Serialize;
use spotlight_kernels::device::read_f32;
use spotlight_kernels::fill::random_uniform;
use spotlight_kernels::linear::{linear_with, Epilogue, Kernel, Prologue, Tiling};
use spotlight_kernels::linear_mma::{self, MmaTiling};
use spotlight_kernels::reference;

use crate::backend::BackendKind;
use crate::bench::{command_output, device_name, git_commit, median, write_report};
use crate::bench_retrieval::{copy_gbps, time, REPS, ROTATE_BYTES};
use crate::error::{CliError, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct LinearBenchArgs {
    /// Rows (tokens in flight).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub rows: Vec<usize>,
    /// Projections as name:in:out.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "llama3-8b.qkv:4096:6144,llama3-8b.qo:4096:4096,llama3-8b.kv:4096:1024,llama3-8b.gate_up:4096:14336,llama3-8b.down:14336:4096,smollm2.qkv:576:960,smollm2.qo:576:576,smollm2.kv:576:192,smollm2.gate_up:576:1536,smollm2.down:1536:576"
    )]
    pub shapes: Vec<String>,
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Kernels tried per shape and row count: CUDA cores as COLSxIN_FLIGHT (columns per plane x
    /// loads in flight), tensor cores as mmaTILESxSPLITxIN_FLIGHT (16-column tiles per warp x
    /// warps per tile x chunks in flight). The default for the row count (what the decoder
    /// uses) is always run and flagged.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x8,2x4,4x2,mma1x8x2,mma2x8x1,mma1x16x1,mma1x16x2,mma1x16x4,mma2x16x1,mma1x32x1,mma1x32x2"
    )]
    pub tilings: Vec<String>,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    k: usize,
    n: usize,
    m: usize,
    /// CUDA cores: columns per plane x loads in flight; tensor cores: mma + tiles per warp x
    /// warps per tile x chunks in flight
    tiling: String,
    /// The tiling the decoder uses for this row count.
    default_tiling: bool,
    weight_bytes: usize,
    us: f64,
    gbps: f64,
    fraction_of_copy: f64,
    verified_against_reference: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    bench: &'static str,
    command: String,
    device: String,
    commit: String,
    date: String,
    copy_gbps: f64,
    weights: &'static str,
    note: &'static str,
    rows: Vec<Row>,
}

fn parse_tiling(s: &str) -> Result<Kernel> {
    let bad = || {
        CliError::Usage(format!(
            "tiling {s:?}: expected COLSxIN_FLIGHT (each 1..=8) or mmaTILESxSPLITxIN_FLIGHT"
        ))
    };
    let numbers: Vec<usize> = s
        .trim_start_matches("mma")
        .split('x')
        .map(|v| v.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    match (s.starts_with("mma"), &numbers[..]) {
        (false, &[cols, in_flight]) if (1..=8).contains(&cols) && (1..=8).contains(&in_flight) => {
            Ok(Kernel::Planes(Tiling { cols, in_flight }))
        }
        (true, &[tiles, split, in_flight]) => {
            let t = MmaTiling {
                tiles,
                split,
                in_flight,
            };
            t.check()
                .map_err(|e| CliError::Usage(format!("tiling {s:?}: {e}")))?;
            Ok(Kernel::Mma(t))
        }
        _ => Err(bad()),
    }
}

fn tiling_name(kernel: Kernel) -> String {
    match kernel {
        Kernel::Planes(t) => format!("{}x{}", t.cols, t.in_flight),
        Kernel::Mma(t) => format!("mma{}x{}x{}", t.tiles, t.split, t.in_flight),
    }
}

fn parse(s: &str) -> Result<(String, usize, usize)> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts[..] {
        [name, k, n] => match (k.parse::<usize>(), n.parse::<usize>()) {
            (Ok(k), Ok(n)) if k > 0 && n > 0 => Ok((name.to_string(), k, n)),
            _ => Err(CliError::Usage(format!(
                "shape {s:?}: sizes must be positive integers"
            ))),
        },
        _ => Err(CliError::Usage(format!(
            "shape {s:?}: expected name:in:out"
        ))),
    }
}

pub fn run(args: LinearBenchArgs) -> Result<()> {
    if args.runs == 0
        || args
            .rows
            .iter()
            .any(|&m| m == 0 || m > spotlight_kernels::linear::MAX_ROWS)
    {
        return Err(CliError::Usage(
            "--runs ≥ 1 and rows in 1..=16 are required".into(),
        ));
    }
    let tilings = args
        .tilings
        .iter()
        .map(|t| parse_tiling(t))
        .collect::<Result<Vec<_>>>()?;
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse(s))
        .collect::<Result<Vec<_>>>()?;
    crate::backend::cuda_ready()
        .map_err(|why| CliError::Backend(format!("--backend cuda is not usable here: {why}")))?;
    let client = cubecl::cuda::CudaRuntime::client(&Default::default());
    let mma = linear_mma::supported(&client);
    if !mma {
        eprintln!("no bf16 tensor-core MMA on this device: mma tilings skipped");
    }
    let gbps = copy_gbps(&client, 1024, args.runs);
    eprintln!("copy: {gbps:.0} GB/s (read + write)");
    let mut rows = Vec::new();
    for (name, k, n) in &shapes {
        let (k, n) = (*k, *n);
        let bytes = 2 * k * n;
        let copies = ROTATE_BYTES.div_ceil(bytes).clamp(1, 64);
        let weights: Vec<Handle> = (0..copies)
            .map(|i| random_uniform::<_, bf16>(&client, n * k, 10 + i as u32))
            .collect();
        for &m in &args.rows {
            let x = random_uniform::<_, f32>(&client, m * k, 3);
            let y = client.empty(4 * m * n);
            let default = Kernel::for_shape::<_, bf16>(&client, m, (k, n), Epilogue::Store);
            let mut tried = vec![default];
            tried.extend(tilings.iter().filter(|&&t| t != default));
            for tiling in tried {
                if matches!(tiling, Kernel::Mma(_)) && !mma {
                    continue;
                }
                let call = |i: usize| {
                    let ends = (Prologue::None, Epilogue::Store);
                    let w = &weights[i % copies];
                    linear_with::<_, bf16>(&client, &x, w, ends, &y, (m, k, n), tiling)
                        .expect("checked")
                };
                call(0);
                let rounds_x = matches!(tiling, Kernel::Mma(_));
                let verified = verify(&client, &x, &weights[0], &y, (m, k, n), rounds_x);
                let us = median(
                    (0..args.runs)
                        .map(|i| {
                            time(&client, || (0..REPS).for_each(|r| call(i * REPS + r)))
                                / REPS as f64
                        })
                        .collect(),
                );
                let row_gbps = bytes as f64 / (us * 1e3);
                let tiling_name = tiling_name(tiling);
                eprintln!(
                "{name} {k}→{n} m{m} {tiling_name}: {us:.1} µs, {row_gbps:.0} GB/s ({:.0}% of copy){}",
                100.0 * row_gbps / gbps,
                if verified { ", verified" } else { "" }
            );
                rows.push(Row {
                    name: name.clone(),
                    k,
                    n,
                    m,
                    tiling: tiling_name,
                    default_tiling: tiling == default,
                    weight_bytes: bytes,
                    us,
                    gbps: row_gbps,
                    fraction_of_copy: row_gbps / gbps,
                    verified_against_reference: verified,
                });
            }
        }
        client.memory_cleanup();
    }
    let report = Report {
        bench: "linear",
        command: crate::invocation(),
        device: device_name(BackendKind::Cuda),
        commit: git_commit(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        copy_gbps: gbps,
        weights: "bf16 (synthetic), x and y f32 (the tensor-core kernel rounds x to bf16; verified against a reference over the same rounded x)",
        note: "µs per call: device time of 10 back-to-back calls / 10, median over runs; weights rotated past L2; GB/s counts weight bytes only",
        rows,
    };
    write_report(&args.out, &report)
}

/// The output equals the f64 reference over the same (widened) weights; with `rounds_x` (the
/// tensor-core kernel) over x rounded to bf16 as the kernel rounds it.
fn verify<R: Runtime>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    y: &Handle,
    (m, k, n): (usize, usize, usize),
    rounds_x: bool,
) -> bool {
    let mut xs = read_f32(client, x.clone(), m * k);
    if rounds_x {
        xs.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
    }
    let bytes = client.read_one_unchecked(w.clone());
    let ws: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    let got = read_f32(client, y.clone(), m * n);
    // The first and last columns (the last plane may be partly empty): enough to catch a wrong
    // tiling, cheap enough to run for every one.
    let cols: Vec<usize> = (0..n.min(64))
        .chain(n.saturating_sub(64).max(64)..n)
        .collect();
    let tol = 1e-5 * (k as f32).sqrt();
    cols.iter().all(|&c| {
        let want = reference::linear(&xs, &ws[c * k..(c + 1) * k], m, k, 1);
        (0..m).all(|r| (got[r * n + c] - want[r]).abs() <= tol * (1.0 + want[r].abs()))
    })
}
