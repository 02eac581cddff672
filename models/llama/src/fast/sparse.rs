//! Spotlight Attention inside the fused decoder (METHOD.md "Decoding"), group layout: each new
//! key is hashed once per KV head (its code is needed only once it leaves the local window, so
//! the keys of `window + 1` steps are hashed in one launch); each step hashes the query, scores
//! every cached code by XOR + popcount, selects sink + top-k + window per KV head and attends
//! over the selected rows only. Layers below `dense_layers` stay dense.

use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use spotlight_kernels::device::check_bytes;
use spotlight_kernels::fill::random_bits;
use spotlight_kernels::hash_pack::{hash_pack_placed, DeviceHashWeights};
use spotlight_kernels::reference::HashWeights;
use spotlight_kernels::rope_append::{upload_places, RowPlace};
use spotlight_kernels::select::{Selection as IndexLists, Selector};
use spotlight_kernels::{Budget, CodeShape, KernelError, SequencePlan};

use crate::config::LlamaConfig;
use crate::synthetic::random_vec;

/// A trained hash on the device, in the group layout: one query network per query head and
/// one key network per KV head, for every layer.
#[derive(Debug, Clone)]
pub struct FusedHash {
    pub query: Vec<DeviceHashWeights>,
    pub key: Vec<DeviceHashWeights>,
    pub bits: usize,
}

/// What the decoder needs to attend sparsely.
#[derive(Debug, Clone)]
pub struct SparseDecode {
    pub hash: FusedHash,
    pub budget: Budget,
    pub dense_layers: usize,
    /// Sequences shorter than this attend densely (see `Selection::dense_below`).
    pub dense_below: usize,
}

/// Device state of sparse decoding: key codes per layer and per-step workspaces.
pub(super) struct SparseState {
    pub decode: SparseDecode,
    /// Per layer `[batch][cap][kv_heads][words]` u32 (unused for dense layers).
    pub codes: Vec<Handle>,
    pub selector: Selector,
    pub lists: IndexLists,
    /// This step's query codes `[rows][q_heads][words]`.
    pub q_codes: Handle,
    /// Per coded layer, the rotated keys (f32 `[steps][rows][kv_heads][d]`) of the steps whose
    /// keys are not hashed yet: a key's code is first needed when it leaves the local window,
    /// so keys are hashed in one launch per `window + 1` steps instead of one per step.
    pub key_ring: Vec<Handle>,
    /// The places of the keys waiting in `key_ring`, step after step.
    pub pending: Vec<RowPlace>,
    /// The places among `pending` that padding rows wrote (junk past their sequence's length):
    /// a real key at one of them must not be hashed in the same launch as the junk.
    pub junk: Vec<RowPlace>,
}

impl SparseState {
    /// `codes` holds the codes of the keys already cached, one buffer per layer.
    pub fn new<R: Runtime>(
        client: &ComputeClient<R>,
        decode: SparseDecode,
        config: &LlamaConfig,
        (batch, cap): (usize, usize),
        codes: Vec<Handle>,
    ) -> Result<Self, KernelError> {
        let layers = config.num_hidden_layers;
        let (hq, hkv, d) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let h = &decode.hash;
        // Every network set hashes `heads` vectors of size d into codes of h.bits bits.
        let fits = |nets: &[DeviceHashWeights], heads: usize| {
            nets.len() == layers
                && nets.iter().all(|w| {
                    w.heads == heads * w.replicas && w.dim == d && w.replicas * d == h.bits
                })
        };
        let heads_ok = fits(&h.query, hq) && fits(&h.key, hkv) && codes.len() == layers;
        if !heads_ok {
            return Err(KernelError::Length {
                what: "hash networks per layer (query heads, KV heads) and code buffers",
                expected: layers,
                got: h.query.len().min(h.key.len()).min(codes.len()),
            });
        }
        decode.budget.validate()?;
        let shape = CodeShape::new(hq, hkv, h.bits)?;
        for c in &codes[decode.dense_layers.min(layers)..] {
            check_bytes(
                c,
                4 * batch * cap * hkv * shape.words(),
                "key code cache (bytes)",
            )?;
        }
        let selector = Selector::new(client, shape, batch, cap)?;
        let most = decode.budget.plan(cap).selected().max(1);
        let words = shape.words();
        Ok(Self {
            lists: IndexLists::new(client, batch, hkv, most, 0),
            selector,
            codes,
            q_codes: client.empty(4 * batch * hq * words),
            key_ring: (0..layers)
                .map(|l| {
                    let rows = if l < decode.dense_layers {
                        1
                    } else {
                        decode.ring_steps() * batch
                    };
                    client.empty(4 * rows * hkv * d)
                })
                .collect(),
            pending: Vec::new(),
            junk: Vec::new(),
            decode,
        })
    }

