//! Opening a model from disk: a `.gguf` file or a local HF directory.

use std::path::{Path, PathBuf};

use crate::backend::LlamaBackend;
use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::gguf::GgufFile;
use crate::load::{GgufSource, SafetensorsSource};
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// A checkpoint on disk with its config and tokenizer, ready to be loaded onto a device.
pub enum Checkpoint {
    Gguf {
        path: PathBuf,
        file: GgufFile,
    },
    HfDir {
        path: PathBuf,
        weights: SafetensorsSource,
        eos_ids: Vec<u32>,
    },
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Self, LlamaError> {
        if path.is_dir() {
            let read = |name: &str| std::fs::read_to_string(path.join(name));
            let config_text = read("config.json").map_err(|e| {
                LlamaError::Io(format!("{}: cannot read config.json ({e})", path.display()))
            })?;
            let config_json: serde_json::Value = serde_json::from_str(&config_text)
                .map_err(|e| LlamaError::Config(format!("config.json: {e}")))?;
            let ids = |v: Option<&serde_json::Value>| -> Vec<u32> {
                match v {
                    Some(serde_json::Value::Number(n)) => {
                        n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
                    }
                    Some(serde_json::Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_u64().map(|x| x as u32))
                        .collect(),
                    _ => vec![],
                }
            };
            let mut eos_ids = ids(config_json.get("eos_token_id"));
            if let Ok(g) = read("generation_config.json") {
                if let Ok(g) = serde_json::from_str::<serde_json::Value>(&g) {
                    eos_ids.extend(ids(g.get("eos_token_id")));
                }
            }
            Ok(Self::HfDir {
                path: path.to_path_buf(),
                weights: SafetensorsSource::open(path)?,
                eos_ids,
            })
        } else if path.exists() {
            Ok(Self::Gguf {
                path: path.to_path_buf(),
                file: GgufFile::open(path)?,
            })
        } else {
            Err(LlamaError::Io(format!(
                "model {} does not exist",
                path.display()
            )))
        }
    }

    /// The weights' identity ([`crate::fingerprint`]): what a hash file trained on this model
    /// records, so that it still matches after the file is renamed.
    pub fn fingerprint(&self) -> Result<String, LlamaError> {
        match self {
            Self::Gguf { file, .. } => Ok(file.fingerprint()),
            Self::HfDir { weights, .. } => weights.fingerprint(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Self::Gguf { path, .. } | Self::HfDir { path, .. } => path,
        }
    }

    pub fn config(&self) -> Result<LlamaConfig, LlamaError> {
        match self {
            Self::Gguf { file, .. } => LlamaConfig::from_gguf(file),
            Self::HfDir { path, .. } => {
                let text = std::fs::read_to_string(path.join("config.json"))
                    .map_err(|e| LlamaError::Io(format!("{}: {e}", path.display())))?;
                LlamaConfig::from_hf_json(&text)
            }
        }
    }

    pub fn tokenizer(&self) -> Result<Tokenizer, LlamaError> {
        match self {
            Self::Gguf { file, .. } => Tokenizer::from_gguf(file),
            Self::HfDir { path, eos_ids, .. } => {
                let tj = std::fs::read_to_string(path.join("tokenizer.json")).map_err(|e| {
                    LlamaError::Tokenizer(format!(
                        "{}: cannot read tokenizer.json ({e})",
                        path.display()
                    ))
                })?;
                let tc = std::fs::read_to_string(path.join("tokenizer_config.json")).ok();
                Tokenizer::from_hf_files(&tj, tc.as_deref(), eos_ids.clone())
            }
        }
    }

    /// Loads the weights onto `device` with a RoPE table for `max_positions` (capped at the context).
    pub fn load<B: LlamaBackend>(
        &self,
        config: &LlamaConfig,
        max_positions: usize,
        device: &B::Device,
    ) -> Result<Llama<B>, LlamaError> {
        match self {
            Self::Gguf { file, .. } => Llama::load(
                config,
                &GgufSource::new(file, config),
                max_positions,
                device,
            ),
            Self::HfDir { weights, .. } => Llama::load(config, weights, max_positions, device),
        }
    }
}
