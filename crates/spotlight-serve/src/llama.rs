//! The [`Engine`] over a Llama-family model: one KV cache of `slots` rows × `ctx` positions.
//!
//! A prompt is prefilled alone in a cache of its own length (what `generate` does for one
//! prompt, so the first token is the same), and its K/V rows (and the selector's key codes) are
//! then copied into the slot's row of the shared cache. Decode steps run every generating slot
//! as one ragged batch over the shared cache; slots without a token this step are left alone.
//!
//! Where the backend has the fused decoder (CUDA, wgpu) and `fused` is on, decode steps run on
//! it, as `generate`'s do: it takes over the shared cache's buffers, and is let go (its lengths
//! written back) before a prefill writes into the cache or a request asks for another attention.
//! Every fused step covers every slot; slots not in the step only pad it.

use burn::tensor::{Int, Tensor, TensorData};
use spotlight_llama::cache::KvCache;
use spotlight_llama::fast::{FastDecode, GraphMode, StepRow};
use spotlight_llama::{Llama, LlamaBackend, Selection};

use crate::engine::{Engine, Mode};

/// Prompt tokens of the long warm-up (kernels compiled and tuned before the first request).
const WARM_UP_TOKENS: usize = 1024;

/// An attention the engine can run: dense (`selection` None) or a selector with its budget.
pub struct AttentionMode<B: LlamaBackend> {
    pub name: String,
    pub selection: Option<Selection<B>>,
}

/// The fused decoder over the shared cache, and the attention it was built for.
struct Fused {
    decoder: Box<dyn FastDecode>,
    mode: Mode,
}

pub struct LlamaEngine<B: LlamaBackend> {
    model: Llama<B>,
    /// Its `lens` are stale while `fused` holds the cache (the decoder's are current).
    cache: KvCache<B>,
    modes: Vec<AttentionMode<B>>,
    /// Our kernels where the backend has them: dense attention on the causal kernel, decode steps
    /// on the fused decoder.
    kernels: bool,
    /// Whether the fused decoder records its steps as CUDA graphs.
    graphs: GraphMode,
    fused: Option<Fused>,
    /// Modes the backend has no fused decoder for (decoded with tensor ops).
    declined: Vec<Mode>,
}

impl<B: LlamaBackend> LlamaEngine<B> {
    /// `modes[0]` is the default. `kernels`: our kernels where the backend has them (dense
    /// attention on the causal kernel, decode steps on the fused decoder), as `generate` does by
    /// default; off: Burn tensor ops throughout.
    pub fn new(
        model: Llama<B>,
        slots: usize,
        ctx: usize,
        modes: Vec<AttentionMode<B>>,
        kernels: bool,
    ) -> Result<Self, spotlight_llama::LlamaError> {
        let cache = model.new_cache(slots, ctx)?;
        Ok(Self {
            model,
            cache,
            modes,
            kernels,
            graphs: GraphMode::Off,
            fused: None,
            declined: Vec::new(),
        })
    }

    /// Records the fused decoder's steps as CUDA graphs as `mode` says (default: off).
    pub fn with_graphs(mut self, mode: GraphMode) -> Self {
        self.graphs = mode;
        self
    }

    /// Runs a prompt and one decode step in every mode, so the kernels are compiled (and the
    /// matmuls tuned) before the first request rather than during it. Where steps run on the
    /// fused decoder, the prompt is long enough for every layer to select by score (past the
    /// sink, window, minimum and `dense_below`): its kernels are compiled once for every length,
    /// so one sparse step compiles them all. Elsewhere a short prompt does.
    pub fn warm_up(&mut self) -> Result<(), String> {
        let modes: Vec<Mode> = self
            .modes
            .iter()
            .map(|m| Mode {
                attention: m.name.clone(),
                budget: None,
            })
            .collect();
        for mode in &modes {
            self.warm(mode, 8)?;
            if self.decodes_fused() {
                self.warm(mode, self.selective_len(mode)?)?;
            }
        }
        Ok(())
    }

    /// A prompt of about `len` tokens (within a slot), one decode step, and the slot freed.
    fn warm(&mut self, mode: &Mode, len: usize) -> Result<(), String> {
        let n = len.min(self.ctx_size() - 1).max(1);
        let prompt: Vec<u32> = (0..n as u32).map(|t| t % self.vocab() as u32).collect();
        self.prefill(0, &prompt, mode)?;
        self.decode(&[(0, 0)], mode)?;
        self.free(0);
        Ok(())
    }

    /// A length at which `mode` selects keys by score in every sparse layer (and at least
    /// [`WARM_UP_TOKENS`], so prefill meets a long prompt too).
    fn selective_len(&self, mode: &Mode) -> Result<usize, String> {
        Ok(match self.selection(mode)? {
            Some(s) => {
                let b = s.budget;
                let fixed = b.sink + b.window + b.min_tokens;
                // Past `fixed`, top-k < middle once the fraction leaves room: 2·fixed does for
                // fractions up to 1/2.
                (2 * fixed + 1).max(s.dense_below + 1).max(WARM_UP_TOKENS)
            }
            None => WARM_UP_TOKENS,
        })
    }

    /// Whether the last decode step ran on the fused decoder.
    pub fn decodes_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Hands the cache back from the fused decoder (which hashes its waiting keys as it goes).
    fn release(&mut self) {
        if let Some(f) = self.fused.take() {
            self.cache.lens.copy_from_slice(f.decoder.lens());
        }
    }

