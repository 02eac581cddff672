//! Scheduler tests on a fake engine whose next token is a function of the slot's whole history,
//! so any mix-up between slots, or a lost or repeated token, changes the output.

use super::*;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const VOCAB: usize = 32;

struct Fake {
    slots: Vec<Vec<u32>>,
    /// Pause per decode step, so tests can act mid-generation.
    step_delay: Duration,
}

impl Fake {
    fn new(n: usize) -> Self {
        Self {
            slots: vec![Vec::new(); n],
            step_delay: Duration::ZERO,
        }
    }
    fn logits(history: &[u32]) -> Vec<f32> {
        let h = history
            .iter()
            .fold(7u64, |a, &t| a.wrapping_mul(31).wrapping_add(t as u64 + 1));
        let mut l = vec![0.0; VOCAB];
        l[(h % VOCAB as u64) as usize] = 1.0;
        l
    }
}

impl Engine for Fake {
    fn slots(&self) -> usize {
        self.slots.len()
    }
    fn ctx_size(&self) -> usize {
        64
    }
    fn vocab(&self) -> usize {
        VOCAB
    }
    fn prefill(&mut self, slot: usize, prompt: &[u32], _: &Mode) -> Result<Vec<f32>, String> {
        self.slots[slot] = prompt.to_vec();
        Ok(Self::logits(&self.slots[slot]))
    }
    fn decode(&mut self, rows: &[(usize, u32)], _: &Mode) -> Result<Vec<f32>, String> {
        std::thread::sleep(self.step_delay);
        let mut out = Vec::new();
        for &(s, t) in rows {
            self.slots[s].push(t);
            out.extend(Self::logits(&self.slots[s]));
        }
        Ok(out)
    }
    fn read_share(&self, _: &Mode, _: usize) -> f64 {
        1.0
    }
    fn free(&mut self, slot: usize) {
        self.slots[slot].clear();
    }
}

fn params(max_tokens: usize) -> Params {
    Params {
        max_tokens,
        sampling: Sampling::Greedy,
        repetition_penalty: 1.0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: 0,
        stop_ids: vec![],
        mode: Mode {
            attention: "dense".into(),
            budget: None,
        },
        fault: false,
    }
}

fn submit(prompt: Vec<u32>, params: Params) -> (Msg, UnboundedReceiver<Event>, Arc<AtomicBool>) {
    let (tx, rx) = unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let s = Submit {
        prompt,
        params,
        events: tx,
        cancel: cancel.clone(),
        permit: None,
        queued_at: Instant::now(),
    };
    (Msg::Submit(Box::new(s)), rx, cancel)
}

/// Reads events until the end: (tokens, final event).
fn drain(rx: &mut UnboundedReceiver<Event>) -> (Vec<u32>, Event) {
    let mut tokens = Vec::new();
    loop {
        match rx
            .blocking_recv()
            .expect("engine ended a stream without a final event")
        {
            Event::Token(t) => tokens.push(t),
            end => return (tokens, end),
        }
    }
}

fn start(
    engine: Fake,
    fault_injection: bool,
) -> (mpsc::Sender<Msg>, std::thread::JoinHandle<Arc<Metrics>>) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut engine = engine;
        let metrics = Arc::new(Metrics::new(engine.slots()));
        let cfg = SchedulerConfig {
            max_prefill_tokens: 1024,
            fault_injection,
        };
        run(&mut engine, rx, &cfg, &metrics);
        metrics
    });
    (tx, h)
}

fn alone(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let (tx, h) = start(Fake::new(1), false);
    let (m, mut rx, _c) = submit(prompt.to_vec(), params(max_tokens));
    tx.send(m).unwrap();
    let (t, end) = drain(&mut rx);
    assert_eq!(end, Event::Done(Finish::Length));
    drop(tx);
    h.join().unwrap();
    t
}

