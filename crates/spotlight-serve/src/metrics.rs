//! Server metrics: atomics written by the engine and the HTTP handlers, read by `GET /metrics`
//! (Prometheus text format). Scraping never goes through the engine and changes nothing.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A float kept in an atomic (bits of an f64).
#[derive(Debug, Default)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub slots_total: AtomicUsize,
    pub slots_busy: AtomicUsize,
    /// Most slots that held a sequence at the same time.
    pub slots_busy_max: AtomicUsize,
    pub queue_depth: AtomicUsize,
    /// HTTP requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cancelled_queued: AtomicU64,
    pub cancelled_running: AtomicU64,
    pub failed: AtomicU64,
    pub prefill_calls: AtomicU64,
    pub prefill_secs: AtomicF64,
    pub decode_steps: AtomicU64,
    /// Sequences over all decode steps (divided by the steps: the mean batch).
    pub decode_rows: AtomicU64,
    /// Largest batch of one decode step.
    pub decode_rows_max: AtomicUsize,
    pub decode_secs: AtomicF64,
    /// Sum over decode rows of the share of that sequence's K/V rows attention read.
    pub kv_read_share_sum: AtomicF64,
    pub queue_wait_secs: AtomicF64,
    pub queue_waits: AtomicU64,
    pub ttft_secs: AtomicF64,
    pub ttfts: AtomicU64,
    /// Generated tokens per second over the last decode steps (engine-side window).
    pub tokens_per_second: AtomicF64,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    steps: std::collections::VecDeque<(Instant, usize)>,
}

/// Width of the tokens-per-second window.
const WINDOW_SECS: f64 = 10.0;

impl Metrics {
    pub fn new(slots: usize) -> Self {
        let m = Self::default();
        m.slots_total.store(slots, Ordering::Relaxed);
        m
    }

