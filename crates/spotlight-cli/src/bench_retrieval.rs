//! `spotlight bench retrieval`: the decode-side retrieval kernels at long context, per stage, next
//! to dense attention and the byte floor (copy bandwidth measured in the same run).
//!
//! Device-side timings (CUDA events through CubeCL's profiler): each timed region issues 10 calls
//! back to back, as a decode loop would, so launch latency overlaps with work the way it does in
//! generation; median of `--runs` regions after two warm-up passes; inputs rotate over enough
//! copies that L2 cannot hold them. Codes and K/V are
//! deterministic pseudo-random fills (synthetic: timings do not depend on the values, except the
//! histogram's spread). The smallest context of every shape is also checked against the
//! plain-Rust references on this device before timing.

use std::path::PathBuf;

use cubecl::prelude::*;
use cubecl::server::Handle;
use half::bf16;
use serde::Serialize;
use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
use spotlight_kernels::device::{read_f32, read_u32};
use spotlight_kernels::fill::{random_bits, random_uniform};
use spotlight_kernels::hash_pack::{hash_pack, DeviceHashWeights};
use spotlight_kernels::reference::{self, HashWeights};
use spotlight_kernels::select::{Selection, Selector};
use spotlight_kernels::{AttendShape, Budget, CodeShape};

use crate::backend::BackendKind;
use crate::bench::{command_output, device_name, git_commit, median, write_report};
use crate::error::{CliError, Result};

/// Rotate inputs over copies totalling at least this many bytes (4× the H200's 50 MB L2).
pub(crate) const ROTATE_BYTES: usize = 200 << 20;
/// Calls per timed region.
pub(crate) const REPS: usize = 10;
/// The kernels index with 32-bit offsets: larger K/V buffers are not measured (noted in the JSON).
const MAX_KV_ELEMS: usize = 1 << 31;

#[derive(Debug, Clone, clap::Args)]
pub struct RetrievalBenchArgs {
    /// cuda or wgpu.
    #[arg(long, value_enum, default_value = "cuda")]
    pub backend: BackendKind,
    /// Cached tokens per sequence.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,32768,131072,524288,1048576"
    )]
    pub tokens: Vec<usize>,
    /// Head layouts as q_heads/kv_heads/head_dim (Llama-3-8B, Qwen2.5-7B, SmolLM2-135M).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "32/8/128,28/4/128,9/3/64"
    )]
    pub shapes: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub batch: Vec<usize>,
    /// Timed runs per stage.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    #[arg(long, default_value_t = 0.02)]
    pub fraction: f64,
    #[arg(long, default_value_t = 4)]
    pub sink: usize,
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Element type of K and V (wgpu has no bf16: use f32 there).
    #[arg(long, value_enum, default_value = "bf16")]
    pub kv_dtype: KvDtype,
    /// Size of the copy that measures bandwidth (wgpu caps buffers; keep it small there).
    #[arg(long, default_value_t = 1024)]
    pub copy_mib: usize,
    /// Output JSON file.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvDtype {
    Bf16,
    F16,
    F32,
}