    /// The fused decoder for `mode`, built over the cache if needed; None: tensor ops.
    fn fused_for(&mut self, mode: &Mode) -> Result<Option<&mut Fused>, String> {
        if !self.kernels || self.declined.contains(mode) {
            self.release();
            return Ok(None);
        }
        if self.fused.as_ref().is_some_and(|f| &f.mode != mode) {
            self.release();
        }
        if self.fused.is_none() {
            self.cache.selection = self.selection(mode)?;
            self.cache.attention_kernels = true;
            match B::fast_decoder(&self.model, &self.cache).map_err(err)? {
                Some(mut decoder) => {
                    decoder.set_graphs(self.graphs).map_err(err)?;
                    self.fused = Some(Fused {
                        decoder,
                        mode: mode.clone(),
                    })
                }
                None => {
                    self.declined.push(mode.clone());
                    return Ok(None);
                }
            }
        }
        Ok(self.fused.as_mut())
    }

    /// Names of the modes, the default first.
    pub fn mode_names(&self) -> Vec<String> {
        self.modes.iter().map(|m| m.name.clone()).collect()
    }

    fn selection(&self, mode: &Mode) -> Result<Option<Selection<B>>, String> {
        let m = self
            .modes
            .iter()
            .find(|m| m.name == mode.attention)
            .ok_or_else(|| format!("attention {} is not loaded", mode.attention))?;
        Ok(match (&m.selection, mode.budget) {
            (Some(s), Some(fraction)) => {
                let mut s = s.clone();
                s.budget.fraction = fraction;
                Some(s)
            }
            (s, _) => s.clone(),
        })
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<B: LlamaBackend> Engine for LlamaEngine<B> {
    fn slots(&self) -> usize {
        self.cache.batch()
    }

    fn ctx_size(&self) -> usize {
        self.cache.capacity()
    }

    fn vocab(&self) -> usize {
        self.model.config.vocab_size
    }

    fn prefill(&mut self, slot: usize, prompt: &[u32], mode: &Mode) -> Result<Vec<f32>, String> {
        let n = prompt.len();
        if n == 0 || n > self.ctx_size() {
            return Err(format!(
                "prompt of {n} tokens does not fit a slot of {} tokens",
                self.ctx_size()
            ));
        }
        // The decoder lets go of the cache's buffers, so the writes below go to the ones it
        // will take again.
        self.release();
        let mut scratch = self.model.new_cache(1, n).map_err(err)?;
        scratch.selection = self.selection(mode)?;
        scratch.attention_kernels = self.kernels;
        // sync: read the logits of the prompt's last position.
        let logits = self
            .model
            .forward_last(&[prompt.to_vec()], &mut scratch)
            .map_err(err)?
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let slots = self.slots();
        let cap = self.ctx_size();
        for (dst, src) in self.cache.layers.iter_mut().zip(scratch.layers) {
            let [_, kv, _, d] = src.k.dims();
            let rows = [slot..slot + 1, 0..kv, 0..n, 0..d];
            let (k, v) = (src.k, src.v);
            dst.k.inplace(|c| c.slice_assign(rows.clone(), k));
            dst.v.inplace(|c| c.slice_assign(rows, v));
            if let Some(codes) = src.codes {
                let [_, _, _, width] = codes.dims();
                let device = codes.device();
                let target = dst
                    .codes
                    .get_or_insert_with(|| Tensor::zeros([slots, 1, cap, width], &device));
                target.inplace(|c| c.slice_assign([slot..slot + 1, 0..1, 0..n, 0..width], codes));
                dst.code_sets = src.code_sets;
            }
        }
        self.cache.lens[slot] = n;
        Ok(logits)
    }

    fn decode(&mut self, rows: &[(usize, u32)], mode: &Mode) -> Result<Vec<f32>, String> {
        let (slots, vocab) = (self.slots(), self.vocab());
        if let Some(f) = self.fused_for(mode)? {
            // Every slot in order, those without a token only padding the step: the kernels are
            // compiled per row count, so one count means one compile (not one per batch size the
            // traffic happens to make), and idle rows cost little (weights are read once a step
            // whatever the rows; a padding row attends over its own cached rows only).
            let mut step: Vec<StepRow> = (0..slots).map(|seq| StepRow { seq, token: 0 }).collect();
            let mut pad = vec![true; slots];
            for &(s, t) in rows {
                step[s].token = t;
                pad[s] = false;
            }
            let all = f.decoder.step_padded(&step, &pad).map_err(err)?;
            let mut logits = Vec::with_capacity(rows.len() * vocab);
            for &(s, _) in rows {
                logits.extend_from_slice(&all[s * vocab..(s + 1) * vocab]);
            }
            return Ok(logits);
        }
        let mut tokens = vec![Vec::new(); slots];
        for &(s, t) in rows {
            tokens[s] = vec![t];
        }
        self.cache.selection = self.selection(mode)?;
        self.cache.attention_kernels = self.kernels;
        let logits = self
            .model
            .forward_last(&tokens, &mut self.cache)
            .map_err(err)?;
        let idx: Vec<i64> = rows.iter().map(|&(s, _)| s as i64).collect();
        let idx =
            Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), &logits.device());
        // sync: read the logits of this step's rows (one host round-trip per step).
        logits
            .select(0, idx)
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))
    }

    fn read_share(&self, mode: &Mode, len: usize) -> f64 {
        match self.selection(mode) {
            Ok(Some(s)) => s.read_share(self.model.config.num_hidden_layers, len),
            _ => 1.0,
        }
    }

    fn free(&mut self, slot: usize) {
        if let Some(f) = self.fused.as_mut() {
            if f.decoder.forget(slot).is_err() {
                // The decoder's state is in doubt: the next step builds a new one.
                self.release();
            }
        }
        self.cache.lens[slot] = 0;
    }
}
