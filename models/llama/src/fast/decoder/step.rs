//! One decode step: planned on the host (places, plans, spans, the key ring), its values written
//! to the device, then its kernels launched plainly or replayed from a recorded graph.

use burn_cubecl::cubecl::prelude::*;
use spotlight_kernels::attend::{attend_into, KvLayout, QueryRow, QueryRows};
use spotlight_kernels::embed::embed;
use spotlight_kernels::hash_pack::hash_pack;
use spotlight_kernels::linear::{linear_fused, Epilogue, Prologue, MAX_ROWS};
use spotlight_kernels::rope_append::{rope_append, KeyRows, RopeShape, RowPlace};
use spotlight_kernels::select::plan_words;
use spotlight_kernels::SequencePlan;

use super::{kernel, Decoder, StepParts, StepRow};
use crate::error::LlamaError;
use crate::fast::graph::{GraphMode, GraphState, StepShape};
use crate::fast::inputs::{span_of, StepWords};

impl<R: Runtime, E: Float + CubeElement> Decoder<R, E> {
    /// Runs one decode step; rows with `pad[i]` keep their sequence's length (see
    /// [`FastDecode::step_padded`]).
    pub(super) fn launch(
        &mut self,
        rows: &[StepRow],
        parts: StepParts,
        pad: &[bool],
    ) -> Result<(), LlamaError> {
        if rows.is_empty() {
            return Ok(());
        }
        let step = self.plan(rows, pad, parts)?;
        self.inputs.write(&self.client, &step.words);
        // Benchmarks time parts of a step alone: those launch plainly and leave the graphs be.
        let whole = parts == StepParts::ALL;
        let mut graphs = if whole { self.graphs.take() } else { None };
        let launched = match graphs.as_mut() {
            Some(g) => g.run(step.shape, || self.kernels(&step, parts)),
            None => self.kernels(&step, parts),
        };
        let launched = match launched {
            Err(LlamaError::Graph(e)) if self.graph_mode == GraphMode::Auto => {
                // Recording failed: nothing of this step ran; it launches plainly from now on.
                graphs = None;
                self.graph_state = GraphState::Refused(e.to_string());
                self.kernels(&step, parts)
            }
            other => other,
        };
        if let Some(g) = graphs.as_ref() {
            self.graph_state = g.state();
        }
        if whole {
            self.graphs = graphs;
        }
        let launches = launched?;
        self.finish(&step, pad);
        self.launches = launches;
        Ok(())
    }

