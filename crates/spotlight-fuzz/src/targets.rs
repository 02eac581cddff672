//! One function per loader of untrusted bytes. Each returns what the loader answered, in short
//! (`ok …` or the error with its numbers blanked), for the runner's novelty test; none may panic.
//! The cargo-fuzz project (`fuzz/fuzz_targets/*.rs`) calls these same functions.

use std::cell::RefCell;
use std::path::Path;

use burn::backend::{ndarray::NdArray, Autodiff};
use spotlight_llama::gguf::{Bytes, GgufFile};
use spotlight_llama::load::{shard_index, GgufSource, SafetensorsSource, WeightSource};
use spotlight_llama::{LlamaConfig, Tokenizer};
use spotlight_train::{tensor_file, HashFile, Layout, TrainConfig, Trainer};

/// A fuzz target: its name (the corpus directory) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> String,
}

pub const TARGETS: [Target; 6] = [
    Target {
        name: "gguf",
        run: gguf,
    },
    Target {
        name: "safetensors",
        run: safetensors,
    },
    Target {
        name: "hash_file",
        run: hash_file,
    },
    Target {
        name: "config",
        run: config,
    },
    Target {
        name: "tokenizer",
        run: tokenizer,
    },
    Target {
        name: "checkpoint",
        run: checkpoint,
    },
];

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// An answer in short: digits blanked so "needs 12 bytes" and "needs 13 bytes" are one answer.
fn outcome<T, E: std::fmt::Display>(r: &Result<T, E>, ok: &str) -> String {
    let s = match r {
        Ok(_) => format!("ok {ok}"),
        Err(e) => e.to_string(),
    };
    // Quoted text (names, values echoed from the input) is dropped too: what counts is which
    // check answered, not with which bytes.
    let mut out = String::with_capacity(80);
    let (mut last_digit, mut quoted) = (false, false);
    for c in s.chars() {
        if c == '"' || c == '`' {
            quoted = !quoted;
            continue;
        }
        let d = c.is_ascii_digit();
        if !(quoted || d && last_digit) {
            out.push(if d { '#' } else { c });
        }
        last_digit = d;
        if out.len() >= 80 {
            break;
        }
    }
    out
}

/// Most elements a target dequantises per tensor (the dequantisers are linear: a bigger tensor
/// exercises nothing new).
const MAX_ELEMENTS: usize = 1 << 20;

/// The GGUF reader: header, metadata, tensor infos, the config from metadata, every
/// dequantiser (via each tensor), and the q/k un-permutation of the weight source.
pub fn gguf(data: &[u8]) -> String {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(f) => f,
        Err(e) => return outcome::<(), _>(&Err(e), ""),
    };
    let mut names: Vec<&String> = file.tensors.keys().collect();
    names.sort();
    for name in &names {
        let info = &file.tensors[*name];
        if info.n_elements() <= MAX_ELEMENTS {
            let (shape, values) = file.dequantize(name).expect("a listed tensor");
            assert_eq!(values.len(), shape.iter().product::<usize>(), "{name}");
        }
    }
    let _ = file.fingerprint();
    let config = LlamaConfig::from_gguf(&file);
    if let Ok(c) = &config {
        let source = GgufSource::new(&file, c);
        let mut hf = source.names();
        hf.sort();
        for name in hf {
            let small = spotlight_llama::names::hf_to_gguf(&name)
                .and_then(|g| file.tensors.get(&g))
                .is_some_and(|i| i.n_elements() <= MAX_ELEMENTS);
            if small {
                let _ = source.get(&name);
            }
        }
    }
    outcome(&config, "config")
}

