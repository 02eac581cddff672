//! The scheduler: one OS thread owns the model and a fixed pool of sequence slots (continuous
//! batching, as llama.cpp's server does).
//!
//! Each iteration: take new requests off the ingress channel (blocking only when nothing runs),
//! drop cancelled ones, admit queued requests into free slots (each prefilled alone, so a long
//! prompt costs its own length, not the batch's), then run one decode step for every generating
//! slot as one ragged batch (one batch per attention mode in use). Finished or cancelled sequences
//! free their slot at once; the next queued request takes it in the same iteration.
//!
//! The engine never waits on a client: events go out on unbounded channels (a sequence sends at
//! most `max_tokens` + 1 of them). A panic in one request's prefill fails that request only; a
//! panic in a decode step fails the sequences of that step, never the server.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use spotlight_llama::sampling::{Sampler, Sampling};
use tokio::sync::mpsc::UnboundedSender;

use crate::metrics::Metrics;

/// Which attention a request decodes with: a mode the engine was started with, by name, and
/// optionally another budget (fraction of the cached tokens) for a sparse mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    pub attention: String,
    pub budget: Option<f64>,
}

/// The model side of the scheduler: slots of K/V cache and the two kinds of forward pass.
/// [`crate::llama::LlamaEngine`] runs a real model; tests use a fake.
pub trait Engine {
    fn slots(&self) -> usize;
    /// Tokens one slot holds (prompt + generated).
    fn ctx_size(&self) -> usize;
    fn vocab(&self) -> usize;
    /// Prefills `prompt` into `slot` (replacing what it held) and returns the logits of its last
    /// position [vocab].
    fn prefill(&mut self, slot: usize, prompt: &[u32], mode: &Mode) -> Result<Vec<f32>, String>;
    /// Appends one token to each (slot, token) row and returns the logits [rows][vocab].
    fn decode(&mut self, rows: &[(usize, u32)], mode: &Mode) -> Result<Vec<f32>, String>;
    /// Share of a slot's `len` cached K/V rows one decode step reads under `mode` (1 = dense).
    fn read_share(&self, mode: &Mode, len: usize) -> f64;
    /// Forgets what `slot` holds.
    fn free(&mut self, slot: usize);
}

/// How one request samples and when it stops.
#[derive(Debug, Clone)]
pub struct Params {
    pub max_tokens: usize,
    pub sampling: Sampling,
    pub repetition_penalty: f32,
    /// OpenAI's penalties over the tokens generated so far: `presence` once per distinct token,
    /// `frequency` per occurrence, subtracted from the logits.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: u64,
    /// Generation ends at any of these (the token is not returned).
    pub stop_ids: Vec<u32>,
    pub mode: Mode,
    /// Panic in this request's prefill (only honoured when the server runs with fault injection:
    /// the tests' way to prove one failing request leaves the others alone).
    pub fault: bool,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// A stop token (or, decided by the caller, a stop string).
    Stop,
    /// `max_tokens` reached.
    Length,
}

impl Finish {
    /// The OpenAI `finish_reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// What the engine tells a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Token(u32),
    Done(Finish),
    Error(String),
}

/// A request handed to the engine.
pub struct Submit {
    pub prompt: Vec<u32>,
    pub params: Params,
    pub events: UnboundedSender<Event>,
    /// Set by the HTTP side when the client is gone (or a stop string matched).
    pub cancel: Arc<AtomicBool>,
    /// Admission permit (queue + slots); released when the engine drops the request.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
    pub queued_at: Instant,
}

