//! OpenAI request bodies, read leniently (unknown fields are ignored, `max_completion_tokens`
//! is `max_tokens`, `stop` is a string or a list, `content` a string or text parts), and checked
//! into what the engine needs, each failure naming its `param`.

use serde::Deserialize;
use spotlight_llama::Sampling;

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub options: Options,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub options: Options,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Spotlight's own request field: `"spotlight": {"attention": "dense", "budget": 0.05}`.
#[derive(Debug, Default, Deserialize)]
pub struct Extension {
    pub attention: Option<String>,
    pub budget: Option<f64>,
    /// Fault injection (honoured only when the server was started with it).
    #[serde(default)]
    pub fault: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct Options {
    #[serde(alias = "max_completion_tokens")]
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub spotlight: Option<Extension>,
}

impl Message {
    pub fn text(&self) -> Result<String, ApiError> {
        match &self.content {
            None => Ok(String::new()),
            Some(Content::Text(t)) => Ok(t.clone()),
            Some(Content::Parts(parts)) => parts
                .iter()
                .map(|p| match (p.kind.as_str(), &p.text) {
                    ("text", Some(t)) => Ok(t.as_str()),
                    (k, _) => Err(ApiError::bad_request(
                        format!("message content of type {k} is not supported (text only)"),
                        Some("messages"),
                    )),
                })
                .collect(),
        }
    }
}

/// Sampling and limits after checking, before the prompt length is known.
#[derive(Debug, Clone)]
pub struct Checked {
    pub max_tokens: Option<usize>,
    pub sampling: Sampling,
    pub repetition_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    pub attention: Option<String>,
    pub budget: Option<f64>,
    pub fault: bool,
}

/// Most stop strings per request (OpenAI's limit).
const MAX_STOPS: usize = 4;

impl Options {
    pub fn check(self) -> Result<Checked, ApiError> {
        let bad = |m: String, p: &'static str| Err(ApiError::bad_request(m, Some(p)));
        if let Some(n) = self.n {
            if n != 1 {
                return bad(format!("n = {n}: only n = 1 is supported"), "n");
            }
        }
        let max_tokens = match self.max_tokens {
            Some(m) if m < 1 => {
                return bad(
                    format!("max_tokens = {m}: must be at least 1"),
                    "max_tokens",
                )
            }
            Some(m) => Some(m as usize),
            None => None,
        };
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return bad(
                format!("temperature = {temperature}: must be in [0, 2]"),
                "temperature",
            );
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return bad(format!("top_p = {top_p}: must be in (0, 1]"), "top_p");
        }
        let top_k = match self.top_k {
            Some(k) if k < 0 => return bad(format!("top_k = {k}: must be ≥ 0"), "top_k"),
            k => k.map(|k| k as usize),
        };
        let presence = self.presence_penalty.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&presence) {
            return bad(
                format!("presence_penalty = {presence}: must be in [-2, 2]"),
                "presence_penalty",
            );
        }
        let frequency = self.frequency_penalty.unwrap_or(0.0);
        if !(-2.0..=2.0).contains(&frequency) {
            return bad(
                format!("frequency_penalty = {frequency}: must be in [-2, 2]"),
                "frequency_penalty",
            );
        }
        let repetition = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition > 0.0 && repetition.is_finite()) {
            return bad(
                format!("repetition_penalty = {repetition}: must be > 0"),
                "repetition_penalty",
            );
        }
        let stop = match self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOPS {
            return bad(
                format!("{} stop sequences: at most {MAX_STOPS}", stop.len()),
                "stop",
            );
        }
        let ext = self.spotlight.unwrap_or_default();
        if let Some(b) = ext.budget {
            if !(0.0..=1.0).contains(&b) {
                return bad(
                    format!("spotlight.budget = {b}: must be in [0, 1]"),
                    "spotlight",
                );
            }
        }
        Ok(Checked {
            max_tokens,
            sampling: Sampling::from_flags(temperature, top_k, Some(top_p)),
            repetition_penalty: repetition,
            presence_penalty: presence,
            frequency_penalty: frequency,
            seed: self.seed,
            stop,
            stream: self.stream.unwrap_or(false),
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            attention: ext.attention,
            budget: ext.budget,
            fault: ext.fault,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(v: serde_json::Value) -> Options {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn lenient_fields_are_read() {
        let c = options(serde_json::json!({
            "max_completion_tokens": 7, "stop": "x", "temperature": 0, "store": true,
            "stream": true, "stream_options": {"include_usage": true},
            "spotlight": {"attention": "dense"}
        }))
        .check()
        .unwrap();
        assert_eq!(c.max_tokens, Some(7));
        assert_eq!(c.stop, vec!["x".to_string()]);
        assert_eq!(c.sampling, Sampling::Greedy);
        assert!(c.stream && c.include_usage);
        assert_eq!(c.attention.as_deref(), Some("dense"));
    }

    #[test]
    fn bad_values_name_their_param() {
        for (v, param) in [
            (serde_json::json!({"n": 3}), "n"),
            (serde_json::json!({"max_tokens": 0}), "max_tokens"),
            (serde_json::json!({"temperature": 3.0}), "temperature"),
            (serde_json::json!({"top_p": 0}), "top_p"),
            (
                serde_json::json!({"stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (
                serde_json::json!({"spotlight": {"budget": 2.0}}),
                "spotlight",
            ),
        ] {
            let e = options(v.clone()).check().unwrap_err();
            assert_eq!((e.status, e.param), (400, Some(param)), "{v}");
        }
    }
}