/// A safetensors shard as the HF loader reads it (every tensor widened to f32), and the
/// shard index when the input is JSON.
pub fn safetensors(data: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(data) {
        if text.trim_start().starts_with('{') {
            return outcome(&shard_index(text), "index");
        }
    }
    let source = SafetensorsSource::from_shards(vec![("fuzz".into(), Bytes::Owned(data.to_vec()))]);
    let source = match source {
        Ok(s) => s,
        Err(e) => return outcome::<(), _>(&Err(e), ""),
    };
    let _ = source.fingerprint();
    let mut names = source.names();
    names.sort();
    let mut last = Ok(None);
    for n in names {
        last = source.get(&n);
        if last.is_err() {
            break;
        }
    }
    outcome(&last, "tensors")
}

/// A hash file: header, every layer's networks, the check against a model's shape.
pub fn hash_file(data: &[u8]) -> String {
    let file = HashFile::from_bytes(data, Path::new("fuzz.safetensors"));
    let header = HashFile::header_from_bytes(data, Path::new("fuzz.safetensors"));
    if let Ok(f) = &file {
        // Where both read a header (the quick reader caps its size), they read the same one.
        if let Ok(h) = &header {
            assert_eq!(h, &f.header, "header reader disagrees with the loader");
        }
        let c = LlamaConfig::preset("smollm2-135m").expect("preset");
        let _ = f.check_model("fuzz", None, &c);
        for l in &f.layers {
            let _ = l.key_weights();
        }
    }
    outcome(&file, "hash")
}

/// An HF config.json.
pub fn config(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) => outcome(&LlamaConfig::from_hf_json(text), "config"),
        Err(_) => "not UTF-8".into(),
    }
}

/// The tokenizer rebuilt from GGUF metadata, then used: a prompt encoded, its ids decoded.
pub fn tokenizer(data: &[u8]) -> String {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(f) => f,
        Err(e) => return outcome::<(), _>(&Err(e), ""),
    };
    let tok = match Tokenizer::from_gguf(&file) {
        Ok(t) => t,
        Err(e) => return outcome::<(), _>(&Err(e), ""),
    };
    let _ = tok.check_model_vocab(tok.vocab_size());
    let ids = tok.encode(
        "Call me Ishmael. t1 t12 <|im_start|> 2026 \u{e9}\u{1f600}",
        true,
    );
    let decoded = ids.as_ref().map(|ids| tok.decode(ids));
    let _ = tok.decode(&[0, 1, u32::MAX]);
    match decoded {
        Ok(d) => outcome(&d, "decoded"),
        Err(e) => outcome::<(), _>(&Err(e), ""),
    }
}

type Cpu = Autodiff<NdArray<f32>>;

/// The model and training config of the checkpoint corpus: 1 layer, 2 query and 1 KV heads,
/// head_dim 32, the group and faithful layouts, 3 steps.
pub fn checkpoint_trainer() -> Trainer<Cpu> {
    let llama = LlamaConfig::attention_shape(1, 2, 1, 32, 64);
    let config = TrainConfig {
        layouts: vec![Layout::Group, Layout::Faithful],
        steps: 3,
        seq_len: 32,
        checkpoint_every: 1,
        ..TrainConfig::default()
    };
    Trainer::new(config, "fuzz", &llama, &Default::default()).expect("the fuzz trainer")
}

thread_local! {
    static TRAINER: RefCell<Trainer<Cpu>> = RefCell::new(checkpoint_trainer());
}

/// A training checkpoint: the file format with its checksum, then (checksum or not, to reach
/// past it) the trainer's own checks and restore.
pub fn checkpoint(data: &[u8]) -> String {
    let path = Path::new("checkpoint.safetensors");
    let strict = tensor_file::parse(data, path, true);
    let loose = match tensor_file::parse(data, path, false) {
        Ok(x) => x,
        Err(e) => return outcome::<(), _>(&Err(e), ""),
    };
    let restored = TRAINER.with(|t| t.borrow_mut().restore(path, &loose.0, loose.1));
    format!(
        "{} / {}",
        outcome(&strict.map(|_| ()), "checksum"),
        outcome(&restored, "restored")
    )
}
