//! Tokenizer (HF `tokenizers`), from a `tokenizer.json` or rebuilt from GGUF metadata, plus chat
//! templates (ChatML for SmolLM2/Qwen2, Llama 3's header format).

use serde_json::{json, Value as Json};

use crate::error::LlamaError;
use crate::gguf::{GgufFile, Value};

/// How a conversation is rendered into the prompt text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen2).
    ChatMl,
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3).
    Llama3,
    /// No template: the message is the prompt.
    Plain,
}

impl ChatTemplate {
    /// Picks the template from a Jinja chat-template string by its marker tokens.
    pub fn detect(jinja: Option<&str>) -> Self {
        match jinja {
            Some(t) if t.contains("<|im_start|>") => Self::ChatMl,
            Some(t) if t.contains("<|start_header_id|>") => Self::Llama3,
            _ => Self::Plain,
        }
    }

    /// Renders (role, content) messages and opens the assistant's turn.
    pub fn render(self, messages: &[(&str, &str)]) -> String {
        let mut s = String::new();
        match self {
            Self::ChatMl => {
                for (role, content) in messages {
                    s += &format!("<|im_start|>{role}\n{content}<|im_end|>\n");
                }
                s += "<|im_start|>assistant\n";
            }
            Self::Llama3 => {
                s += "<|begin_of_text|>";
                for (role, content) in messages {
                    s += &format!(
                        "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
                    );
                }
                s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            }
            Self::Plain => {
                for (_, content) in messages {
                    s += content;
                }
            }
        }
        s
    }

