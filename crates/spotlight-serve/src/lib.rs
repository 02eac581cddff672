//! `spotlight serve`: an OpenAI-compatible HTTP server (chat and text completions, streamed as
//! Server-Sent Events) over a continuously batched decoder.
//!
//! - [`engine`]: the scheduler thread that owns the model and a fixed pool of sequence slots.
//! - [`llama`]: the engine over a Llama-family model (the shared ragged-batch KV cache).
//! - [`routes`], [`types`], [`error`]: the HTTP side — requests, answers, OpenAI-shaped errors.
//! - [`text`]: stop strings over streamed text. [`metrics`]: `GET /metrics`.
//!
//! The library never prints: [`run`] reports through a callback; the CLI owns the terminal.

pub mod engine;
pub mod error;
pub mod http;
pub mod llama;
pub mod metrics;
pub mod routes;
pub mod text;
pub mod types;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use spotlight_llama::Tokenizer;
use tokio::sync::Semaphore;

pub use engine::Engine;

/// How the server listens and what it admits.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub host: String,
    /// 0 = any free port (the one bound is reported).
    pub port: u16,
    /// Requests that may wait for a slot; more get 429.
    pub max_queue: usize,
    pub max_body_bytes: usize,
    /// After SIGINT/SIGTERM: how long running and queued requests may take to finish before they
    /// are cancelled.
    pub drain_timeout: Duration,
    pub max_prefill_tokens: usize,
    pub fault_injection: bool,
}

/// What the loader hands the server: the engine, built on the engine thread (the model never
/// crosses threads), and what the HTTP side needs to know about it.
pub struct Loaded<E> {
    pub engine: E,
    pub tokenizer: Arc<Tokenizer>,
    pub model_id: String,
    /// Attention modes, the default first.
    pub modes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {why}")]
    Bind { addr: String, why: String },
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Runtime(String),
}

/// Runs the server until SIGINT or SIGTERM, then drains and returns. `load` runs on the engine
/// thread while the server already answers (`/health` is 503 until it is done); `log` receives
/// one-line progress messages (the first: `listening on http://…`).
pub fn run<E, F>(
    cfg: ServeConfig,
    load: F,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<(), ServeError>
where
    E: Engine + 'static,
    F: FnOnce() -> Result<Loaded<E>, String> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    rt.block_on(serve(cfg, load, log))
}

async fn serve<E, F>(
    cfg: ServeConfig,
    load: F,
    log: Arc<dyn Fn(&str) + Send + Sync>,
) -> Result<(), ServeError>
where
    E: Engine + 'static,
    F: FnOnce() -> Result<Loaded<E>, String> + Send + 'static,
{
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServeError::Bind {
            addr: addr.clone(),
            why: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| ServeError::Bind {
        addr: addr.clone(),
        why: e.to_string(),
    })?;
    log(&format!("listening on http://{bound}"));

    let (ingress, rx) = std::sync::mpsc::channel();
    let metrics = Arc::new(metrics::Metrics::default());
    let state = Arc::new(routes::AppState {
        ready: OnceLock::new(),
        draining: AtomicBool::new(false),
        metrics: metrics.clone(),
        admission: Arc::new(Semaphore::new(0)),
        max_queue: cfg.max_queue,
        ingress: Mutex::new(ingress.clone()),
        max_body_bytes: cfg.max_body_bytes,
        next_id: AtomicU64::new(0),
    });

    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
    let sched = engine::SchedulerConfig {
        max_prefill_tokens: cfg.max_prefill_tokens,
        fault_injection: cfg.fault_injection,
    };
    let engine_metrics = metrics.clone();
    let engine_thread = std::thread::Builder::new()
        .name("spotlight-engine".into())
        .spawn(move || {
            let loaded = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
                Err(_) => {
                    let _ = loaded_tx.send(Err("loading the model panicked".into()));
                    return;
                }
            };
            let mut engine = loaded.engine;
            let ready = routes::Ready {
                tokenizer: loaded.tokenizer,
                model_id: loaded.model_id,
                ctx: engine.ctx_size(),
                slots: engine.slots(),
                modes: loaded.modes,
            };
            if loaded_tx.send(Ok(ready)).is_err() {
                return;
            }
            engine::run(&mut engine, rx, &sched, &engine_metrics);
        })
        .map_err(|e| ServeError::Runtime(e.to_string()))?;

    let shutdown = Arc::new(tokio::sync::Notify::new());
    let stop = shutdown.clone();
    let accept_state = state.clone();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    if let Ok((tcp, _)) = conn {
                        connections.spawn(http::connection(accept_state.clone(), tcp));
                    }
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                _ = stop.notified() => break,
            }
        }
        drop(listener);
        // Open connections (streams included) finish; the caller bounds the wait.
        while connections.join_next().await.is_some() {}
    });

    let signal = tokio::spawn(shutdown_signal());
    tokio::pin!(signal);
    tokio::select! {
        r = loaded_rx => match r {
            Ok(Ok(ready)) => {
                let slots = ready.slots;
                log(&format!(
                    "ready: {} on {} slots of {} tokens each; attention {}",
                    ready.model_id, slots, ready.ctx, ready.modes.join(" | ")
                ));
                metrics.slots_total.store(slots, std::sync::atomic::Ordering::Relaxed);
                state.admission.add_permits(slots + cfg.max_queue);
                let _ = state.ready.set(ready);
            }
            Ok(Err(e)) => {
                shutdown.notify_one();
                return Err(ServeError::Load(e));
            }
            Err(_) => {
                shutdown.notify_one();
                return Err(ServeError::Load("the engine thread ended while loading".into()));
            }
        },
        _ = &mut signal => {
            log("signal received while loading: exiting");
            shutdown.notify_one();
            return Ok(());
        }
    }
    let _ = (&mut signal).await;
    log("shutting down: no new requests; waiting for running ones");
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shutdown.notify_one();
    // A second signal exits at once.
    tokio::spawn(async {
        shutdown_signal().await;
        std::process::exit(130);
    });
    let total = state.ready.get().map_or(0, |r| r.slots) + cfg.max_queue;
    let drained = tokio::time::timeout(cfg.drain_timeout, async {
        while state.admission.available_permits() < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok();
    if !drained {
        log("drain timeout: cancelling the requests still running");
        let _ = ingress.send(engine::Msg::CancelAll("the server is shutting down".into()));
    }
    // Streams end once their requests do; bound the wait for connections to close.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = ingress.send(engine::Msg::Shutdown);
    drop(ingress);
    drop(state);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    log("stopped");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