    /// Steps whose keys wait in the ring (every sparse step covers every sequence).
    pub fn pending_steps(&self, batch: usize) -> usize {
        self.pending.len() / batch.max(1)
    }

    /// Hashes every waiting key of every coded layer into the code cache and empties the ring.
    pub fn hash_pending<R: Runtime>(
        &mut self,
        client: &ComputeClient<R>,
        (batch, cap): (usize, usize),
    ) -> Result<(), KernelError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (seq, pos) = upload_places(client, &self.pending);
        for l in self.decode.dense_layers..self.codes.len() {
            self.hash_keys(client, l, &self.pending, (&seq, &pos), (batch, cap))?;
        }
        self.pending.clear();
        self.junk.clear();
        Ok(())
    }

    /// Layer `l`'s ring rows, the keys at `places` (uploaded as `seq`/`pos`), hashed into its
    /// code cache.
    pub fn hash_keys<R: Runtime>(
        &self,
        client: &ComputeClient<R>,
        l: usize,
        places: &[RowPlace],
        (seq, pos): (&Handle, &Handle),
        (batch, cap): (usize, usize),
    ) -> Result<(), KernelError> {
        hash_pack_placed(
            client,
            &self.decode.hash.key[l],
            &self.key_ring[l],
            places,
            (seq, pos),
            &self.codes[l],
            (batch, cap),
        )
    }

    pub fn plans(&self, lens: &[usize]) -> Vec<SequencePlan> {
        let d = &self.decode;
        lens.iter()
            .map(|&n| {
                if n < d.dense_below {
                    SequencePlan::keep_all(n)
                } else {
                    d.budget.plan(n)
                }
            })
            .collect()
    }
}

/// Steps a new key's hashing may wait at most (the default window).
pub const MAX_DEFERRED_STEPS: usize = 64;

impl SparseDecode {
    /// Steps of new keys the key ring holds: a key inside the local window is never scored, so
    /// its code may wait until `window` more steps have passed (at most [`MAX_DEFERRED_STEPS`],
    /// which bounds the ring's memory whatever the window).
    pub fn ring_steps(&self) -> usize {
        self.budget.window.min(MAX_DEFERRED_STEPS) + 1
    }

    /// SYNTHETIC random hash networks of `config`'s shape (codes of `head_dim` bits), for
    /// benchmarks: what they retrieve means nothing, what they cost is the real cost.
    pub fn synthetic<R: Runtime>(
        client: &ComputeClient<R>,
        config: &LlamaConfig,
        budget: Budget,
        seed: u64,
    ) -> Result<Self, KernelError> {
        let d = config.head_dim;
        let mut next = seed;
        let mut nets = |heads: usize| -> Result<DeviceHashWeights, KernelError> {
            let mut draw = |n: usize| {
                next += 1;
                random_vec(n, next, 1.0 / (d as f32).sqrt())
            };
            let w = HashWeights::new(
                heads,
                d,
                draw(heads * d * d),
                draw(heads * d),
                draw(heads * d * d),
                draw(heads * d),
            )?;
            Ok(DeviceHashWeights::upload(client, &w))
        };
        let layers = config.num_hidden_layers;
        let query = (0..layers)
            .map(|_| nets(config.num_attention_heads))
            .collect::<Result<_, _>>()?;
        let key = (0..layers)
            .map(|_| nets(config.num_key_value_heads))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            hash: FusedHash {
                query,
                key,
                bits: d,
            },
            budget,
            dense_layers: 2,
            dense_below: 0,
        })
    }
}

/// SYNTHETIC key codes (random bits) for a randomly filled cache of `batch` × `cap` tokens,
/// one buffer per layer.
pub fn random_codes<R: Runtime>(
    client: &ComputeClient<R>,
    config: &LlamaConfig,
    (batch, cap): (usize, usize),
    seed: u32,
) -> Vec<Handle> {
    let words = batch * cap * config.num_key_value_heads * config.head_dim / 32;
    (0..config.num_hidden_layers as u32)
        .map(|l| random_bits(client, words, seed.wrapping_add(l)))
        .collect()
}
