//! One decode step as a fixed sequence of kernel launches over preallocated buffers: the decoder,
//! its buffers and its public operations (the step itself is in `step.rs`).

mod step;

use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use spotlight_kernels::attend::AttendScratch;
use spotlight_kernels::copy::copy;
use spotlight_kernels::device::{check_bytes, read_f32, upload_f32};
use spotlight_kernels::fill::random_uniform;
use spotlight_kernels::{AttendShape, KernelError};

use super::graph::{GraphMode, GraphState, StepGraphs};
use super::inputs::StepInputs;
use super::sparse::{SparseDecode, SparseState};
use super::weights::DecoderWeights;
use super::FastDecode;
use crate::error::LlamaError;
use crate::rope::host_tables;

/// One row of a decode step: the token to append to sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRow {
    pub seq: usize,
    pub token: u32,
}

/// Which parts of a decode step to launch (all of them, except when a benchmark times parts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepParts {
    /// Embedding, norms, every projection and the LM head.
    pub weights: bool,
    /// RoPE + cache append and attention over the cache (or the selected rows).
    pub attention: bool,
    /// Spotlight's key and query hashing and the selection (sparse decoding only).
    pub retrieval: bool,
}

impl StepParts {
    pub const ALL: Self = Self {
        weights: true,
        attention: true,
        retrieval: true,
    };
}

/// Per-step activations, sized for every sequence decoding at once.
struct Scratch {
    /// The residual stream `[rows][hidden]`.
    x: Handle,
    qkv: Handle,
    q: Handle,
    attended: Handle,
    hidden: Handle,
    logits: Handle,
}

/// The decode engine: weights, the KV cache (`[batch][kv_heads][cap][d]` per layer, element type
/// `E`), RoPE tables and scratch buffers, all on one device.
pub struct Decoder<R: Runtime, E: Float + CubeElement> {
    client: ComputeClient<R>,
    weights: DecoderWeights,
    k: Vec<Handle>,
    v: Vec<Handle>,
    /// Tokens cached per sequence.
    lens: Vec<usize>,
    cap: usize,
    cos: Handle,
    sin: Handle,
    scratch: Scratch,
    attend_shape: AttendShape,
    attend_scratch: AttendScratch,
    /// This step's tokens, places, lengths and plans (written before its kernels).
    inputs: StepInputs,
    sparse: Option<SparseState>,
    /// Where steps can be recorded as CUDA graphs (see [`Self::with_graph_device`]).
    device: Option<R::Device>,
    graph_mode: GraphMode,
    graphs: Option<StepGraphs>,
    graph_state: GraphState,
    launches: usize,
    read_share: f64,
    _element: std::marker::PhantomData<E>,
}

fn kernel(e: KernelError) -> LlamaError {
    LlamaError::Kernel(e)
}