    /// The token text that ends an assistant turn.
    fn end_of_turn(self) -> Option<&'static str> {
        match self {
            Self::ChatMl => Some("<|im_end|>"),
            Self::Llama3 => Some("<|eot_id|>"),
            Self::Plain => None,
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Prepend this id to plain (non-chat) prompts.
    pub bos: Option<u32>,
    /// Generation stops at any of these.
    pub stop_ids: Vec<u32>,
    pub template: ChatTemplate,
}

impl Tokenizer {
    /// Rebuilds the tokenizer stored in GGUF metadata (`tokenizer.ggml.model = gpt2`, byte-level BPE).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self, LlamaError> {
        let err = |m: String| LlamaError::Tokenizer(m);
        let model = gguf.get("tokenizer.ggml.model")?.as_str().unwrap_or("");
        if model != "gpt2" {
            return Err(err(format!(
                "GGUF tokenizer model {model:?} is not supported here (only byte-level BPE, \"gpt2\"); \
                 use the HF directory with tokenizer.json instead"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, LlamaError> {
            gguf.get(key)?
                .as_array()
                .ok_or_else(|| err(format!("{key} is not an array")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| err(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match gguf
            .metadata
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
        {
            Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let id = |key: &str| {
            gguf.metadata
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as u32)
        };
        let bos = id("tokenizer.ggml.bos_token_id");
        let add_bos = matches!(
            gguf.metadata.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let pre = gguf
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let vocab: serde_json::Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // token_type 3 = control, 4 = user-defined: matched whole in the input, never split by BPE.
        let added: Vec<Json> = tokens
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(types.get(*i), Some(3) | Some(4)))
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": types[i] == 3})
            })
            .collect();
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
        // Pre-tokenizers by llama.cpp's `tokenizer.ggml.pre` name (same regexes as the HF originals).
        let (pre_tokenizer, ignore_merges) = match pre {
            "smollm" => (
                json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
                false,
            ),
            "llama-bpe" | "llama3" => (
                json!({"type": "Sequence", "pretokenizers": [
                split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                byte_level(false)]}),
                true,
            ),
            "qwen2" => (
                json!({"type": "Sequence", "pretokenizers": [
                split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
                byte_level(false)]}),
                false,
            ),
            _ => (byte_level(true), false),
        };
        let post_processor = match (add_bos, bos) {
            (true, Some(b)) => {
                let t = tokens
                    .get(b as usize)
                    .ok_or_else(|| err(format!("bos id {b} is outside the vocabulary")))?;
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": t, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {t.clone(): {"id": t, "ids": [b], "tokens": [t]}}})
            }
            _ => Json::Null,
        };
        let tokenizer_json = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}
        });
        let inner: tokenizers::Tokenizer = tokenizer_json.to_string().parse().map_err(|e| {
            err(format!(
                "cannot build the tokenizer from GGUF metadata: {e}"
            ))
        })?;
        let template = ChatTemplate::detect(
            gguf.metadata
                .get("tokenizer.chat_template")
                .and_then(Value::as_str),
        );
        let mut stop_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id") {
            stop_ids.push(eot);
        }
        Ok(Self::finish(
            inner,
            bos.filter(|_| add_bos),
            stop_ids,
            template,
        ))
    }

    /// Loads `tokenizer.json`; BOS, stop ids and the template come from the HF config files.
    pub fn from_hf_files(
        tokenizer_json: &str,
        tokenizer_config: Option<&str>,
        eos_ids: Vec<u32>,
    ) -> Result<Self, LlamaError> {
        let inner: tokenizers::Tokenizer = tokenizer_json
            .parse()
            .map_err(|e| LlamaError::Tokenizer(format!("tokenizer.json: {e}")))?;
        let cfg: Json = tokenizer_config
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Json::Null);
        let template = ChatTemplate::detect(cfg.get("chat_template").and_then(Json::as_str));
        // tokenizer.json's own post-processor adds BOS where the model wants it (Llama 3); Llama 2's
        // tokenizer_config says add_bos_token instead.
        let bos = match cfg.get("add_bos_token").and_then(Json::as_bool) {
            Some(true) => cfg
                .get("bos_token")
                .and_then(|b| {
                    b.as_str()
                        .or_else(|| b.get("content").and_then(Json::as_str))
                })
                .and_then(|t| inner.token_to_id(t)),
            _ => None,
        };
        Ok(Self::finish(inner, bos, eos_ids, template))
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        mut stop_ids: Vec<u32>,
        template: ChatTemplate,
    ) -> Self {
        // The end-of-turn marker ends a chat reply; "<|endoftext|>" ends a document in completion
        // mode even when the checkpoint names only the chat EOS.
        for t in template.end_of_turn().into_iter().chain(["<|endoftext|>"]) {
            stop_ids.extend(inner.token_to_id(t));
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        // BOS via a post-processor is already in `inner`; `bos` is only for tokenizers without one.
        let has_post = inner.get_post_processor().is_some();
        Self {
            inner,
            bos: if has_post { None } else { bos },
            stop_ids,
            template,
        }
    }

    /// Tokens of `text`; `special` adds BOS (plain prompts), chat prompts already carry theirs.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, LlamaError> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| LlamaError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if special {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Tokens of a conversation of (role, content) messages in the model's chat template, the
    /// assistant's turn opened (`generate --chat` and the server's chat completions).
    pub fn encode_chat(&self, messages: &[(&str, &str)]) -> Result<Vec<u32>, LlamaError> {
        self.encode(&self.template.render(messages), false)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, LlamaError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| LlamaError::Tokenizer(e.to_string()))
    }

    /// Number of ids the tokenizer can produce (its largest id + 1).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuses a tokenizer that can produce ids the model has no embedding for.
    pub fn check_model_vocab(&self, model_vocab: usize) -> Result<(), LlamaError> {
        let n = self.vocab_size();
        if n > model_vocab {
            return Err(LlamaError::Tokenizer(format!(
                "tokenizer has {n} tokens but the model's vocabulary has {model_vocab}: they do not belong together"
            )));
        }
        Ok(())
    }

    /// Streams text as tokens arrive: byte-level BPE tokens can split a UTF-8 character, so text is
    /// emitted only once the decoded prefix is valid and stable.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            ids: Vec::new(),
            printed: 0,
        }
    }
}

/// Incremental detokenizer for streaming output.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    printed: usize,
}

impl TextStream<'_> {
    /// Adds a token; returns the new text that is safe to print.
    pub fn push(&mut self, id: u32) -> Result<String, LlamaError> {
        self.ids.push(id);
        let text = self.tokenizer.decode(&self.ids)?;
        if text.ends_with('\u{fffd}') || text.len() < self.printed {
            return Ok(String::new()); // an incomplete UTF-8 sequence: wait for the next token
        }
        let Some(new) = text.get(self.printed..).map(String::from) else {
            return Ok(String::new());
        };
        self.printed = text.len();
        Ok(new)
    }
}
