//! The fused decode path for cube backends (CUDA, wgpu): one decode step of the whole model as a
//! short, fixed sequence of CubeCL kernel launches on raw device buffers, instead of ~77 Burn
//! tensor ops per layer (each a launch plus host-side bookkeeping).
//!
//! Per layer, 7 launches: fused QKV linear (RMSNorm as its prologue) → RoPE + KV-cache append →
//! split-K attention (2) → output linear accumulated into the residual → gate/up linear (RMSNorm
//! prologue, SwiGLU epilogue) → down linear accumulated into the residual. Plus the embedding
//! lookup and the LM head (final norm as prologue) once per step. The linear kernel streams each weight once per step
//! (bandwidth-bound at decode), so the step costs the weight bytes plus the K/V bytes plus the
//! launches.
//!
//! Prefill stays on the Burn model (its matmuls are compute-bound and fine); the decoder takes
//! over the filled KV cache. Benchmarks build the decoder directly with synthetic weights and a
//! randomly filled cache ([`Decoder::synthetic`]).

mod cuda_graph;
mod decoder;
mod graph;
mod inputs;
mod sparse;
mod weights;

pub use decoder::{rope_tables, Decoder, StepParts, StepRow};
pub use graph::{record_once, GraphError, GraphMode, GraphState};
pub use inputs::span_of;
pub use sparse::{random_codes, FusedHash, SparseDecode};
pub(crate) use weights::handle_of;
pub use weights::{DecoderWeights, LayerWeights};

use crate::error::LlamaError;

/// A decode engine behind a trait object, so generation needs no knowledge of the runtime or
/// element type.
pub trait FastDecode {
    /// Decodes one token for each row (sequence, token) at that sequence's next position and
    /// returns the logits `[rows][vocab]`.
    fn step(&mut self, rows: &[StepRow]) -> Result<Vec<f32>, LlamaError>;
    /// [`Self::step`] where the rows with `pad[i]` only fill a full batch (a sequence that is idle
    /// or decodes elsewhere): their sequences keep their lengths, and what the step wrote past
    /// them is junk that the next real token at that place replaces.
    fn step_padded(&mut self, rows: &[StepRow], pad: &[bool]) -> Result<Vec<f32>, LlamaError>;
    /// Tokens cached per sequence.
    fn lens(&self) -> &[usize];
    /// Empties sequence `seq` (its length goes to 0; its rows are overwritten by what comes next).
    fn forget(&mut self, seq: usize) -> Result<(), LlamaError>;
    /// Kernel launches of the last step.
    fn launches(&self) -> usize;
    /// Share of the cached K/V rows the last step read, over all layers and rows.
    fn read_share(&self) -> f64;
    /// Whether every step must cover all sequences, in order (sparse decoding).
    fn full_batch(&self) -> bool;
    /// Records and replays steps as CUDA graphs where `mode` asks for it (see
    /// [`Decoder::set_graphs`]).
    fn set_graphs(&mut self, mode: GraphMode) -> Result<(), LlamaError>;
    /// What the decoder does with its steps: plain launches or graph replays.
    fn graph_state(&self) -> GraphState;
}
