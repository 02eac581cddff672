//! The HTTP routes. Everything that can fail is decided before the 200 (body, JSON, model,
//! limits, admission); after it, an engine failure reaches a stream as a `data: {"error": …}`
//! event followed by `data: [DONE]`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use spotlight_llama::Tokenizer;
use tokio::sync::{mpsc, Semaphore};

use crate::engine::{Event, Mode, Msg, Params, Submit};
use crate::error::ApiError;
use crate::http::{Body, Request, Response};
use crate::metrics::Metrics;
use crate::text::StopMatcher;
use crate::types::{ChatRequest, Checked, CompletionRequest, Prompt};

/// A JSON answer.
pub fn json_response(status: u16, v: &Value) -> Response {
    Response {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: Body::Full(v.to_string().into_bytes()),
    }
}

/// What the routes know once the model is loaded.
pub struct Ready {
    pub tokenizer: Arc<Tokenizer>,
    pub model_id: String,
    /// Tokens per slot.
    pub ctx: usize,
    pub slots: usize,
    /// Attention modes, the default first.
    pub modes: Vec<String>,
}

pub struct AppState {
    pub ready: OnceLock<Ready>,
    pub draining: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Permits for queued + running requests.
    pub admission: Arc<Semaphore>,
    pub max_queue: usize,
    pub ingress: Mutex<std::sync::mpsc::Sender<Msg>>,
    pub max_body_bytes: usize,
    pub next_id: AtomicU64,
}

/// Routes one request.
pub async fn route(s: Arc<AppState>, req: Request) -> Response {
    let known = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/health",
        "/metrics",
    ];
    let r = match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/v1/chat/completions") => respond(&s, Kind::Chat, req.body).await,
        ("POST", "/v1/completions") => respond(&s, Kind::Completion, req.body).await,
        ("GET", "/v1/models") => models(&s),
        ("GET", "/health") => health(&s),
        ("GET", "/metrics") => {
            return Response {
                status: 200,
                headers: vec![("Content-Type", "text/plain; version=0.0.4".into())],
                body: Body::Full(s.metrics.render().into_bytes()),
            }
        }
        (m, p) if known.contains(&p) => {
            let mut e =
                ApiError::not_found(format!("{m} {p}: method not allowed"), "method_not_allowed");
            e.status = 405;
            e.into_response()
        }
        (_, p) => ApiError::not_found(format!("no route {p}"), "not_found").into_response(),
    };
    let label = if known.contains(&req.path.as_str()) {
        req.path.as_str()
    } else {
        "other"
    };
    s.metrics.count_request(label, r.status);
    r
}

fn health(s: &AppState) -> Response {
    if s.ready.get().is_none() {
        ApiError::unavailable("Loading model").into_response()
    } else if s.draining.load(Ordering::Relaxed) {
        ApiError::unavailable("Shutting down").into_response()
    } else {
        json_response(200, &json!({"status": "ok"}))
    }
}