impl KvDtype {
    fn name(self) -> &'static str {
        match self {
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    n: usize,
    q_heads: usize,
    kv_heads: usize,
    bits: usize,
    batch: usize,
    selected: usize,
    hash_q_us: f64,
    score_hist_us: f64,
    count_us: f64,
    compact_us: f64,
    score_select_us: f64,
    sparse_attend_us: Option<f64>,
    dense_attend_us: Option<f64>,
    /// Code bytes read by score+select at the measured copy rate.
    floor_us: f64,
    /// K+V bytes of dense attention at the measured copy rate.
    dense_floor_us: Option<f64>,
    dense_gbps: Option<f64>,
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
    kv_dtype: &'static str,
    budget: String,
    note: &'static str,
    rows: Vec<Row>,
}

pub fn run(args: RetrievalBenchArgs) -> Result<()> {
    let budget = Budget {
        fraction: args.fraction,
        min_tokens: 20,
        sink: args.sink,
        window: args.window,
    };
    budget
        .validate()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if args.runs == 0 || args.batch.contains(&0) || args.tokens.contains(&0) {
        return Err(CliError::Usage(
            "--runs, batch sizes and token counts must be ≥ 1".into(),
        ));
    }
    let shapes = args
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<Vec<_>>>()?;
    let report = match args.backend {
        BackendKind::Cuda => {
            crate::backend::cuda_ready().map_err(|why| {
                CliError::Backend(format!("--backend cuda is not usable here: {why}"))
            })?;
            let client = cubecl::cuda::CudaRuntime::client(&Default::default());
            bench(&client, &args, &shapes, budget)?
        }
        BackendKind::Wgpu => {
            crate::backend::wgpu_device().map_err(|why| {
                CliError::Backend(format!("--backend wgpu is not usable here: {why}"))
            })?;
            let client = cubecl::wgpu::WgpuRuntime::client(&Default::default());
            bench(&client, &args, &shapes, budget)?
        }
        BackendKind::Cpu => {
            return Err(CliError::Usage(
                "bench retrieval runs the GPU kernels: --backend cuda or wgpu".into(),
            ))
        }
    };
    write_report(&args.out, &report)
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize)> {
    let parts: Vec<usize> = s.split('/').filter_map(|p| p.trim().parse().ok()).collect();
    match parts[..] {
        [q, kv, d] => {
            AttendShape::dense(q, kv, d).map_err(|e| CliError::Usage(format!("shape {s}: {e}")))?;
            Ok((q, kv, d))
        }
        _ => Err(CliError::Usage(format!(
            "shape {s:?}: expected q_heads/kv_heads/head_dim"
        ))),
    }
}

/// Device time of the launches in `f`, in microseconds.
pub(crate) fn time<R: Runtime>(client: &ComputeClient<R>, f: impl FnOnce() + Send) -> f64 {
    let (_, duration) = client.profile(f, "bench").expect("profiling is supported");
    cubecl::future::block_on(duration.resolve())
        .duration()
        .as_secs_f64()
        * 1e6
}

pub(crate) fn copy_gbps<R: Runtime>(client: &ComputeClient<R>, mib: usize, runs: usize) -> f64 {
    let words = mib << 18;
    let src = random_bits(client, words, 1);
    let dst = client.empty(4 * words);
    spotlight_kernels::copy::copy(client, &src, &dst, words);
    let t = median(
        (0..runs)
            .map(|_| {
                time(client, || {
                    spotlight_kernels::copy::copy(client, &src, &dst, words)
                })
            })
            .collect(),
    );
    (2 * 4 * words) as f64 / (t * 1e-6) / 1e9
}

fn bench<R: Runtime>(
    client: &ComputeClient<R>,
    args: &RetrievalBenchArgs,
    shapes: &[(usize, usize, usize)],
    budget: Budget,
) -> Result<Report> {
    let gbps = copy_gbps(client, args.copy_mib.max(1), args.runs);
    eprintln!("copy: {gbps:.0} GB/s (read + write)");
    let mut rows = Vec::new();
    let smallest = args.tokens.iter().copied().min().unwrap_or(0);
    for &(q_heads, kv_heads, d) in shapes {
        for &batch in &args.batch {
            for &n in &args.tokens {
                let dims = (q_heads, kv_heads, d);
                let verify = n == smallest;
                let row = match args.kv_dtype {
                    KvDtype::Bf16 => {
                        bench_one::<R, bf16>(client, args, budget, dims, batch, n, gbps, verify)?
                    }
                    KvDtype::F16 => bench_one::<R, half::f16>(
                        client, args, budget, dims, batch, n, gbps, verify,
                    )?,
                    KvDtype::F32 => {
                        bench_one::<R, f32>(client, args, budget, dims, batch, n, gbps, verify)?
                    }
                };
                eprintln!(
                    "{q_heads}/{kv_heads}/{d} b{batch} n{n}: hash q {:.1} µs, score+select {:.1} µs (floor {:.1}), sparse {:.1} µs, dense {} µs{}",
                    row.hash_q_us,
                    row.score_select_us,
                    row.floor_us,
                    row.sparse_attend_us.unwrap_or(f64::NAN),
                    row.dense_attend_us.map_or("-".into(), |t| format!("{t:.1}")),
                    if row.verified_against_reference { ", verified" } else { "" }
                );
                rows.push(row);
                client.memory_cleanup();
            }
        }
    }
    Ok(Report {
        bench: "retrieval",
        command: crate::invocation(),
        device: device_name(args.backend),
        commit: git_commit(),
        date: command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default(),
        copy_gbps: gbps,
        kv_dtype: args.kv_dtype.name(),
        budget: format!("{budget:?}"),
        note: "device time (CUDA events) per call: regions of 10 back-to-back calls, median over runs; score_select = score_hist + count (with the threshold) + compact in one timed region; synthetic codes and K/V; attention is not measured (null) where K/V exceed 2^31 elements (32-bit indexing)",
        rows,
    })
}

#[allow(clippy::too_many_arguments)]
fn bench_one<R: Runtime, F: Float + CubeElement>(
    client: &ComputeClient<R>,
    args: &RetrievalBenchArgs,
    budget: Budget,
    (q_heads, kv_heads, d): (usize, usize, usize),
    batch: usize,
    n: usize,
    gbps: f64,
    verify: bool,
) -> Result<Row> {
    let usage = |e: spotlight_kernels::KernelError| CliError::Usage(e.to_string());
    let shape = CodeShape::new(q_heads, kv_heads, d).map_err(usage)?;
    let attn = AttendShape::dense(q_heads, kv_heads, d).map_err(usage)?;
    let words = shape.words();
    let code_words = batch * n * kv_heads * words;
    let copies = ROTATE_BYTES.div_ceil(4 * code_words).clamp(1, 16);
    let k_codes: Vec<Handle> = (0..copies)
        .map(|i| random_bits(client, code_words, 100 + i as u32))
        .collect();
    let q_codes = random_bits(client, batch * q_heads * words, 7);
    let q = random_uniform::<R, f32>(client, batch * q_heads * d, 8);

    // Hash weights at the method's init scale (values do not change the timing).
    let mut state = 0x2545_f491u32;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state as f32 / u32::MAX as f32 - 0.5) * 2e-3
    };
    let dd = q_heads * d * d;
    let weights = HashWeights::new(
        q_heads,
        d,
        (0..dd).map(|_| next()).collect(),
        vec![0.0; q_heads * d],
        (0..dd).map(|_| next()).collect(),
        vec![0.0; q_heads * d],
    )
    .map_err(usage)?;
    let dev_weights = DeviceHashWeights::upload(client, &weights);
    let q_codes_out = client.empty(4 * batch * q_heads * words);

    let plan = budget.plan(n);
    let plans = vec![plan; batch];
    let selector = Selector::new(client, shape, batch, n).map_err(usage)?;
    let selection = Selection::new(client, batch, kv_heads, plan.selected(), 0);
    let plan_handle = selector.upload_plans(client, &plans);

    let kv_elems = batch * kv_heads * n * d;
    let dense_fits = kv_elems < MAX_KV_ELEMS;
    let kv_bytes = 2 * core::mem::size_of::<F>() * kv_elems;
    let kv_copies = if dense_fits {
        ROTATE_BYTES.div_ceil(kv_bytes).clamp(1, 8)
    } else {
        0
    };
    let kv: Vec<(Handle, Handle)> = (0..kv_copies)
        .map(|i| {
            (
                random_uniform::<R, F>(client, kv_elems, 200 + i as u32),
                random_uniform::<R, F>(client, kv_elems, 300 + i as u32),
            )
        })
        .collect();
    let rows: Vec<QueryRow> = (0..batch).map(|seq| QueryRow { seq, len: n }).collect();
    let rows = QueryRows::upload(client, &rows);
    let layout = KvLayout { batch, cap: n };
    let out = client.empty(4 * batch * q_heads * d);

    let stages = |i: usize| {
        selector.run_uploaded(
            client,
            &q_codes,
            &k_codes[i % copies],
            &plan_handle,
            n,
            &selection,
        )
    };
    let sparse = |i: usize| {
        let (k, v) = &kv[i % kv_copies];
        attend::<R, F>(
            client,
            &attn,
            &q,
            k,
            v,
            layout,
            &rows,
            Some((&selection, plan.selected())),
            &out,
        )
        .expect("shapes checked");
    };
    let dense = |i: usize| {
        let (k, v) = &kv[i % kv_copies];
        attend::<R, F>(client, &attn, &q, k, v, layout, &rows, None, &out).expect("shapes checked");
    };
    // Warm-up: kernel compilation and memory pools.
    for i in 0..2 {
        hash_pack(client, &dev_weights, &q, batch, &q_codes_out).map_err(usage)?;
        stages(i);
        if dense_fits {
            sparse(i);
            dense(i);
        }
    }
    let verified = verify
        && verify_against_reference(
            client,
            &shape,
            &q_codes,
            &k_codes[0],
            n,
            batch,
            &plans,
            &selector,
            &selection,
        )
        && (!dense_fits || {
            let check = |sparse_run: bool| {
                if sparse_run {
                    sparse(0)
                } else {
                    dense(0)
                };
                let got = read_f32(client, out.clone(), batch * q_heads * d);
                let lists = (!sparse_run).then(|| vec![(0..n as u32).collect(); kv_heads]);
                let (k, v) = &kv[0];
                attention_matches(
                    client,
                    &attn,
                    &q,
                    k,
                    v,
                    n,
                    args.kv_dtype,
                    &selection,
                    lists,
                    &got,
                )
            };
            check(true) && check(false)
        });

    let runs = args.runs;
    // Each timed region runs REPS calls back to back (as a decode loop issues them) over rotating
    // inputs; the per-call time is the region's device time over REPS.
    let t = |f: &(dyn Fn(usize) + Sync)| {
        median(
            (0..runs)
                .map(|i| time(client, || (0..REPS).for_each(|r| f(i * REPS + r))) / REPS as f64)
                .collect(),
        )
    };
    let hash_q_us =
        t(&|_| hash_pack(client, &dev_weights, &q, batch, &q_codes_out).expect("checked"));
    let score_hist_us =
        t(&|i| selector.score_hist(client, &q_codes, &k_codes[i % copies], &plan_handle, n));
    let count_us = t(&|_| selector.count(client, &plan_handle, n, &selection));
    let compact_us = t(&|_| selector.compact(client, &plan_handle, n, &selection));
    let score_select_us = t(&|i| stages(i));
    let sparse_attend_us = dense_fits.then(|| t(&|i| sparse(i)));
    let dense_attend_us = dense_fits.then(|| t(&|i| dense(i)));
    let code_bytes = (4 * code_words) as f64;
    Ok(Row {
        n,
        q_heads,
        kv_heads,
        bits: d,
        batch,
        selected: plan.selected(),
        hash_q_us,
        score_hist_us,
        count_us,
        compact_us,
        score_select_us,
        sparse_attend_us,
        dense_attend_us,
        floor_us: code_bytes / (gbps * 1e3),
        dense_floor_us: dense_fits.then(|| kv_bytes as f64 / (gbps * 1e3)),
        dense_gbps: dense_attend_us.map(|t| kv_bytes as f64 / (t * 1e3)),
        verified_against_reference: verified,
    })
}

