//! The trained hash of a whole model in one safetensors file: per layer a query network (one per
//! query head) and, in the group layout, a key network (one per KV head); a JSON header names the
//! model, the head layout, d, bits and the training configuration. Loading checks everything a
//! mismatched or damaged file could get wrong and says what, in one line.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use spotlight_kernels::reference::HashWeights;
use spotlight_llama::LlamaConfig;

use crate::tensor_file::{self, Tensors};
use crate::{Layout, TrainError};

/// Largest head count a header may claim (the model loader's cap).
const MAX_HEADS: usize = spotlight_llama::config::MAX_HEADS;

/// Format tag written into every file.
pub const FORMAT: &str = "spotlight-hash/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashHeader {
    pub format: String,
    /// The model the hash was trained for (its file or directory name, for messages).
    pub model: String,
    /// The model's weights ([`spotlight_llama::Checkpoint::fingerprint`]); where recorded, it
    /// decides which model the file belongs to, whatever the model's file is called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_fingerprint: Option<String>,
    pub layers: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Code length per head: head_dim (one network, the paper's) or a multiple, R = bits /
    /// head_dim networks per head whose codes sit side by side.
    pub bits: usize,
    pub layout: Layout,
    /// How it was trained (the trainer's config and the step count), for the record.
    pub training: serde_json::Value,
    /// The layers that were trained, when not all were (the others hold their start):
    /// `spotlight hash merge` joins such files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_layers: Option<Vec<usize>>,
}

impl HashHeader {
    pub fn new(
        model: &str,
        config: &LlamaConfig,
        layout: Layout,
        bits: usize,
        training: serde_json::Value,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            model: model.into(),
            model_fingerprint: None,
            layers: config.num_hidden_layers,
            q_heads: config.num_attention_heads,
            kv_heads: config.num_key_value_heads,
            head_dim: config.head_dim,
            bits,
            layout,
            training,
            trained_layers: None,
        }
    }

    /// Whether layer `l` was trained.
    pub fn trained(&self, l: usize) -> bool {
        self.trained_layers.as_ref().is_none_or(|t| t.contains(&l))
    }

    pub fn key_nets(&self) -> usize {
        self.layout.key_nets(self.q_heads, self.kv_heads)
    }

    /// Networks per head (bits / head_dim).
    pub fn replicas(&self) -> usize {
        self.bits / self.head_dim.max(1)
    }
}

/// One layer's networks.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerHash {
    /// One network per query head.
    pub query: HashWeights,
    /// Group layout: one network per KV head. Faithful layout: None (the query networks code keys).
    pub key: Option<HashWeights>,
}

