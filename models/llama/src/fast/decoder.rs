//! One decode step as a fixed sequence of kernel launches over preallocated buffers.

use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
use spotlight_kernels::device::{check_bytes, read_f32, upload_f32, upload_u32};
use spotlight_kernels::embed::embed;
use spotlight_kernels::fill::random_uniform;
use spotlight_kernels::hash_pack::hash_pack;
use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue, MAX_ROWS};
use spotlight_kernels::rope_append::{rope_append, upload_places, RopeShape, RowPlace};
use spotlight_kernels::{AttendShape, KernelError, SequencePlan};

use super::sparse::{prunes, SparseDecode, SparseState};
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
    sparse: Option<SparseState>,
    launches: usize,
    read_share: f64,
    _element: std::marker::PhantomData<E>,
}

fn kernel(e: KernelError) -> LlamaError {
    LlamaError::Invalid(format!("decode kernels: {e}"))
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
            sparse: None,
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
        let Some((decode, codes)) = sparse else {
            self.sparse = None;
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
        self.sparse = Some(state);
        Ok(())
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
            .map_err(|e| LlamaError::Invalid(format!("device: {e:?}")))
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

    /// Runs one decode step; rows with `pad[i]` keep their sequence's length (see
    /// [`FastDecode::step_padded`]).
    fn launch(
        &mut self,
        rows: &[StepRow],
        parts: StepParts,
        pad: &[bool],
    ) -> Result<(), LlamaError> {
        let c = self.weights.config.clone();
        let m = rows.len();
        if m == 0 {
            return Ok(());
        }
        if pad.len() != m {
            return Err(LlamaError::Invalid(format!(
                "decode step of {m} rows with {} padding flags",
                pad.len()
            )));
        }
        if m > self.lens.len() {
            return Err(LlamaError::Invalid(format!(
                "decode step of {m} rows for {} sequences",
                self.lens.len()
            )));
        }
        let mut places = Vec::with_capacity(m);
        for (i, r) in rows.iter().enumerate() {
            if r.seq >= self.lens.len() || rows[..i].iter().any(|o| o.seq == r.seq) {
                return Err(LlamaError::Invalid(format!(
                    "decode step: sequence {} is not one of {} or appears twice",
                    r.seq,
                    self.lens.len()
                )));
            }
            let pos = self.lens[r.seq];
            if pos >= self.cap {
                return Err(LlamaError::ContextOverflow {
                    tokens: pos,
                    new: 1,
                    context: self.cap,
                });
            }
            places.push(RowPlace { seq: r.seq, pos });
        }
        if self.sparse.is_some() && rows.iter().enumerate().any(|(i, r)| r.seq != i)
            || (self.sparse.is_some() && m != self.lens.len())
        {
            return Err(LlamaError::Invalid(
                "sparse decode steps must cover every sequence, in order".into(),
            ));
        }
        // A real key about to land where a padding row's junk key still waits for its code:
        // hash the waiting keys first (two codes for one place in one launch would race).
        if let Some(sp) = self.sparse.as_mut() {
            let lands_on_junk = places
                .iter()
                .zip(pad)
                .any(|(p, &padded)| !padded && sp.junk.contains(p));
            if lands_on_junk {
                sp.hash_pending(&self.client, (self.lens.len(), self.cap))
                    .map_err(kernel)?;
            }
        }
        let real = pad.iter().filter(|&&p| !p).count().max(1);
        // Budgets of this step (each row sees its own new token too).
        let plans = self
            .sparse
            .as_ref()
            .map(|s| s.plans(&places.iter().map(|p| p.pos + 1).collect::<Vec<_>>()));
        let plan_handle = plans
            .as_ref()
            .zip(self.sparse.as_ref())
            .map(|(p, s)| s.selector.upload_plans(&self.client, p));
        let max_len = places.iter().map(|p| p.pos + 1).max().unwrap_or(0);
        let client = &self.client;
        let s = &self.scratch;
        let (h, d) = (c.hidden_size, c.head_dim);
        let (hq, hkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let tokens: Vec<u32> = rows.iter().map(|r| r.token).collect();
        let (row_seq, row_pos) = upload_places(client, &places);
        let query_rows = QueryRows::upload(
            client,
            &places
                .iter()
                .map(|p| QueryRow {
                    seq: p.seq,
                    len: p.pos + 1,
                })
                .collect::<Vec<_>>(),
        );
        let rope_shape = RopeShape {
            q_heads: hq,
            kv_heads: hkv,
            head_dim: d,
            batch: self.lens.len(),
            cap: self.cap,
        };
        let kv = KvLayout {
            batch: self.lens.len(),
            cap: self.cap,
        };
        let linears = m.div_ceil(MAX_ROWS);
        let w = &self.weights;
        let sparse = self.sparse.as_ref();
        // This step's keys go to ring slot `slot` of each coded layer; when the ring is full
        // (a key is about to leave the window unhashed), every waiting key is hashed this step.
        let ring = sparse.filter(|_| parts.retrieval).map(|sp| {
            let slot = sp.pending_steps(m);
            (slot, slot + 1 >= sp.decode.ring_steps())
        });
        let flush = match (sparse, ring) {
            (Some(sp), Some((_, true))) => {
                let all: Vec<RowPlace> = sp.pending.iter().chain(&places).copied().collect();
                let (seq, pos) = upload_places(client, &all);
                Some((all, seq, pos))
            }
            _ => None,
        };
        let slot = ring.map_or(0, |(slot, _)| slot);
        let mut launches = 0;
        let mut read = 0.0;
        if parts.weights {
            embed::<R, E>(
                client,
                &w.embed,
                (c.vocab_size, h),
                &tokens,
                &upload_u32(client, &tokens),
                &s.x,
            )
            .map_err(kernel)?;
            launches += 1;
        }
        for (l, lw) in w.layers.iter().enumerate() {
            let coded = sparse.filter(|s| parts.retrieval && l >= s.decode.dense_layers);
            let pruned = sparse.zip(plans.as_ref()).filter(|(s, p)| prunes(s, l, p));
            if parts.weights {
                let norm = Prologue::RmsNorm {
                    gamma: &lw.attention_norm,
                    eps,
                };
                let ends = (norm, Epilogue::Store);
                let shape = (m, h, (hq + 2 * hkv) * d);
                linear_fused::<R, E>(client, &s.x, &lw.qkv, ends, &s.qkv, shape).map_err(kernel)?;
                launches += linears;
            }
            if parts.attention || coded.is_some() {
                launches += 1;
                rope_append::<R, E>(
                    client,
                    &rope_shape,
                    &s.qkv,
                    (&self.cos, &self.sin),
                    &places,
                    (&row_seq, &row_pos),
                    &s.q,
                    (&self.k[l], &self.v[l]),
                    coded.map(|c| (&c.key_ring[l], slot * m)),
                )
                .map_err(kernel)?;
            }
            if let Some((c, (all, seq, pos))) = coded.zip(flush.as_ref()) {
                // The waiting keys' codes, straight into the code cache at their places.
                c.hash_keys(client, l, all, (seq, pos), (self.lens.len(), self.cap))
                    .map_err(kernel)?;
                launches += 1;
            }
            let selection = match pruned {
                Some((sp, p)) => {
                    if parts.retrieval {
                        hash_pack(client, &sp.decode.hash.query[l], &s.q, m, &sp.q_codes)
                            .map_err(kernel)?;
                        let plan = plan_handle
                            .as_ref()
                            .expect("plans exist with a sparse state");
                        // score_hist, count, compact.
                        sp.selector.run_uploaded(
                            client,
                            &sp.q_codes,
                            &sp.codes[l],
                            plan,
                            max_len,
                            &sp.lists,
                        );
                        launches += 4;
                    }
                    read += p
                        .iter()
                        .zip(pad)
                        .filter(|(_, &padded)| !padded)
                        .map(|(p, _)| p.selected() as f64 / p.len as f64)
                        .sum::<f64>()
                        / real as f64;
                    let longest = p.iter().map(SequencePlan::selected).max().unwrap_or(0);
                    Some((&sp.lists, longest))
                }
                None => {
                    read += 1.0;
                    None
                }
            };
            if parts.attention {
                // partial + combine.
                attend::<R, E>(
                    client,
                    &self.attend_shape,
                    &s.q,
                    &self.k[l],
                    &self.v[l],
                    kv,
                    &query_rows,
                    selection,
                    &s.attended,
                )
                .map_err(kernel)?;
                launches += 2;
            }
            if !parts.weights {
                continue;
            }
            launches += 3 * linears;
            let none = Prologue::None;
            let ends = (none, Epilogue::Accumulate);
            linear_fused::<R, E>(client, &s.attended, &lw.o, ends, &s.x, (m, hq * d, h))
                .map_err(kernel)?;
            let norm = Prologue::RmsNorm {
                gamma: &lw.mlp_norm,
                eps,
            };
            let ends = (norm, Epilogue::SwiGlu { up: &lw.up });
            let shape = (m, h, c.intermediate_size);
            linear_fused::<R, E>(client, &s.x, &lw.gate, ends, &s.hidden, shape).map_err(kernel)?;
            let ends = (none, Epilogue::Accumulate);
            let shape = (m, c.intermediate_size, h);
            linear_fused::<R, E>(client, &s.hidden, &lw.down, ends, &s.x, shape).map_err(kernel)?;
        }
        if parts.weights {
            let norm = Prologue::RmsNorm {
                gamma: &w.norm,
                eps,
            };
            let shape = (m, h, c.vocab_size);
            let ends = (norm, Epilogue::Store);
            linear_fused::<R, E>(client, &s.x, &w.lm_head, ends, &s.logits, shape)
                .map_err(kernel)?;
            launches += linears;
        }
        if let (Some(sp), Some((_, hashed))) = (self.sparse.as_mut(), ring) {
            if hashed {
                sp.pending.clear();
                sp.junk.clear();
            } else {
                sp.pending.extend_from_slice(&places);
                let padded = places.iter().zip(pad).filter(|(_, &p)| p);
                sp.junk.extend(padded.map(|(p, _)| *p));
            }
        }
        self.launches = launches;
        self.read_share = read / c.num_hidden_layers as f64;
        for (p, _) in places.iter().zip(pad).filter(|(_, &padded)| !padded) {
            self.lens[p.seq] += 1;
        }
        Ok(())
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