fn models(s: &AppState) -> Response {
    match s.ready.get() {
        None => ApiError::unavailable("Loading model").into_response(),
        Some(m) => json_response(
            200,
            &json!({"object": "list", "data": [{
                "id": m.model_id,
                "object": "model",
                "created": 0,
                "owned_by": "spotlight",
                "context_length_per_slot": m.ctx,
                "slots": m.slots,
                "attention": m.modes,
            }]}),
        ),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

async fn respond(s: &Arc<AppState>, kind: Kind, body: Vec<u8>) -> Response {
    match handle(s, kind, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Sets the request's cancel flag when dropped: the handler future (non-streaming) or the SSE
/// body (streaming) owns it, and both are dropped when the client closes the connection.
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request ready for the engine.
struct Job {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    checked: Checked,
    events: mpsc::UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
    started: Instant,
}

async fn handle(s: &Arc<AppState>, kind: Kind, body: Vec<u8>) -> Result<Response, ApiError> {
    let ready = s
        .ready
        .get()
        .ok_or_else(|| ApiError::unavailable("Loading model"))?;
    if s.draining.load(Ordering::Relaxed) {
        return Err(ApiError::unavailable("Shutting down"));
    }
    let parse_err = |e: serde_json::Error| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Data => "invalid request",
            _ => "invalid JSON body",
        };
        ApiError::bad_request(format!("{what}: {e}"), None)
    };
    let tok = ready.tokenizer.clone();
    let (model, checked, text) = match kind {
        Kind::Chat => {
            let r: ChatRequest = serde_json::from_slice(&body).map_err(parse_err)?;
            if r.messages.is_empty() {
                return Err(ApiError::bad_request("messages is empty", Some("messages")));
            }
            let mut msgs = Vec::with_capacity(r.messages.len());
            for m in &r.messages {
                msgs.push((m.role.clone(), m.text()?));
            }
            (r.model, r.options.check()?, Input::Chat(msgs))
        }
        Kind::Completion => {
            let r: CompletionRequest = serde_json::from_slice(&body).map_err(parse_err)?;
            let input = match r.prompt {
                Prompt::Text(t) => Input::Text(t),
                Prompt::Texts(v) if v.len() == 1 => Input::Text(v.into_iter().next().unwrap()),
                Prompt::Texts(v) => {
                    return Err(ApiError::bad_request(
                        format!("{} prompts: one prompt per request is supported", v.len()),
                        Some("prompt"),
                    ))
                }
                Prompt::Tokens(t) => Input::Tokens(t),
            };
            (r.model, r.options.check()?, input)
        }
    };
    if let Some(m) = model.as_deref() {
        if !(m.is_empty() || m == "default" || m == ready.model_id) {
            return Err(ApiError::not_found(
                format!(
                    "model {m} is not served here (this server serves {})",
                    ready.model_id
                ),
                "model_not_found",
            ));
        }
    }
    let attention = checked
        .attention
        .clone()
        .unwrap_or_else(|| ready.modes[0].clone());
    if !ready.modes.contains(&attention) {
        return Err(ApiError::bad_request(
            format!(
                "attention {attention} is not loaded (this server runs {}); start it with --attention {attention}",
                ready.modes.join(", ")
            ),
            Some("spotlight"),
        ));
    }
    if checked.budget.is_some() && attention == "dense" {
        return Err(ApiError::bad_request(
            "spotlight.budget applies to sparse attention, not dense",
            Some("spotlight"),
        ));
    }
    let vocab = tok.vocab_size();
    let prompt = tokio::task::spawn_blocking(move || text.encode(&tok))
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))??;
    if let Some(&t) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_request(
            format!("token id {t} is outside the vocabulary of {vocab}"),
            Some("prompt"),
        ));
    }
    let param = if kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt is empty", Some(param)));
    }
    let ctx = ready.ctx;
    let max_tokens = match checked.max_tokens {
        Some(m) if prompt.len() + m > ctx => {
            return Err(ApiError::bad_request(
                format!(
                    "this server's context is {ctx} tokens per request, but the prompt has {} tokens and max_tokens is {m} ({} in all)",
                    prompt.len(),
                    prompt.len() + m
                ),
                Some(param),
            )
            .with_code("context_length_exceeded"))
        }
        Some(m) => m,
        None if prompt.len() >= ctx => {
            return Err(ApiError::bad_request(
                format!(
                    "this server's context is {ctx} tokens per request, but the prompt has {} tokens (no room for a reply)",
                    prompt.len()
                ),
                Some(param),
            )
            .with_code("context_length_exceeded"))
        }
        None => ctx - prompt.len(),
    };
    let permit = s.admission.clone().try_acquire_owned().map_err(|_| {
        s.metrics.count_request("rejected:queue_full", 429);
        ApiError::overloaded(format!(
            "all {} slots are busy and {} requests are queued; retry later",
            ready.slots, s.max_queue
        ))
    })?;
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let seed = checked.seed.unwrap_or_else(rand::random);
    let submit = Submit {
        prompt: prompt.clone(),
        params: Params {
            max_tokens,
            sampling: checked.sampling.clone(),
            repetition_penalty: checked.repetition_penalty,
            presence_penalty: checked.presence_penalty,
            frequency_penalty: checked.frequency_penalty,
            seed,
            stop_ids: ready.tokenizer.stop_ids.clone(),
            mode: Mode {
                attention,
                budget: checked.budget,
            },
            fault: checked.fault,
        },
        events: tx,
        cancel: cancel.clone(),
        permit: Some(permit),
        queued_at: Instant::now(),
    };
    s.ingress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Msg::Submit(Box::new(submit)))
        .map_err(|_| ApiError::unavailable("the engine has stopped"))?;
    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let job = Job {
        kind,
        id: match kind {
            Kind::Chat => format!("chatcmpl-{n:08x}{:08x}", rand::random::<u32>()),
            Kind::Completion => format!("cmpl-{n:08x}{:08x}", rand::random::<u32>()),
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: ready.model_id.clone(),
        prompt_tokens: prompt.len(),
        checked,
        events: rx,
        cancel,
        started: Instant::now(),
    };
    if job.checked.stream {
        Ok(stream(s.clone(), job))
    } else {
        whole(s, job).await
    }
}