impl LayerHash {
    /// The networks that code keys.
    pub fn key_weights(&self) -> &HashWeights {
        self.key.as_ref().unwrap_or(&self.query)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HashFile {
    pub header: HashHeader,
    pub layers: Vec<LayerHash>,
}

/// Largest header [`HashFile::read_header`] reads.
const MAX_HEADER_BYTES: u64 = 1 << 20;

const PARTS: [&str; 4] = ["w1", "b1", "w2", "b2"];

fn put(tensors: &mut Tensors, prefix: &str, w: &HashWeights) {
    let (n, d) = (w.heads, w.dim);
    for (part, v) in PARTS.iter().zip([&w.w1, &w.b1, &w.w2, &w.b2]) {
        let shape = if part.starts_with('w') {
            vec![n, d, d]
        } else {
            vec![n, d]
        };
        tensors.insert(format!("{prefix}.{part}"), (shape, v.clone()));
    }
}

fn take(
    tensors: &mut Tensors,
    prefix: &str,
    (heads, replicas): (usize, usize),
    d: usize,
    path: &Path,
) -> Result<HashWeights, TrainError> {
    let nets = heads * replicas;
    let bad = |why: String| TrainError::HashFile {
        path: path.display().to_string(),
        why,
    };
    let mut parts = Vec::with_capacity(4);
    for part in PARTS {
        let name = format!("{prefix}.{part}");
        let expected = if part.starts_with('w') {
            vec![nets, d, d]
        } else {
            vec![nets, d]
        };
        let (shape, v) = tensors
            .remove(&name)
            .ok_or_else(|| bad(format!("tensor {name} is missing")))?;
        if shape != expected {
            return Err(bad(format!(
                "tensor {name} has shape {shape:?}, the header implies {expected:?}"
            )));
        }
        parts.push(v);
    }
    let [w1, b1, w2, b2]: [Vec<f32>; 4] = parts.try_into().expect("four parts");
    HashWeights::new(nets, d, w1, b1, w2, b2)
        .and_then(|w| w.with_replicas(replicas))
        .map_err(|e| bad(e.to_string()))
}

impl HashFile {
    /// Writes the weights in f32 (the trainer's precision).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.write(path, false)
    }

    /// Writes the weights rounded to f16: half the size, for files kept in the repository.
    pub fn save_f16(&self, path: &Path) -> Result<(), TrainError> {
        self.write(path, true)
    }

    fn write(&self, path: &Path, half: bool) -> Result<(), TrainError> {
        let mut tensors = Tensors::new();
        for (l, layer) in self.layers.iter().enumerate() {
            put(&mut tensors, &format!("layers.{l}.query"), &layer.query);
            if let Some(k) = &layer.key {
                put(&mut tensors, &format!("layers.{l}.key"), k);
            }
        }
        let header = serde_json::to_string(&self.header).expect("header serialises");
        tensor_file::write(
            path,
            &tensors,
            HashMap::from([("spotlight".to_string(), header)]),
            half,
        )
    }

    /// The header alone (the start of the file, unchecked beyond its form): enough to tell which
    /// model a file is for without reading its weights.
    pub fn read_header(path: &Path) -> Result<HashHeader, TrainError> {
        use std::io::Read;
        let bad = |why: String| TrainError::HashFile {
            path: path.display().to_string(),
            why,
        };
        let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
        let mut start = vec![0u8; 8];
        f.read_exact(&mut start).map_err(|e| bad(e.to_string()))?;
        let len = u64::from_le_bytes(start[..8].try_into().expect("8 bytes"));
        if len <= MAX_HEADER_BYTES {
            start.resize(8 + len as usize, 0);
            f.read_exact(&mut start[8..])
                .map_err(|e| bad(e.to_string()))?;
        }
        Self::header_from_bytes(&start, path)
    }

    /// The header from the start of a hash file's bytes (see [`Self::read_header`]).
    pub fn header_from_bytes(bytes: &[u8], path: &Path) -> Result<HashHeader, TrainError> {
        let bad = |why: String| TrainError::HashFile {
            path: path.display().to_string(),
            why,
        };
        let len = bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or_else(|| bad("shorter than a safetensors header".into()))?;
        // Hash-file headers are a few KiB; a larger one is not ours.
        if len > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header of {len} bytes: not a Spotlight hash file"
            )));
        }
        let json = bytes
            .get(8..8 + len as usize)
            .ok_or_else(|| bad(format!("header of {len} bytes runs past the end")))?;
        let json: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("unreadable header ({e})")))?;
        let raw = json
            .get("__metadata__")
            .and_then(|m| m.get("spotlight"))
            .and_then(|v| v.as_str())
            .ok_or_else(|| bad("no spotlight header: not a Spotlight hash file".into()))?;
        serde_json::from_str(raw).map_err(|e| bad(format!("unreadable header ({e})")))
    }

    /// Reads and validates a file written by [`HashFile::save`].
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let bytes = std::fs::read(path).map_err(|e| TrainError::HashFile {
            path: path.display().to_string(),
            why: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Validates the bytes of a hash file read from `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, TrainError> {
        let bad = |why: String| TrainError::HashFile {
            path: path.display().to_string(),
            why,
        };
        let (meta, mut tensors) = tensor_file::parse(bytes, path, false)?;
        let raw = meta
            .get("spotlight")
            .ok_or_else(|| bad("no spotlight header: not a Spotlight hash file".into()))?;
        let header: HashHeader =
            serde_json::from_str(raw).map_err(|e| bad(format!("unreadable header ({e})")))?;
        if header.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, this build reads {FORMAT:?}",
                header.format
            )));
        }
        if header.head_dim == 0
            || header.bits == 0
            || !header.bits.is_multiple_of(header.head_dim)
            || header.bits > 256
            || header.kv_heads == 0
            || !header.q_heads.is_multiple_of(header.kv_heads)
        {
            return Err(bad(format!(
                "inconsistent header: {} q heads, {} kv heads, d {}, {} bits",
                header.q_heads, header.kv_heads, header.head_dim, header.bits
            )));
        }
        // Every layer has four tensors per network kind: a header claiming more layers than
        // the file holds tensors for is refused before anything is sized by it.
        if header.layers == 0 || header.layers > tensors.len() / 4 {
            return Err(bad(format!(
                "header claims {} layers, the file holds {} tensors",
                header.layers,
                tensors.len()
            )));
        }
        if header.q_heads > MAX_HEADS {
            return Err(bad(format!(
                "header claims {} query heads (at most {MAX_HEADS})",
                header.q_heads
            )));
        }
        if let Some(t) = &header.trained_layers {
            if !t.windows(2).all(|w| w[0] < w[1]) || t.iter().any(|&l| l >= header.layers) {
                return Err(bad(format!(
                    "trained layers {t:?} are not ascending layers below {}",
                    header.layers
                )));
            }
        }
        let (d, r) = (header.head_dim, header.replicas());
        let mut layers = Vec::with_capacity(header.layers);
        for l in 0..header.layers {
            let query = take(
                &mut tensors,
                &format!("layers.{l}.query"),
                (header.q_heads, r),
                d,
                path,
            )?;
            let key = match header.layout {
                Layout::Faithful => None,
                Layout::Group => Some(take(
                    &mut tensors,
                    &format!("layers.{l}.key"),
                    (header.kv_heads, r),
                    d,
                    path,
                )?),
            };
            layers.push(LayerHash { query, key });
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!(
                "has {} tensors beyond the {} layers of its header, e.g. {extra}",
                tensors.len(),
                header.layers
            )));
        }
        Ok(Self { header, layers })
    }

    /// Checks the file was trained for this model; a one-line error names the first difference.
    ///
    /// The model is identified by its weights' `fingerprint` where both the file and the caller
    /// have one (a renamed model file still matches, another model of the same name does not),
    /// else by its name.
    pub fn check_model(
        &self,
        model: &str,
        fingerprint: Option<&str>,
        config: &LlamaConfig,
    ) -> Result<(), TrainError> {
        let h = &self.header;
        let mismatch = |what: &str, file: String, model_has: String| {
            Err(TrainError::Mismatch(format!(
                "the hash file was trained with {what} {file}, the model has {model_has}"
            )))
        };
        match (h.model_fingerprint.as_deref(), fingerprint) {
            (Some(file), Some(has)) if file != has => {
                return mismatch(
                    "the weights of",
                    format!("{:?} (fingerprint {file})", h.model),
                    format!("the fingerprint {has} ({model:?})"),
                );
            }
            (Some(_), Some(_)) => {}
            _ if h.model != model => {
                return mismatch("model", format!("{:?}", h.model), format!("{model:?}"));
            }
            _ => {}
        }
        for (what, file, has) in [
            ("layers", h.layers, config.num_hidden_layers),
            ("query heads", h.q_heads, config.num_attention_heads),
            ("kv heads", h.kv_heads, config.num_key_value_heads),
            ("head_dim", h.head_dim, config.head_dim),
        ] {
            if file != has {
                return mismatch(what, file.to_string(), has.to_string());
            }
        }
        Ok(())
    }
}