/// The selection on this device equals the reference's, list by list.
#[allow(clippy::too_many_arguments)]
fn verify_against_reference<R: Runtime>(
    client: &ComputeClient<R>,
    shape: &CodeShape,
    q_codes: &Handle,
    k_codes: &Handle,
    n: usize,
    batch: usize,
    plans: &[spotlight_kernels::SequencePlan],
    selector: &Selector,
    selection: &Selection,
) -> bool {
    let w = shape.words();
    let q = read_u32(client, q_codes.clone(), batch * shape.q_heads * w);
    let k = read_u32(client, k_codes.clone(), batch * n * shape.sets * w);
    if selector
        .run(client, q_codes, k_codes, plans, selection)
        .is_err()
    {
        return false;
    }
    let counts = read_u32(client, selection.counts.clone(), batch * shape.sets);
    let indices = read_u32(
        client,
        selection.indices.clone(),
        batch * shape.sets * selection.index_cap,
    );
    (0..batch).all(|b| {
        (0..shape.sets).all(|s| {
            let scores = reference::scores(
                shape,
                &q[b * shape.q_heads * w..][..shape.q_heads * w],
                &k[b * n * shape.sets * w..][..n * shape.sets * w],
                n,
                s,
            );
            let want = reference::select(&scores, &plans[b]);
            let list = b * shape.sets + s;
            counts[list] as usize == want.len()
                && indices[list * selection.index_cap..][..want.len()] == want[..]
        })
    })
}

