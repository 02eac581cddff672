//! Errors as HTTP answers in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`,
//! with the status the official clients map to their exception types (400 BadRequestError, 404
//! NotFoundError, 429 RateLimitError, …). A client mistake is never a 5xx (clients retry those).

use serde_json::json;

use crate::http::Response;
use crate::routes::json_response;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After` (overload, draining, loading).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: u16, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            param,
            ..Self::new(400, "invalid_request_error", message)
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        Self::new(404, "invalid_request_error", message).with_code(code)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            format!("request body over the limit of {limit} bytes"),
        )
        .with_code("request_too_large")
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(429, "rate_limit_error", message)
        }
        .with_code("queue_full")
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(503, "unavailable_error", message)
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "server_error", message)
    }

    /// The JSON body (also sent as an SSE `data:` event after a stream has started).
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

impl ApiError {
    pub fn into_response(self) -> Response {
        let mut r = json_response(self.status, &self.body());
        if let Some(s) = self.retry_after {
            r.headers.push(("Retry-After", s.to_string()));
        }
        if self.status == 500 {
            // The same request would fail again: tell the openai client not to retry it.
            r.headers.push(("x-should-retry", "false".into()));
        }
        r
    }
}