enum Input {
    Chat(Vec<(String, String)>),
    Text(String),
    Tokens(Vec<u32>),
}

impl Input {
    fn encode(self, tok: &Tokenizer) -> Result<Vec<u32>, ApiError> {
        let r = match self {
            Input::Chat(m) => {
                let refs: Vec<(&str, &str)> =
                    m.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
                tok.encode_chat(&refs)
            }
            Input::Text(t) => tok.encode(&t, true),
            Input::Tokens(t) => Ok(t),
        };
        r.map_err(|e| ApiError::bad_request(format!("cannot tokenize the prompt: {e}"), None))
    }
}

/// Engine events turned into text: detokenized, stop strings applied.
struct Output<'a> {
    text: spotlight_llama::tokenizer::TextStream<'a>,
    stop: StopMatcher,
    tokens: usize,
}

enum Step {
    Text(String),
    End(&'static str, String),
    Failed(String),
}

impl<'a> Output<'a> {
    fn new(tok: &'a Tokenizer, stops: Vec<String>) -> Self {
        Self {
            text: tok.stream(),
            stop: StopMatcher::new(stops),
            tokens: 0,
        }
    }

    fn step(&mut self, e: Option<Event>) -> Step {
        match e {
            Some(Event::Token(t)) => {
                self.tokens += 1;
                let piece = match self.text.push(t) {
                    Ok(p) => p,
                    Err(e) => return Step::Failed(format!("cannot decode token {t}: {e}")),
                };
                match self.stop.push(&piece) {
                    (out, true) => Step::End("stop", out),
                    (out, false) => Step::Text(out),
                }
            }
            Some(Event::Done(f)) => Step::End(f.reason(), self.stop.flush()),
            Some(Event::Error(e)) => Step::Failed(e),
            None => Step::Failed("the engine ended the request without a final token".into()),
        }
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A non-streaming answer: waits for the whole completion.
async fn whole(s: &Arc<AppState>, mut job: Job) -> Result<Response, ApiError> {
    let _guard = CancelOnDrop(job.cancel.clone());
    let tok = s.ready.get().expect("ready").tokenizer.clone();
    let mut out = Output::new(&tok, std::mem::take(&mut job.checked.stop));
    let mut text = String::new();
    let finish = loop {
        let e = job.events.recv().await;
        if out.tokens == 0 && matches!(e, Some(Event::Token(_))) {
            s.metrics.observe_ttft(job.started.elapsed().as_secs_f64());
        }
        match out.step(e) {
            Step::Text(t) => text += &t,
            Step::End(reason, t) => {
                text += &t;
                break reason;
            }
            Step::Failed(e) => return Err(ApiError::internal(e)),
        }
    };
    let choice = match job.kind {
        Kind::Chat => json!({"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": null, "finish_reason": finish}),
        Kind::Completion => {
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        }
    };
    let object = match job.kind {
        Kind::Chat => "chat.completion",
        Kind::Completion => "text_completion",
    };
    Ok(json_response(
        200,
        &json!({
            "id": job.id,
            "object": object,
            "created": job.created,
            "model": job.model,
            "system_fingerprint": null,
            "choices": [choice],
            "usage": usage(job.prompt_tokens, out.tokens),
        }),
    ))
}

/// Interval of SSE keep-alive comments while a request waits or prefills.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// A streaming answer: Server-Sent Events in the OpenAI chunk format, `data: [DONE]` last.
fn stream(s: Arc<AppState>, job: Job) -> Response {
    let (tx, rx) = mpsc::channel::<String>(64);
    let guard = CancelOnDrop(job.cancel.clone());
    tokio::spawn(write_stream(s, job, tx));
    Response {
        status: 200,
        headers: vec![
            ("Content-Type", "text/event-stream".into()),
            ("Cache-Control", "no-cache".into()),
            ("X-Accel-Buffering", "no".into()),
        ],
        body: Body::Sse {
            events: rx,
            guard,
            keep_alive: KEEP_ALIVE,
        },
    }
}

/// One SSE event: `data: <payload>` and a blank line.
fn sse(payload: &str) -> String {
    format!("data: {payload}\n\n")
}

async fn write_stream(s: Arc<AppState>, mut job: Job, tx: mpsc::Sender<String>) {
    let tok = s.ready.get().expect("ready").tokenizer.clone();
    let mut out = Output::new(&tok, std::mem::take(&mut job.checked.stop));
    let chunk = |choices: Value, usage: Option<Value>| {
        let object = match job.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut c = json!({"id": job.id, "object": object, "created": job.created,
                           "model": job.model, "system_fingerprint": null, "choices": choices});
        if job.checked.include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        sse(&c.to_string())
    };
    let choice = |text: Option<&str>, role: bool, finish: Option<&str>| match job.kind {
        Kind::Chat => {
            let mut delta = json!({});
            if role {
                delta["role"] = json!("assistant");
            }
            if let Some(t) = text {
                delta["content"] = json!(t);
            }
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
        }
        Kind::Completion => {
            json!([{"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish}])
        }
    };
    if job.kind == Kind::Chat
        && tx
            .send(chunk(choice(Some(""), true, None), None))
            .await
            .is_err()
    {
        return;
    }
    loop {
        let e = job.events.recv().await;
        if out.tokens == 0 && matches!(e, Some(Event::Token(_))) {
            s.metrics.observe_ttft(job.started.elapsed().as_secs_f64());
        }
        let (text, finish) = match out.step(e) {
            Step::Text(t) if t.is_empty() => continue,
            Step::Text(t) => (t, None),
            Step::End(reason, t) => (t, Some(reason)),
            Step::Failed(e) => {
                let _ = tx
                    .send(sse(&ApiError::internal(e).body().to_string()))
                    .await;
                break;
            }
        };
        if !text.is_empty()
            && tx
                .send(chunk(choice(Some(&text), false, None), None))
                .await
                .is_err()
        {
            return; // the client is gone (its guard has cancelled the sequence)
        }
        if let Some(f) = finish {
            // A stop string ends the sequence here: free its slot now.
            job.cancel.store(true, Ordering::Relaxed);
            let _ = tx.send(chunk(choice(None, false, Some(f)), None)).await;
            if job.checked.include_usage {
                let u = usage(job.prompt_tokens, out.tokens);
                let _ = tx.send(chunk(json!([]), Some(u))).await;
            }
            break;
        }
    }
    let _ = tx.send(sse("[DONE]")).await;
}