/// Attention on this device equals the f64 reference over the same K/V (read back and widened
/// exactly to f32), within f32 accumulation error. `lists` overrides the selection (dense).
#[allow(clippy::too_many_arguments)]
fn attention_matches<R: Runtime>(
    client: &ComputeClient<R>,
    shape: &AttendShape,
    q: &Handle,
    k: &Handle,
    v: &Handle,
    n: usize,
    dtype: KvDtype,
    selection: &Selection,
    lists: Option<Vec<Vec<u32>>>,
    got: &[f32],
) -> bool {
    let d = shape.head_dim;
    let batch = selection.batch;
    let widen = |h: &Handle| -> Vec<f32> {
        let bytes = client.read_one_unchecked(h.clone());
        match dtype {
            KvDtype::Bf16 => bytes
                .chunks_exact(2)
                .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            KvDtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            KvDtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        }
    };
    let (kf, vf) = (widen(k), widen(v));
    let qf = read_f32(client, q.clone(), batch * shape.q_heads * d);
    let counts = read_u32(client, selection.counts.clone(), batch * shape.sets);
    let indices = read_u32(
        client,
        selection.indices.clone(),
        batch * shape.sets * selection.index_cap,
    );
    let per_seq = shape.kv_heads * n * d;
    (0..batch).all(|b| {
        let rows = lists.clone().unwrap_or_else(|| {
            (0..shape.sets)
                .map(|s| {
                    let list = b * shape.sets + s;
                    indices[list * selection.index_cap..][..counts[list] as usize].to_vec()
                })
                .collect()
        });
        let qh = shape.q_heads * d;
        let want = reference::attend(
            shape,
            &qf[b * qh..][..qh],
            &kf[b * per_seq..][..per_seq],
            &vf[b * per_seq..][..per_seq],
            n,
            &rows,
        );
        want.iter()
            .zip(&got[b * qh..][..qh])
            .all(|(e, g)| (g - e).abs() <= 1e-4 * (1.0 + e.abs()))
    })
}