    pub fn count_request(&self, route: &str, status: u16) {
        let mut r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *r.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn set_gauges(&self, busy: usize, queued: usize) {
        self.slots_busy.store(busy, Ordering::Relaxed);
        self.slots_busy_max.fetch_max(busy, Ordering::Relaxed);
        self.queue_depth.store(queued, Ordering::Relaxed);
    }

    pub fn observe_queue_wait(&self, secs: f64) {
        self.queue_wait_secs.add(secs);
        self.queue_waits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_ttft(&self, secs: f64) {
        self.ttft_secs.add(secs);
        self.ttfts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_prefill(&self, tokens: usize, secs: f64) {
        self.prompt_tokens
            .fetch_add(tokens as u64, Ordering::Relaxed);
        self.prefill_calls.fetch_add(1, Ordering::Relaxed);
        self.prefill_secs.add(secs);
    }

    /// One decode step of `rows` sequences that read `read` (sum of shares) of their K/V.
    pub fn observe_decode(&self, rows: usize, read: f64, secs: f64) {
        self.decode_steps.fetch_add(1, Ordering::Relaxed);
        self.decode_rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.decode_rows_max.fetch_max(rows, Ordering::Relaxed);
        self.decode_secs.add(secs);
        self.kv_read_share_sum.add(read);
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        w.steps.push_back((now, rows));
        while w
            .steps
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t).as_secs_f64() > WINDOW_SECS)
        {
            w.steps.pop_front();
        }
        let span = w
            .steps
            .front()
            .map_or(0.0, |(t, _)| now.duration_since(*t).as_secs_f64())
            + secs;
        let tokens: usize = w.steps.iter().map(|(_, r)| r).sum();
        self.tokens_per_second.set(tokens as f64 / span.max(1e-9));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(s, "# HELP spotlight_{name} {help}");
            let _ = writeln!(s, "# TYPE spotlight_{name} {kind}");
            let _ = writeln!(s, "spotlight_{name} {value}");
        };
        let u = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let z = |a: &AtomicUsize| a.load(Ordering::Relaxed).to_string();
        metric(
            "slots_total",
            "gauge",
            "Sequence slots.",
            z(&self.slots_total),
        );
        metric(
            "slots_busy",
            "gauge",
            "Slots holding a sequence.",
            z(&self.slots_busy),
        );
        metric(
            "slots_busy_max",
            "gauge",
            "Most slots busy at once since start.",
            z(&self.slots_busy_max),
        );
        metric(
            "queue_depth",
            "gauge",
            "Requests waiting for a slot.",
            z(&self.queue_depth),
        );
        metric(
            "prompt_tokens_total",
            "counter",
            "Prompt tokens prefilled.",
            u(&self.prompt_tokens),
        );
        metric(
            "generated_tokens_total",
            "counter",
            "Tokens generated.",
            u(&self.generated_tokens),
        );
        metric(
            "tokens_per_second",
            "gauge",
            "Generated tokens per second over the last 10 s of decode steps.",
            format!("{:.3}", self.tokens_per_second.get()),
        );
        metric(
            "decode_steps_total",
            "counter",
            "Batched decode steps.",
            u(&self.decode_steps),
        );
        metric(
            "decode_rows_total",
            "counter",
            "Sequences over all decode steps (/ steps = mean batch).",
            u(&self.decode_rows),
        );
        metric(
            "decode_batch_max",
            "gauge",
            "Largest number of sequences in one decode step.",
            z(&self.decode_rows_max),
        );
        metric(
            "decode_seconds_total",
            "counter",
            "Time in decode steps.",
            format!("{:.6}", self.decode_secs.get()),
        );
        metric(
            "prefill_total",
            "counter",
            "Prompts prefilled.",
            u(&self.prefill_calls),
        );
        metric(
            "prefill_seconds_total",
            "counter",
            "Time in prefill.",
            format!("{:.6}", self.prefill_secs.get()),
        );
        let rows = self.decode_rows.load(Ordering::Relaxed);
        metric(
            "kv_read_share",
            "gauge",
            "Mean share of the cached K/V rows a decode step read (1 = dense).",
            format!(
                "{:.6}",
                if rows > 0 {
                    self.kv_read_share_sum.get() / rows as f64
                } else {
                    1.0
                }
            ),
        );
        metric(
            "queue_wait_seconds_total",
            "counter",
            "Time admitted requests waited for a slot.",
            format!("{:.6}", self.queue_wait_secs.get()),
        );
        metric(
            "queue_waits_total",
            "counter",
            "Admitted requests.",
            u(&self.queue_waits),
        );
        metric(
            "time_to_first_token_seconds_total",
            "counter",
            "Sum of request-to-first-token times.",
            format!("{:.6}", self.ttft_secs.get()),
        );
        metric(
            "first_tokens_total",
            "counter",
            "Requests that got a first token.",
            u(&self.ttfts),
        );
        let _ = writeln!(
            s,
            "# HELP spotlight_cancelled_total Requests whose client left, by phase."
        );
        let _ = writeln!(s, "# TYPE spotlight_cancelled_total counter");
        let _ = writeln!(
            s,
            "spotlight_cancelled_total{{phase=\"queued\"}} {}",
            u(&self.cancelled_queued)
        );
        let _ = writeln!(
            s,
            "spotlight_cancelled_total{{phase=\"running\"}} {}",
            u(&self.cancelled_running)
        );
        let _ = writeln!(
            s,
            "# HELP spotlight_failed_total Requests that failed in the engine."
        );
        let _ = writeln!(s, "# TYPE spotlight_failed_total counter");
        let _ = writeln!(s, "spotlight_failed_total {}", u(&self.failed));
        let _ = writeln!(
            s,
            "# HELP spotlight_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(s, "# TYPE spotlight_requests_total counter");
        let r = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((route, status), n) in r.iter() {
            let _ = writeln!(
                s,
                "spotlight_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        s
    }
}