impl<R: Runtime, E: Float + CubeElement> Decoder<R, E> {
    /// A decoder over an existing KV cache: `k[l]`/`v[l]` hold `[batch][kv_heads][cap][d]` of `E`
    /// and sequence b has `lens[b]` tokens in it. `cos`/`sin` are RoPE tables of at least `cap`
    /// rows of d/2 f32 values.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: ComputeClient<R>,
        weights: DecoderWeights,
        (k, v): (Vec<Handle>, Vec<Handle>),
        lens: Vec<usize>,
        cap: usize,
        (cos, sin): (Handle, Handle),
    ) -> Result<Self, LlamaError> {
        let c = &weights.config;
        let layers = c.num_hidden_layers;
        if k.len() != layers || v.len() != layers || weights.layers.len() != layers {
            return Err(LlamaError::Invalid(format!(
                "decoder: {layers} layers, got {} weight layers and {}/{} cache layers",
                weights.layers.len(),
                k.len(),
                v.len()
            )));
        }
        if let Some(b) = lens.iter().position(|&n| n > cap) {
            return Err(kernel(KernelError::OverCapacity {
                seq: b,
                len: lens[b],
                cap,
            }));
        }
        let cache_bytes =
            lens.len() * c.num_key_value_heads * cap * c.head_dim * core::mem::size_of::<E>();
        for h in k.iter().chain(&v) {
            check_bytes(h, cache_bytes, "KV cache buffer (bytes)").map_err(kernel)?;
        }
        let half = c.head_dim / 2;
        check_bytes(&cos, 4 * cap * half, "RoPE table (bytes)").map_err(kernel)?;
        check_bytes(&sin, 4 * cap * half, "RoPE table (bytes)").map_err(kernel)?;
        Self::supports(&client, c).map_err(kernel)?;
        let attend_shape =
            AttendShape::dense(c.num_attention_heads, c.num_key_value_heads, c.head_dim)
                .map_err(kernel)?;
        let q_width = c.num_attention_heads * c.head_dim;
        let rows = lens.len().max(1);
        let f32s = |n: usize| client.empty(4 * n.max(1));
        let scratch = Scratch {
            x: f32s(rows * c.hidden_size),
            qkv: f32s(rows * (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim),
            q: f32s(rows * q_width),
            attended: f32s(rows * q_width),
            hidden: f32s(rows * c.intermediate_size),
            logits: f32s(rows * c.vocab_size),
        };
        let attend_scratch = AttendScratch::new(&client, &attend_shape, rows);
        let inputs = StepInputs::new(&client, rows, 0);
        Ok(Self {
            client,
            weights,
            k,
            v,
            lens,
            cap,
            cos,
            sin,
            scratch,
            attend_shape,
            attend_scratch,
            inputs,
            sparse: None,
            device: None,
            graph_mode: GraphMode::Off,
            graphs: None,
            graph_state: GraphState::Off,
            launches: 0,
            read_share: 1.0,
            _element: std::marker::PhantomData,
        })
    }

    /// Whether this device can run the decoder's kernels for `config`: one plane (warp) size that
    /// divides head_dim, and projection inputs in whole 16-byte vectors of `E`. Where it cannot,
    /// generation keeps the tensor path.
    pub fn supports(client: &ComputeClient<R>, c: &crate::LlamaConfig) -> Result<(), KernelError> {
        let hw = &client.properties().hardware;
        let plane = hw.plane_size_max as usize;
        if plane == 0
            || hw.plane_size_min != hw.plane_size_max
            || !c.head_dim.is_multiple_of(plane)
            || plane > c.head_dim
        {
            return Err(KernelError::PlaneSize {
                plane,
                d: c.head_dim,
            });
        }
        let vec = 16 / core::mem::size_of::<E>();
        let q_width = c.num_attention_heads * c.head_dim;
        for k_in in [c.hidden_size, q_width, c.intermediate_size] {
            if !k_in.is_multiple_of(vec) {
                return Err(KernelError::Length {
                    what: "projection input size (multiple of 16 bytes)",
                    expected: vec,
                    got: k_in,
                });
            }
        }
        Ok(())
    }

    /// A SYNTHETIC decoder for benchmarks: random weights (see [`DecoderWeights::synthetic`]) and
    /// a cache of `batch` sequences with `context` random tokens each, room for `new_tokens` more,
    /// all generated on the device (no prefill).
    pub fn synthetic(
        client: ComputeClient<R>,
        config: &crate::LlamaConfig,
        batch: usize,
        context: usize,
        new_tokens: usize,
        seed: u32,
    ) -> Result<Self, LlamaError> {
        let weights = DecoderWeights::synthetic::<R, E>(&client, config, seed);
        let cap = context + new_tokens;
        let n = batch * config.num_key_value_heads * cap * config.head_dim;
        let layers = config.num_hidden_layers as u32;
        let fill = |l: u32, which: u32| {
            random_uniform::<R, E>(&client, n, seed ^ (l * 2 + which).wrapping_mul(0x85EB_CA6B))
        };
        let k = (0..layers).map(|l| fill(l, 0)).collect();
        let v = (0..layers).map(|l| fill(l, 1)).collect();
        let tables = rope_tables(&client, config, cap);
        Self::new(client, weights, (k, v), vec![context; batch], cap, tables)
    }

    /// Switches decode attention to Spotlight Attention. `codes[l]` holds the key codes of the
    /// tokens already cached in layer l (`[batch][cap][kv_heads][bits/32]` u32). Steps must then
    /// cover every sequence, in order (the selection kernels index sequences by row).
    pub fn with_sparse(
        mut self,
        decode: SparseDecode,
        codes: Vec<Handle>,
    ) -> Result<Self, LlamaError> {
        self.set_sparse(Some((decode, codes)))?;
        Ok(self)
    }

    /// [`Self::with_sparse`] in place; `None` goes back to dense attention.
    pub fn set_sparse(
        &mut self,
        sparse: Option<(SparseDecode, Vec<Handle>)>,
    ) -> Result<(), LlamaError> {
        // The code cache being let go gets the codes of the keys still waiting.
        if let Some(sp) = self.sparse.as_mut() {
            sp.hash_pending(&self.client, (self.lens.len(), self.cap))
                .map_err(kernel)?;
        }
        // Recorded steps use the buffers about to change.
        if let Some(g) = self.graphs.as_mut() {
            g.clear();
        }
        let batch = self.lens.len();
        let Some((decode, codes)) = sparse else {
            self.sparse = None;
            self.inputs = StepInputs::new(&self.client, batch, 0);
            return Ok(());
        };
        let state = SparseState::new(
            &self.client,
            decode,
            &self.weights.config,
            (self.lens.len(), self.cap),
            codes,
        )
        .map_err(kernel)?;
        // Group layout: the code sets are the KV heads, as in the dense attend shape.
        let ring_rows = state.decode.ring_steps() * batch;
        self.inputs = StepInputs::new(&self.client, batch, ring_rows);
        self.sparse = Some(state);
        Ok(())
    }

    /// Lets steps be recorded as CUDA graphs on `device`, the decoder's device (nothing
    /// changes until [`Self::set_graphs`] turns them on).
    pub fn with_graph_device(mut self, device: &R::Device) -> Self {
        self.device = Some(device.clone());
        self
    }

    /// Records and replays steps as CUDA graphs (`On`: where that fails, an error; `Auto`: plain
    /// launches instead, the reason in [`Self::graph_state`]), or launches them plainly (`Off`).
    pub fn set_graphs(&mut self, mode: GraphMode) -> Result<(), LlamaError> {
        self.graph_mode = mode;
        self.graphs = None;
        self.graph_state = GraphState::Off;
        if mode == GraphMode::Off {
            return Ok(());
        }
        let recorder = match self.device.as_ref() {
            None => Err(super::graph::GraphError::NotCuda),
            Some(device) => {
                let (from, to) = (self.client.empty(16), self.client.empty(16));
                let probe = || copy(&self.client, &from, &to, 1);
                super::cuda_graph::recorder::<R>(device, &probe)
            }
        };
        match (recorder, mode) {
            (Ok(r), _) => {
                let graphs = StepGraphs::new(r);
                self.graph_state = graphs.state();
                self.graphs = Some(graphs);
            }
            (Err(super::graph::GraphError::NotCuda), GraphMode::Auto) => {}
            (Err(e), GraphMode::Auto) => self.graph_state = GraphState::Refused(e.to_string()),
            (Err(e), _) => return Err(e.into()),
        }
        Ok(())
    }

    /// Whether steps are replayed from CUDA graphs, and how many.
    pub fn graph_state(&self) -> &GraphState {
        &self.graph_state
    }

    /// Layer `layer`'s key code cache `[batch][cap][kv_heads][bits/32]` under Spotlight Attention
    /// (keys of the last steps may still wait for their codes; [`Self::rewind`] hashes them).
    pub fn key_codes(&self, layer: usize) -> Option<&Handle> {
        self.sparse.as_ref().and_then(|s| s.codes.get(layer))
    }

    /// Share of the cached K/V rows the last step read, over all layers and rows.
    pub fn read_share(&self) -> f64 {
        self.read_share
    }

    pub fn weights(&self) -> &DecoderWeights {
        &self.weights
    }

    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Sets each sequence's length back (benchmarks repeat steps at one context; rows past the
    /// new lengths are simply overwritten by the next steps).
    pub fn rewind(&mut self, lens: &[usize]) -> Result<(), LlamaError> {
        if lens.len() != self.lens.len() || lens.iter().zip(&self.lens).any(|(a, b)| a > b) {
            return Err(LlamaError::Invalid(format!(
                "rewind to {lens:?} from {:?}: lengths can only shrink",
                self.lens
            )));
        }
        // Keys waiting for their codes are hashed first (those past the new lengths are simply
        // hashed again when their places are filled anew).
        if let Some(sp) = self.sparse.as_mut() {
            sp.hash_pending(&self.client, (self.lens.len(), self.cap))
                .map_err(kernel)?;
        }
        self.lens.copy_from_slice(lens);
        Ok(())
    }

    /// Waits for every launched kernel (benchmarks time whole steps).
    pub fn sync(&self) -> Result<(), LlamaError> {
        burn_cubecl::cubecl::future::block_on(self.client.sync())
            .map_err(|e| LlamaError::Device(format!("{e:?}")))
    }

    /// Runs one decode step without reading the logits back (benchmarks); see [`FastDecode::step`].
    pub fn launch_step(&mut self, rows: &[StepRow]) -> Result<(), LlamaError> {
        self.launch_parts(rows, StepParts::ALL)
    }

    /// [`Self::launch_step`] running only some parts of the step (benchmarks time each part
    /// alone; the skipped parts' buffers keep their last contents). The cache lengths advance.
    pub fn launch_parts(&mut self, rows: &[StepRow], parts: StepParts) -> Result<(), LlamaError> {
        self.launch(rows, parts, &vec![false; rows.len()])
    }
}

