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
use spotlight_kernels::linear::{linear_with, Epilogue, Prologue, Tiling};
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
    /// Tilings tried per shape and row count, as columns-per-plane x loads-in-flight; the
    /// default tiling for the row count (what the decoder uses) is always run and flagged.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x4,1x8,2x2,2x4,4x1,4x2,8x1"
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
    /// columns per plane x loads in flight
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

fn parse_tiling(s: &str) -> Result<Tiling> {
    let bad = || CliError::Usage(format!("tiling {s:?}: expected COLSxIN_FLIGHT, each 1..=8"));
    let (c, f) = s.split_once('x').ok_or_else(bad)?;
    match (c.parse::<usize>(), f.parse::<usize>()) {
        (Ok(cols), Ok(in_flight)) if (1..=8).contains(&cols) && (1..=8).contains(&in_flight) => {
            Ok(Tiling { cols, in_flight })
        }
        _ => Err(bad()),
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
            let default = Tiling::for_rows(m);
            let mut tried = vec![default];
            tried.extend(tilings.iter().filter(|&&t| t != default));
            for tiling in tried {
                let call = |i: usize| {
                    let ends = (Prologue::None, Epilogue::Store);
                    let w = &weights[i % copies];
                    linear_with::<_, bf16>(&client, &x, w, ends, &y, (m, k, n), tiling)
                        .expect("checked")
                };
                call(0);
                let verified = verify(&client, &x, &weights[0], &y, m, k, n);
                let us = median(
                    (0..args.runs)
                        .map(|i| {
                            time(&client, || (0..REPS).for_each(|r| call(i * REPS + r)))
                                / REPS as f64
                        })
                        .collect(),
                );
                let row_gbps = bytes as f64 / (us * 1e3);
                let tiling_name = format!("{}x{}", tiling.cols, tiling.in_flight);
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
        weights: "bf16 (synthetic), x and y f32",
        note: "µs per call: device time of 10 back-to-back calls / 10, median over runs; weights rotated past L2; GB/s counts weight bytes only",
        rows,
    };
    write_report(&args.out, &report)
}

/// The output equals the f64 reference over the same (widened) weights.
fn verify<R: Runtime>(
    client: &ComputeClient<R>,
    x: &Handle,
    w: &Handle,
    y: &Handle,
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    let xs = read_f32(client, x.clone(), m * k);
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