#[test]
fn batched_requests_get_what_they_get_alone() {
    let prompts: Vec<Vec<u32>> = (0..5).map(|i| (0..=i).map(|t| t + 3).collect()).collect();
    let (tx, h) = start(Fake::new(3), false);
    let mut rxs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (m, rx, _) = submit(p.clone(), params(5 + i));
            tx.send(m).unwrap();
            rx
        })
        .collect();
    let got: Vec<Vec<u32>> = rxs.iter_mut().map(|rx| drain(rx).0).collect();
    drop(tx);
    let metrics = h.join().unwrap();
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(got[i], alone(p, 5 + i), "request {i}");
    }
    // 5 requests over 3 slots: the batch held 3 at once, and queued ones took freed slots.
    assert_eq!(metrics.decode_rows_max.load(Ordering::Relaxed), 3);
    assert_eq!(metrics.slots_busy.load(Ordering::Relaxed), 0);
    assert_eq!(
        metrics.generated_tokens.load(Ordering::Relaxed),
        (5..10).sum::<usize>() as u64
    );
}

#[test]
fn stop_tokens_end_with_stop_and_are_not_sent() {
    let first = alone(&[1, 2], 6);
    let (tx, h) = start(Fake::new(1), false);
    let mut p = params(6);
    p.stop_ids = vec![first[2]];
    let (m, mut rx, _) = submit(vec![1, 2], p);
    tx.send(m).unwrap();
    let (t, end) = drain(&mut rx);
    assert_eq!(end, Event::Done(Finish::Stop));
    assert_eq!(
        t,
        first[..first.iter().position(|&x| x == first[2]).unwrap()]
    );
    drop(tx);
    h.join().unwrap();
}

#[test]
fn cancelling_frees_the_slot_for_the_queue() {
    let mut fake = Fake::new(1);
    fake.step_delay = Duration::from_millis(5);
    let (tx, h) = start(fake, false);
    let (m, mut long, cancel) = submit(vec![1], params(60));
    tx.send(m).unwrap();
    let (m, mut next, _) = submit(vec![2], params(3));
    tx.send(m).unwrap();
    assert!(matches!(long.blocking_recv(), Some(Event::Token(_))));
    cancel.store(true, Ordering::Relaxed);
    let (t, end) = drain(&mut next);
    assert_eq!((t.len(), end), (3, Event::Done(Finish::Length)));
    drop(tx);
    let metrics = h.join().unwrap();
    assert_eq!(metrics.cancelled_running.load(Ordering::Relaxed), 1);
    assert!(metrics.generated_tokens.load(Ordering::Relaxed) < 60);
}

#[test]
fn a_failing_request_leaves_the_others_alone() {
    let expected = alone(&[5, 6, 7], 8);
    let (tx, h) = start(Fake::new(3), true);
    let (m, mut good, _) = submit(vec![5, 6, 7], params(8));
    tx.send(m).unwrap();
    let mut bad = params(8);
    bad.fault = true;
    let (m, mut faulty, _) = submit(vec![9], bad);
    tx.send(m).unwrap();
    let (t, end) = drain(&mut faulty);
    assert!(t.is_empty());
    assert!(
        matches!(end, Event::Error(ref e) if e.contains("fault injected")),
        "{end:?}"
    );
    assert_eq!(drain(&mut good).0, expected);
    drop(tx);
    let metrics = h.join().unwrap();
    assert_eq!(metrics.failed.load(Ordering::Relaxed), 1);
}

#[test]
fn cancel_all_ends_queued_and_running_requests() {
    let mut fake = Fake::new(1);
    fake.step_delay = Duration::from_millis(5);
    let (tx, h) = start(fake, false);
    let (m, mut a, _) = submit(vec![1], params(60));
    tx.send(m).unwrap();
    let (m, mut b, _) = submit(vec![2], params(60));
    tx.send(m).unwrap();
    assert!(matches!(a.blocking_recv(), Some(Event::Token(_))));
    tx.send(Msg::CancelAll("shutting down".into())).unwrap();
    tx.send(Msg::Shutdown).unwrap();
    assert_eq!(drain(&mut a).1, Event::Error("shutting down".into()));
    assert_eq!(
        drain(&mut b),
        (vec![], Event::Error("shutting down".into()))
    );
    h.join().unwrap();
}