/// The code cache belongs to the KV cache, which outlives the decoder (a next turn prefills more
/// and decodes on): keys still waiting for their codes are hashed before the decoder goes.
impl<R: Runtime, E: Float + CubeElement> Drop for Decoder<R, E> {
    fn drop(&mut self) {
        if let Some(sp) = self.sparse.as_mut() {
            // A failure here only leaves those codes stale; a destructor has no one to tell.
            let _ = sp.hash_pending(&self.client, (self.lens.len(), self.cap));
        }
    }
}

impl<R: Runtime, E: Float + CubeElement> FastDecode for Decoder<R, E> {
    fn step(&mut self, rows: &[StepRow]) -> Result<Vec<f32>, LlamaError> {
        self.step_padded(rows, &vec![false; rows.len()])
    }

    fn step_padded(&mut self, rows: &[StepRow], pad: &[bool]) -> Result<Vec<f32>, LlamaError> {
        self.launch(rows, StepParts::ALL, pad)?;
        let n = rows.len() * self.weights.config.vocab_size;
        // sync: the logits go to the host sampler.
        Ok(read_f32(&self.client, self.scratch.logits.clone(), n))
    }

    fn lens(&self) -> &[usize] {
        &self.lens
    }

    fn forget(&mut self, seq: usize) -> Result<(), LlamaError> {
        if seq >= self.lens.len() {
            return Err(LlamaError::Invalid(format!(
                "forget sequence {seq} of {}",
                self.lens.len()
            )));
        }
        // Its keys still waiting for their codes must not land after what comes next.
        if let Some(sp) = self.sparse.as_mut() {
            sp.hash_pending(&self.client, (self.lens.len(), self.cap))
                .map_err(kernel)?;
        }
        self.lens[seq] = 0;
        Ok(())
    }

    fn launches(&self) -> usize {
        self.launches
    }

    fn read_share(&self) -> f64 {
        self.read_share
    }

    fn full_batch(&self) -> bool {
        self.sparse.is_some()
    }

    fn set_graphs(&mut self, mode: GraphMode) -> Result<(), LlamaError> {
        Decoder::set_graphs(self, mode)
    }

    fn graph_state(&self) -> GraphState {
        self.graph_state.clone()
    }
}

/// RoPE cos/sin tables `[rows][d/2]` on the device (the model's own tables).
pub fn rope_tables<R: Runtime>(
    client: &ComputeClient<R>,
    config: &crate::LlamaConfig,
    rows: usize,
) -> (Handle, Handle) {
    let (cos, sin) = host_tables(config, rows);
    (upload_f32(client, &cos), upload_f32(client, &sin))
}