    /// Checks a step's rows and plans it on the host: places, plans, spans, the key ring.
    fn plan(
        &mut self,
        rows: &[StepRow],
        pad: &[bool],
        parts: StepParts,
    ) -> Result<Step, LlamaError> {
        let c = &self.weights.config;
        let m = rows.len();
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
            if r.token as usize >= c.vocab_size {
                return Err(LlamaError::TokenOutOfVocabulary {
                    token: r.token,
                    vocab: c.vocab_size,
                });
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
        let sparse = self.sparse.as_ref();
        // Budgets of this step (each row sees its own new token too).
        let plans = sparse.map(|s| s.plans(&places.iter().map(|p| p.pos + 1).collect::<Vec<_>>()));
        let prunes = plans
            .as_ref()
            .is_some_and(|p| p.iter().any(|p| p.selected() < p.len));
        let max_len = places.iter().map(|p| p.pos + 1).max().unwrap_or(0);
        let longest = plans.as_ref().map_or(0, |p| {
            p.iter().map(SequencePlan::selected).max().unwrap_or(0)
        });
        let list_cap = sparse.map_or(0, |s| s.lists.index_cap.max(longest));
        // This step's keys go to ring slot `slot` of each coded layer; when the ring is full
        // (a key is about to leave the window unhashed), every waiting key is hashed this step.
        let ring = sparse.filter(|_| parts.retrieval).map(|sp| {
            let slot = sp.pending_steps(m);
            (slot, slot + 1 >= sp.decode.ring_steps())
        });
        let flush = match (sparse, ring) {
            (Some(sp), Some((_, true))) => Some(
                sp.pending
                    .iter()
                    .chain(&places)
                    .copied()
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        // Share of the K/V rows read: sparse layers read their plans' rows, the others all.
        let sparse_share = plans.as_ref().map_or(1.0, |p| {
            p.iter()
                .zip(pad)
                .filter(|(_, &padded)| !padded)
                .map(|(p, _)| p.selected() as f64 / p.len as f64)
                .sum::<f64>()
                / real as f64
        });
        let layers = c.num_hidden_layers;
        let sparse_layers = match (sparse, prunes) {
            (Some(s), true) => layers - s.decode.dense_layers.min(layers),
            _ => 0,
        };
        let read_share =
            (sparse_layers as f64 * sparse_share + (layers - sparse_layers) as f64) / layers as f64;
        let column = |ps: &[RowPlace], f: fn(&RowPlace) -> usize| {
            ps.iter().map(|p| f(p) as u32).collect::<Vec<_>>()
        };
        let words = StepWords {
            tokens: rows.iter().map(|r| r.token).collect(),
            seq: column(&places, |p| p.seq),
            pos: column(&places, |p| p.pos),
            len: column(&places, |p| p.pos + 1),
            plan: plans.as_deref().map(plan_words).unwrap_or_default(),
            ring_row: ring.map_or(0, |(slot, _)| (slot * m) as u32),
            flush_seq: flush
                .as_deref()
                .map(|f| column(f, |p| p.seq))
                .unwrap_or_default(),
            flush_pos: flush
                .as_deref()
                .map(|f| column(f, |p| p.pos))
                .unwrap_or_default(),
        };
        let shape = StepShape {
            rows: m,
            span: span_of(max_len).min(self.cap),
            list_span: span_of(longest).min(list_cap),
            prunes,
            flush: flush.is_some(),
        };
        Ok(Step {
            places,
            words,
            ring,
            flush,
            shape,
            read_share,
        })
    }

    /// Launches a planned step's kernels (reading its values from `self.inputs`) and returns
    /// how many. Every argument follows from the step's shape and the decoder's buffers.
    fn kernels(&self, step: &Step, parts: StepParts) -> Result<usize, LlamaError> {
        let c = &self.weights.config;
        let shape = step.shape;
        let m = shape.rows;
        let places = &step.places;
        let client = &self.client;
        let s = &self.scratch;
        let inputs = &self.inputs;
        let (h, d) = (c.hidden_size, c.head_dim);
        let (hq, hkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let query_rows = QueryRows::on_device(
            places
                .iter()
                .map(|p| QueryRow {
                    seq: p.seq,
                    len: p.pos + 1,
                })
                .collect(),
            inputs.seq.clone(),
            inputs.len.clone(),
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
        let mut launches = 0;
        if parts.weights {
            embed::<R, E>(
                client,
                &w.embed,
                (c.vocab_size, h),
                &step.words.tokens,
                &inputs.tokens,
                &s.x,
            )
            .map_err(kernel)?;
            launches += 1;
        }
        for (l, lw) in w.layers.iter().enumerate() {
            let coded = sparse.filter(|s| parts.retrieval && l >= s.decode.dense_layers);
            let pruned = sparse.filter(|s| shape.prunes && l >= s.decode.dense_layers);
            if parts.weights {
                let norm = Prologue::RmsNorm {
                    gamma: &lw.attention_norm,
                    eps,
                };
                let ends = (norm, Epilogue::Store);
                let dims = (m, h, (hq + 2 * hkv) * d);
                linear_fused::<R, E>(client, &s.x, &lw.qkv, ends, &s.qkv, dims).map_err(kernel)?;
                launches += linears;
            }
            if parts.attention || coded.is_some() {
                launches += 1;
                let key_rows = coded.map(|sp| KeyRows {
                    rows: &sp.key_ring[l],
                    row0: &inputs.ring_row,
                    capacity: sp.decode.ring_steps() * self.lens.len(),
                });
                rope_append::<R, E>(
                    client,
                    &rope_shape,
                    &s.qkv,
                    (&self.cos, &self.sin),
                    places,
                    (&inputs.seq, &inputs.pos),
                    &s.q,
                    (&self.k[l], &self.v[l]),
                    key_rows,
                )
                .map_err(kernel)?;
            }
            if let Some((sp, all)) = coded.zip(step.flush.as_ref()) {
                // The waiting keys' codes, straight into the code cache at their places.
                let at = (&inputs.flush_seq, &inputs.flush_pos);
                sp.hash_keys(client, l, all, at, (self.lens.len(), self.cap))
                    .map_err(kernel)?;
                launches += 1;
            }
            if let Some(sp) = pruned.filter(|_| parts.retrieval) {
                hash_pack(client, &sp.decode.hash.query[l], &s.q, m, &sp.q_codes)
                    .map_err(kernel)?;
                // score_hist, count, compact.
                sp.selector.run_uploaded(
                    client,
                    &sp.q_codes,
                    &sp.codes[l],
                    &inputs.plan,
                    shape.span,
                    &sp.lists,
                );
                launches += 4;
            }
            if parts.attention {
                let (lists, span) = match pruned {
                    Some(sp) => (Some(&sp.lists), shape.list_span),
                    None => (None, shape.span),
                };
                // partial + combine.
                attend_into::<R, E>(
                    client,
                    &self.attend_shape,
                    (&s.q, &self.k[l], &self.v[l]),
                    kv,
                    &query_rows,
                    lists,
                    span,
                    &s.attended,
                    &self.attend_scratch,
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
            let dims = (m, h, c.intermediate_size);
            linear_fused::<R, E>(client, &s.x, &lw.gate, ends, &s.hidden, dims).map_err(kernel)?;
            let ends = (none, Epilogue::Accumulate);
            let dims = (m, c.intermediate_size, h);
            linear_fused::<R, E>(client, &s.hidden, &lw.down, ends, &s.x, dims).map_err(kernel)?;
        }
        if parts.weights {
            let norm = Prologue::RmsNorm {
                gamma: &w.norm,
                eps,
            };
            let dims = (m, h, c.vocab_size);
            let ends = (norm, Epilogue::Store);
            linear_fused::<R, E>(client, &s.x, &w.lm_head, ends, &s.logits, dims)
                .map_err(kernel)?;
            launches += linears;
        }
        Ok(launches)
    }

    /// What a launched step leaves on the host: the key ring's bookkeeping and the lengths.
    fn finish(&mut self, step: &Step, pad: &[bool]) {
        let places = &step.places;
        if let (Some(sp), Some((_, hashed))) = (self.sparse.as_mut(), step.ring) {
            if hashed {
                sp.pending.clear();
                sp.junk.clear();
            } else {
                sp.pending.extend_from_slice(places);
                let padded = places.iter().zip(pad).filter(|(_, &p)| p);
                sp.junk.extend(padded.map(|(p, _)| *p));
            }
        }
        self.read_share = step.read_share;
        for (p, _) in places.iter().zip(pad).filter(|(_, &padded)| !padded) {
            self.lens[p.seq] += 1;
        }
    }
}

/// A step planned on the host (see `Decoder::plan`).
struct Step {
    places: Vec<RowPlace>,
    words: StepWords,
    /// Ring slot of this step's keys, and whether this step hashes the whole ring.
    ring: Option<(usize, bool)>,
    /// The keys hashed this step when it empties the ring.
    flush: Option<Vec<RowPlace>>,
    shape: StepShape,
    read_share: f64,
}
