//! `spotlight serve` end to end: the real binary on 127.0.0.1 with the REAL SmolLM2-135M on the
//! cpu backend, driven over HTTP. Greedy answers must equal `spotlight generate`, concurrent
//! streams must each get what they get alone while the batch holds several, and every error
//! must come back as an OpenAI-shaped JSON body with its status.
//!
//! Spotlight attention runs with a small budget (`--dense-below 0 --window 16 --min-tokens 8`)
//! so that even these short prompts decode sparsely.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_spotlight");
const ATTENTION: [&str; 6] = ["--dense-below", "0", "--window", "16", "--min-tokens", "8"];
const QUESTION: &str = "What is the capital of France?";
const PROMPT: &str = "The capital of France is";

/// A minimal HTTP/1.1 client (one request per connection), enough to drive the server: JSON
/// bodies, `Content-Length` or chunked answers, and reading a stream line by line.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Box<dyn BufRead + Send>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(mut self) -> String {
        let mut s = String::new();
        self.body.read_to_string(&mut s).unwrap();
        s
    }
    fn json(self) -> Value {
        let t = self.text();
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t:?}"))
    }
}

/// Decodes a chunked body.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = String::new();
            self.inner.read_line(&mut line)?;
            if line.trim().is_empty() {
                line.clear();
                self.inner.read_line(&mut line)?; // the CRLF after the previous chunk
            }
            self.left = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let want = self.left.min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> std::io::Result<Reply> {
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(300)))?;
    let body = body.unwrap_or("");
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(tcp);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut reply = Reply {
        status,
        headers,
        body: Box::new(std::io::empty()),
    };
    reply.body = if reply.header("transfer-encoding") == Some("chunked") {
        Box::new(BufReader::new(Chunked {
            inner: r,
            left: 0,
            done: false,
        }))
    } else {
        let n: u64 = reply
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Box::new(BufReader::new(r.take(n)))
    };
    Ok(reply)
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "serve",
            "--backend",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .args(ATTENTION)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spotlight serve starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if let Some(a) = line.split("listening on ").nth(1) {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the server reports its address");
        let s = Server {
            child,
            addr: base.trim_start_matches("http://").to_string(),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = s.get("/health") {
                if r.status == 200 {
                    break;
                }
                assert_eq!(r.status, 503, "health while loading");
                assert_eq!(r.json()["error"]["type"], "unavailable_error");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "server never got ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    fn get(&self, path: &str) -> std::io::Result<Reply> {
        http(&self.addr, "GET", path, None)
    }

    fn raw(&self, path: &str, body: &str) -> Reply {
        http(&self.addr, "POST", path, Some(body)).unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.raw(path, &body.to_string());
        (r.status, r.json())
    }

    /// Starts a stream; returns its body.
    fn stream(&self, path: &str, body: &Value) -> Box<dyn BufRead + Send> {
        let r = self.raw(path, &body.to_string());
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/event-stream"));
        r.body
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").unwrap().text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
    }

    /// Waits until `name` reads `value`.
    fn wait_metric(&self, name: &str, value: f64) {
        let t0 = Instant::now();
        while self.metric(name) != value {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{name} stays {} (want {value})",
                self.metric(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data:` payloads of an SSE body, `[DONE]` included.
fn events(r: Box<dyn BufRead + Send>) -> Vec<String> {
    r.lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data: ").map(String::from))
        .collect()
}

/// Text of a stream (chat deltas or completion texts), its finish reason, and the usage chunk.
fn stream_text(ev: &[String]) -> (String, String, Option<Value>) {
    assert_eq!(
        ev.last().map(String::as_str),
        Some("[DONE]"),
        "stream ends with [DONE]"
    );
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = &chunks[0]["id"];
    let (mut text, mut finish, mut usage) = (String::new(), String::new(), None);
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(&c["id"], id, "one id in every chunk");
        assert!(c.get("error").is_none(), "error event: {c}");
        if c["choices"].as_array().unwrap().is_empty() {
            usage = Some(c["usage"].clone());
            continue;
        }
        let ch = &c["choices"][0];
        if c["object"] == "chat.completion.chunk" {
            assert_eq!(
                ch["delta"].get("role").is_some(),
                i == 0,
                "role only in the first chunk"
            );
            text += ch["delta"]["content"].as_str().unwrap_or("");
        } else {
            assert_eq!(c["object"], "text_completion");
            text += ch["text"].as_str().unwrap();
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    (text, finish, usage)
}

/// `spotlight generate` greedy output (stdout without the final newline).
fn generate(extra: &[&str], max_tokens: usize) -> String {
    let out = Command::new(BIN)
        .args(["generate", "--backend", "cpu", "--temperature", "0"])
        .args(["--max-tokens", &max_tokens.to_string()])
        .args(ATTENTION)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8(out.stdout).unwrap();
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

fn chat(q: &str, max_tokens: usize, stream: bool) -> Value {
    json!({"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "messages": [{"role": "user", "content": q}],
           "max_tokens": max_tokens, "temperature": 0, "stream": stream,
           "stream_options": {"include_usage": true}, "some_unknown_field": [1, 2]})
}

fn completion(p: &str, max_tokens: usize, stream: bool) -> Value {
    json!({"prompt": p, "max_tokens": max_tokens, "temperature": 0, "stream": stream})
}

fn assert_error(status: u16, body: &Value, want_status: u16, kind: &str, says: &str) {
    assert_eq!(status, want_status, "{body}");
    let e = &body["error"];
    assert_eq!(e["type"], kind, "{body}");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(says),
        "message {msg:?} should contain {says:?}"
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn openai_api_on_the_real_model() {
    let s = Server::start(
        &["--slots", "4", "--max-queue", "4", "--ctx-size", "512"],
        &[],
    );
    // /v1/models and /health.
    let models = s.get("/v1/models").unwrap().json();
    assert_eq!(models["data"][0]["id"], "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(
        models["data"][0]["attention"],
        json!(["spotlight", "dense"])
    );

    // Chat, whole and streamed, equals `generate --chat` (same template, same greedy tokens).
    let reference = generate(&["--chat", "--prompt", QUESTION], 16);
    let (st, body) = s.post("/v1/chat/completions", &chat(QUESTION, 16, false));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], reference);
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    let (text, finish, usage) = stream_text(&events(
        s.stream("/v1/chat/completions", &chat(QUESTION, 16, true)),
    ));
    assert_eq!(text, reference);
    assert_eq!(
        finish,
        body["choices"][0]["finish_reason"].as_str().unwrap()
    );
    assert_eq!(usage.as_ref(), Some(u));

    // Text completion, whole and streamed, equals `generate --prompt` (which echoes the prompt).
    let reference = generate(&["--prompt", PROMPT], 8);
    let (st, body) = s.post("/v1/completions", &completion(PROMPT, 8, false));
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        format!("{PROMPT}{}", body["choices"][0]["text"].as_str().unwrap()),
        reference
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 8);
    let (text, finish, usage) = stream_text(&events(
        s.stream("/v1/completions", &completion(PROMPT, 8, true)),
    ));
    assert_eq!(format!("{PROMPT}{text}"), reference);
    assert_eq!(
        (finish.as_str(), usage),
        ("length", None),
        "no usage chunk unless asked"
    );
    // A stop string ends the text before it.
    let mut stopped = completion(PROMPT, 8, false);
    let cont = body["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = cont.trim_start().split(' ').next().unwrap().to_string();
    stopped["stop"] = json!([cut.clone()]);
    let (_, b) = s.post("/v1/completions", &stopped);
    assert_eq!(b["choices"][0]["finish_reason"], "stop");
    assert_eq!(b["choices"][0]["text"], cont[..cont.find(&cut).unwrap()]);

    // 8 concurrent streams of different prompt lengths each get their solo greedy text, and the
    // decode batch held several sequences at once.
    let prompts: Vec<String> = (0..8)
        .map(|i| {
            format!(
                "{} Then",
                (0..3 + 5 * i)
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let solo: Vec<String> = prompts
        .iter()
        .map(|p| {
            stream_text(&events(
                s.stream("/v1/completions", &completion(p, 8, true)),
            ))
            .0
        })
        .collect();
    let together: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = prompts
            .iter()
            .map(|p| {
                sc.spawn(|| {
                    stream_text(&events(
                        s.stream("/v1/completions", &completion(p, 8, true)),
                    ))
                    .0
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(together, solo);
    assert!(
        s.metric("spotlight_decode_batch_max") >= 3.0,
        "batched decode"
    );
    let share = s.metric("spotlight_kv_read_share");
    assert!(
        share > 0.0 && share < 1.0,
        "Spotlight read {share} of the K/V rows"
    );
    s.wait_metric("spotlight_slots_busy", 0.0);

    // A client that disconnects mid-stream frees its slot.
    let cancelled = s.metric("spotlight_cancelled_total{phase=\"running\"}");
    let r = s.stream("/v1/completions", &completion(PROMPT, 400, true));
    let mut lines = r.lines();
    let mut data = 0;
    while data < 3 {
        data += usize::from(lines.next().unwrap().unwrap().starts_with("data: "));
    }
    drop(lines);
    s.wait_metric("spotlight_slots_busy", 0.0);
    assert_eq!(
        s.metric("spotlight_cancelled_total{phase=\"running\"}"),
        cancelled + 1.0
    );
    let (st, _) = s.post("/v1/completions", &completion(PROMPT, 2, false));
    assert_eq!(st, 200, "served after the disconnect");

    // Queue full: 4 slots + 4 queued, the ninth gets 429 with Retry-After.
    let long: Vec<_> = (0..8)
        .map(|_| s.stream("/v1/completions", &completion(PROMPT, 400, true)))
        .collect();
    s.wait_metric("spotlight_queue_depth", 4.0);
    let r = s.raw("/v1/completions", &completion(PROMPT, 4, false).to_string());
    assert_eq!(r.header("retry-after"), Some("1"));
    let st = r.status;
    assert_error(st, &r.json(), 429, "rate_limit_error", "slots are busy");
    drop(long);
    s.wait_metric("spotlight_slots_busy", 0.0);
    s.wait_metric("spotlight_queue_depth", 0.0);

    // Client errors: status and OpenAI error body, decided before any stream starts.
    let raw = |path: &str, body: &str| {
        let r = s.raw(path, body);
        (r.status, r.json())
    };
    let (st, b) = raw("/v1/chat/completions", "{\"messages\": [");
    assert_error(st, &b, 400, "invalid_request_error", "invalid JSON body");
    let (st, b) = raw("/v1/chat/completions", "{\"model\": \"x\"}");
    assert_error(
        st,
        &b,
        400,
        "invalid_request_error",
        "missing field `messages`",
    );
    let (st, b) = raw(
        "/v1/completions",
        "{\"prompt\": \"hi\", \"max_tokens\": \"many\"}",
    );
    assert_error(st, &b, 400, "invalid_request_error", "invalid request");
    for stream in [false, true] {
        let (st, b) = s.post("/v1/chat/completions", &chat(QUESTION, 600, stream));
        assert_error(
            st,
            &b,
            400,
            "invalid_request_error",
            "context is 512 tokens per request",
        );
        assert_eq!(b["error"]["code"], "context_length_exceeded");
        assert!(
            b["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_tokens is 600"),
            "{b}"
        );
    }
    let mut two = chat(QUESTION, 4, false);
    two["n"] = json!(2);
    let (st, b) = s.post("/v1/chat/completions", &two);
    assert_error(st, &b, 400, "invalid_request_error", "only n = 1");
    assert_eq!(b["error"]["param"], "n");
    let mut other = chat(QUESTION, 4, false);
    other["model"] = json!("gpt-4");
    let (st, b) = s.post("/v1/chat/completions", &other);
    assert_error(
        st,
        &b,
        404,
        "invalid_request_error",
        "model gpt-4 is not served here",
    );
    let mut attention = completion(PROMPT, 4, false);
    attention["spotlight"] = json!({"attention": "quest"});
    let (st, b) = s.post("/v1/completions", &attention);
    assert_error(
        st,
        &b,
        400,
        "invalid_request_error",
        "attention quest is not loaded",
    );
    let r = s.get("/v1/nothing").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");

    // Dense on request: same text here (the budget keeps the few keys that matter most).
    attention["spotlight"] = json!({"attention": "dense"});
    let (st, b) = s.post("/v1/completions", &attention);
    assert_eq!(st, 200, "{b}");

    // A bounded load test: 24 requests, 6 at a time (never more than slots + queue), mixed
    // streaming and not; no errors; latency percentiles reported.
    let t0 = Instant::now();
    let generated0 = s.metric("spotlight_generated_tokens_total");
    let ttft0 = (
        s.metric("spotlight_time_to_first_token_seconds_total"),
        s.metric("spotlight_first_tokens_total"),
    );
    let (steps0, rows0) = (
        s.metric("spotlight_decode_steps_total"),
        s.metric("spotlight_decode_rows_total"),
    );
    let mut lat: Vec<f64> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..6)
            .map(|w| {
                let s = &s;
                sc.spawn(move || {
                    (0..4)
                        .map(|i| {
                            let t = Instant::now();
                            let body = completion(
                                &format!("Story {w}.{i}: once upon a time"),
                                8,
                                i % 2 == 0,
                            );
                            if i % 2 == 0 {
                                let (_, f, _) =
                                    stream_text(&events(s.stream("/v1/completions", &body)));
                                assert_eq!(f, "length");
                            } else {
                                let (st, b) = s.post("/v1/completions", &body);
                                assert_eq!(st, 200, "{b}");
                            }
                            t.elapsed().as_secs_f64()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let tokens = s.metric("spotlight_generated_tokens_total") - generated0;
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let ttft = (s.metric("spotlight_time_to_first_token_seconds_total") - ttft0.0)
        / (s.metric("spotlight_first_tokens_total") - ttft0.1);
    let report = json!({
        "command": "SPOTLIGHT_SERVE_LOAD_JSON=FILE cargo test -p spotlight-cli --test serve openai_api",
        "commit": commit, "backend": "cpu",
        "device": format!("cpu, {} threads", std::thread::available_parallelism().map_or(0, |n| n.get())),
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "config": {"attention": "spotlight, --dense-below 0 --window 16 --min-tokens 8", "ctx_size": 512},
        "requests": lat.len(), "concurrency": 6, "slots": 4, "max_tokens": 8, "ttft_mean_s": ttft,
        "latency_p50_s": percentile(&lat, 0.5), "latency_p99_s": percentile(&lat, 0.99),
        "wall_s": wall, "generated_tokens": tokens, "tokens_per_s": tokens / wall,
        "mean_decode_batch": (s.metric("spotlight_decode_rows_total") - rows0) / (s.metric("spotlight_decode_steps_total") - steps0),
    });
    eprintln!("load test: {report}");
    if let Some(path) = std::env::var_os("SPOTLIGHT_SERVE_LOAD_JSON") {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    }
    s.wait_metric("spotlight_slots_busy", 0.0);
    assert_eq!(s.metric("spotlight_failed_total"), 0.0);
}

#[test]
fn oversized_bodies_faults_and_graceful_shutdown() {
    let mut s = Server::start(
        &[
            "--slots",
            "2",
            "--ctx-size",
            "256",
            "--max-body-bytes",
            "4096",
        ],
        &[("SPOTLIGHT_SERVE_FAULTS", "1")],
    );
    let (st, b) = s.post(
        "/v1/completions",
        &completion(&"word ".repeat(2000), 4, false),
    );
    assert_error(
        st,
        &b,
        413,
        "invalid_request_error",
        "over the limit of 4096 bytes",
    );

    // A request that panics in the engine fails alone: the one beside it is unchanged.
    let alone =
        s.post("/v1/completions", &completion(PROMPT, 12, false)).1["choices"][0]["text"].clone();
    let mut faulty = completion(PROMPT, 4, false);
    faulty["spotlight"] = json!({"fault": true});
    let (good, (st, b)) = std::thread::scope(|sc| {
        let g = sc.spawn(|| s.stream("/v1/completions", &completion(PROMPT, 12, true)));
        std::thread::sleep(Duration::from_millis(200));
        let bad = s.post("/v1/completions", &faulty);
        (stream_text(&events(g.join().unwrap())).0, bad)
    });
    assert_error(st, &b, 500, "server_error", "fault injected");
    assert_eq!(json!(good), alone);
    assert_eq!(s.metric("spotlight_failed_total"), 1.0);

    // SIGTERM mid-stream: the stream still ends properly, new requests get 503, exit status 0.
    let r = s.stream("/v1/completions", &completion(PROMPT, 40, true));
    let mut lines = r.lines();
    assert!(lines.next().unwrap().unwrap().starts_with("data: "));
    let kill = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    std::thread::sleep(Duration::from_millis(300));
    if let Ok(r) = s.get("/health") {
        assert_eq!(r.status, 503, "health while draining");
    }
    let rest: Vec<String> = lines
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("data: ").map(String::from))
        .collect();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}
