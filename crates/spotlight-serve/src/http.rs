//! A small HTTP/1.1 server on tokio, all the API needs: one request per connection
//! (`Connection: close`), request bodies with `Content-Length` (under a size limit), answers whole
//! or streamed as chunks (Server-Sent Events).
//!
//! While a request runs, the connection is watched: a client that closes it cancels the request
//! (the route future, and with it the request's cancel guard, is dropped), streaming or not.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::routes::{self, AppState, CancelOnDrop};

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub enum Body {
    Full(Vec<u8>),
    /// Events as they come; a keep-alive comment after `keep_alive` without one.
    Sse {
        events: mpsc::Receiver<String>,
        guard: CancelOnDrop,
        keep_alive: Duration,
    },
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
}

/// Largest request head (request line + headers).
const MAX_HEAD: usize = 64 << 10;

enum ReadError {
    TooLarge(usize),
    Bad(String),
    Closed,
}

/// Serves one connection.
pub async fn connection(state: Arc<AppState>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true); // small SSE writes go out at once (no Nagle delay)
    let req = match read_request(&tcp, state.max_body_bytes).await {
        Ok(r) => r,
        Err(ReadError::Closed) => return,
        Err(ReadError::TooLarge(declared)) => {
            state.metrics.count_request("body", 413);
            let r = ApiError::too_large(state.max_body_bytes).into_response();
            let _ = write_response(&tcp, r).await;
            // Read what the client still sends, so closing does not reset the connection before
            // it has read the answer.
            let _ = tokio::time::timeout(Duration::from_secs(2), discard(&tcp, declared)).await;
            return;
        }
        Err(ReadError::Bad(m)) => {
            state.metrics.count_request("body", 400);
            let _ = write_response(&tcp, ApiError::bad_request(m, None).into_response()).await;
            return;
        }
    };
    let resp = tokio::select! {
        r = routes::route(state, req) => r,
        _ = closed(&tcp) => return, // the client left before the answer: the request is cancelled
    };
    let _ = write_response(&tcp, resp).await;
}

async fn read_some(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        tcp.readable().await?;
        match tcp.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(tcp: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Completes when the peer closes the connection (or it fails).
async fn closed(tcp: &TcpStream) {
    let mut buf = [0u8; 512];
    loop {
        match read_some(tcp, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => continue, // pipelined bytes after a Connection: close request are ignored
        }
    }
}

async fn discard(tcp: &TcpStream, mut n: usize) {
    let mut buf = [0u8; 8192];
    while n > 0 {
        match read_some(tcp, &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n = n.saturating_sub(k),
        }
    }
}

async fn read_request(tcp: &TcpStream, max_body: usize) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Bad(format!(
                "request head over {MAX_HEAD} bytes"
            )));
        }
        match read_some(tcp, &mut chunk).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ReadError::Bad("request head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("bad request line {line:?}")));
    };
    let path = target.split('?').next().unwrap_or(target).to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut req = Request {
        method: method.to_string(),
        path,
        headers,
        body: Vec::new(),
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        return Err(ReadError::Bad(
            "chunked request bodies are not supported: send Content-Length".into(),
        ));
    }
    let len = match req.header("content-length") {
        None => 0,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {v:?}")))?,
    };
    if len > max_body {
        return Err(ReadError::TooLarge(len));
    }
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        write_all(tcp, b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| ReadError::Closed)?;
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match read_some(tcp, &mut chunk).await {
            Ok(0) | Err(_) => return Err(ReadError::Closed),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

async fn write_response(tcp: &TcpStream, r: Response) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "Connection: close\r\n";
    match r.body {
        Body::Full(b) => {
            head += &format!("Content-Length: {}\r\n\r\n", b.len());
            write_all(tcp, head.as_bytes()).await?;
            write_all(tcp, &b).await
        }
        Body::Sse {
            mut events,
            guard,
            keep_alive,
        } => {
            head += "Transfer-Encoding: chunked\r\n\r\n";
            write_all(tcp, head.as_bytes()).await?;
            loop {
                let next = tokio::select! {
                    e = events.recv() => e,
                    _ = closed(tcp) => break, // the client left: the guard cancels the request
                    _ = tokio::time::sleep(keep_alive) => Some(": keep-alive\n\n".to_string()),
                };
                let Some(e) = next else {
                    write_all(tcp, b"0\r\n\r\n").await?;
                    break;
                };
                let frame = format!("{:x}\r\n{e}\r\n", e.len());
                if write_all(tcp, frame.as_bytes()).await.is_err() {
                    break;
                }
            }
            drop(guard);
            Ok(())
        }
    }
}