impl Submit {
    fn gone(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

/// Messages on the engine's ingress channel.
pub enum Msg {
    Submit(Box<Submit>),
    /// Ends every queued and running request with an error event (shutdown after the drain).
    CancelAll(String),
    /// Exit once nothing is queued or running.
    Shutdown,
}

/// Scheduler limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Prompt tokens prefilled per iteration before the running sequences get their next token
    /// (the first admitted prompt always runs, whatever its length).
    pub max_prefill_tokens: usize,
    /// Honour [`Params::fault`].
    pub fault_injection: bool,
}

/// A running sequence.
struct Seq {
    sub: Box<Submit>,
    sampler: Sampler,
    /// Prompt + generated tokens (the repetition penalty's "seen").
    seen: Vec<u32>,
    /// Occurrences of each generated token (presence/frequency penalties).
    counts: HashMap<u32, u32>,
    generated: usize,
    /// Tokens in the slot's cache.
    len: usize,
    /// The token the next decode step feeds.
    next: u32,
}

impl Seq {
    /// Samples from one row of logits; returns the token.
    fn sample(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.sub.params;
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
        self.sampler.sample(logits, &self.seen)
    }

    /// Takes a sampled token: sends it (or ends the sequence). Returns whether it goes on.
    fn accept(&mut self, token: u32, ctx: usize, metrics: &Metrics) -> bool {
        let p = &self.sub.params;
        if p.stop_ids.contains(&token) {
            let _ = self.sub.events.send(Event::Done(Finish::Stop));
            return false;
        }
        let _ = self.sub.events.send(Event::Token(token));
        metrics.generated_tokens.fetch_add(1, Ordering::Relaxed);
        self.generated += 1;
        self.seen.push(token);
        *self.counts.entry(token).or_default() += 1;
        if self.generated >= p.max_tokens || self.len >= ctx {
            let _ = self.sub.events.send(Event::Done(Finish::Length));
            return false;
        }
        self.next = token;
        true
    }
}

/// Runs the scheduler until [`Msg::Shutdown`] (or every sender is gone) and nothing is left.
pub fn run<E: Engine>(engine: &mut E, rx: Receiver<Msg>, cfg: &SchedulerConfig, metrics: &Metrics) {
    let n = engine.slots();
    let ctx = engine.ctx_size();
    let vocab = engine.vocab();
    let mut slots: Vec<Option<Seq>> = (0..n).map(|_| None).collect();
    let mut queue: VecDeque<Box<Submit>> = VecDeque::new();
    let mut stopping = false;
    loop {
        let idle = slots.iter().all(Option::is_none) && queue.is_empty();
        if idle {
            metrics.set_gauges(0, 0);
            if stopping {
                return;
            }
            // Nothing runs: sleep until a message comes.
            match rx.recv() {
                Ok(m) => on_msg(m, &mut queue, &mut slots, engine, &mut stopping),
                Err(_) => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(m) => on_msg(m, &mut queue, &mut slots, engine, &mut stopping),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stopping = true;
                    break;
                }
            }
        }
        // Departed clients: drop them from the queue, free their slots.
        queue.retain(|s| {
            let gone = s.gone();
            if gone {
                metrics.cancelled_queued.fetch_add(1, Ordering::Relaxed);
            }
            !gone
        });
        for (i, slot) in slots.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|s| s.sub.gone()) {
                *slot = None;
                engine.free(i);
                metrics.cancelled_running.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Admission, FIFO, into free slots.
        let mut prefilled = 0;
        while let Some(free) = slots.iter().position(Option::is_none) {
            let Some(next) = queue.front() else { break };
            if prefilled > 0 && prefilled + next.prompt.len() > cfg.max_prefill_tokens {
                break;
            }
            let sub = queue.pop_front().expect("front exists");
            prefilled += sub.prompt.len();
            metrics.observe_queue_wait(sub.queued_at.elapsed().as_secs_f64());
            metrics.set_gauges(busy(&slots) + 1, queue.len());
            let fault = cfg.fault_injection && sub.params.fault;
            let t0 = Instant::now();
            let out = catch_unwind(AssertUnwindSafe(|| {
                if fault {
                    panic!("fault injected into this request's prefill");
                }
                engine.prefill(free, &sub.prompt, &sub.params.mode)
            }));
            metrics.observe_prefill(sub.prompt.len(), t0.elapsed().as_secs_f64());
            match out {
                Ok(Ok(mut logits)) if logits.len() == vocab => {
                    let p = &sub.params;
                    let mut seq = Seq {
                        sampler: Sampler::new(p.sampling.clone(), p.repetition_penalty, p.seed),
                        seen: sub.prompt.clone(),
                        counts: HashMap::new(),
                        generated: 0,
                        len: sub.prompt.len(),
                        next: 0,
                        sub,
                    };
                    let token = seq.sample(&mut logits);
                    if seq.accept(token, ctx, metrics) {
                        slots[free] = Some(seq);
                    } else {
                        engine.free(free);
                    }
                }
                failed => {
                    let why = match failed {
                        Ok(Ok(l)) => {
                            format!("prefill returned {} logits, expected {vocab}", l.len())
                        }
                        Ok(Err(e)) => e,
                        Err(panic) => format!("internal error: {}", panic_message(&*panic)),
                    };
                    metrics.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = sub.events.send(Event::Error(why));
                    engine.free(free);
                }
            }
        }
        metrics.set_gauges(busy(&slots), queue.len());
        // One decode step per attention mode in use.
        let mut groups: Vec<(Mode, Vec<usize>)> = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            if let Some(s) = s {
                let mode = &s.sub.params.mode;
                match groups.iter_mut().find(|(m, _)| m == mode) {
                    Some((_, v)) => v.push(i),
                    None => groups.push((mode.clone(), vec![i])),
                }
            }
        }
        for (mode, members) in groups {
            let rows: Vec<(usize, u32)> = members
                .iter()
                .map(|&i| (i, slots[i].as_ref().expect("member").next))
                .collect();
            let t0 = Instant::now();
            let out = catch_unwind(AssertUnwindSafe(|| engine.decode(&rows, &mode)));
            let secs = t0.elapsed().as_secs_f64();
            match out {
                Ok(Ok(logits)) if logits.len() == rows.len() * vocab => {
                    let mut read = 0.0;
                    for (r, &i) in members.iter().enumerate() {
                        let seq = slots[i].as_mut().expect("member");
                        seq.len += 1;
                        read += engine.read_share(&mode, seq.len);
                        let mut row = logits[r * vocab..(r + 1) * vocab].to_vec();
                        let token = seq.sample(&mut row);
                        if !seq.accept(token, ctx, metrics) {
                            slots[i] = None;
                            engine.free(i);
                        }
                    }
                    metrics.observe_decode(rows.len(), read, secs);
                }
                failed => {
                    let why = match failed {
                        Ok(Ok(l)) => format!("decode returned {} logits", l.len()),
                        Ok(Err(e)) => e,
                        Err(panic) => format!("internal error: {}", panic_message(&*panic)),
                    };
                    for &i in &members {
                        if let Some(seq) = slots[i].take() {
                            metrics.failed.fetch_add(1, Ordering::Relaxed);
                            let _ = seq.sub.events.send(Event::Error(why.clone()));
                        }
                        engine.free(i);
                    }
                }
            }
        }
        metrics.set_gauges(busy(&slots), queue.len());
    }
}

fn busy(slots: &[Option<Seq>]) -> usize {
    slots.iter().filter(|s| s.is_some()).count()
}

fn on_msg<E: Engine>(
    m: Msg,
    queue: &mut VecDeque<Box<Submit>>,
    slots: &mut [Option<Seq>],
    engine: &mut E,
    stopping: &mut bool,
) {
    match m {
        Msg::Submit(s) => queue.push_back(s),
        Msg::CancelAll(why) => {
            for s in queue.drain(..) {
                let _ = s.events.send(Event::Error(why.clone()));
            }
            for (i, slot) in slots.iter_mut().enumerate() {
                if let Some(seq) = slot.take() {
                    let _ = seq.sub.events.send(Event::Error(why.clone()));
                    engine.free(i);
                }
            }
        }
        Msg::Shutdown => *stopping = true,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
