//! Flags shared by every command that loads a model, and the loading itself.

use std::path::{Path, PathBuf};

use spotlight_llama::LlamaBackend;
use spotlight_llama::{Checkpoint, Llama, LlamaConfig, Tokenizer};

use crate::assets;
use crate::backend::BackendKind;
use crate::error::{CliError, Result};

/// The name that selects the default model.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// A .gguf file, a local HF model directory (config.json, *.safetensors, tokenizer.json),
    /// or `smollm2-135m` (fetched on first use).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Compute backend [default: cuda if usable, else a wgpu GPU, else cpu].
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
}

impl ModelArgs {
    /// Resolves the model path, fetching the default model if it is not cached yet.
    pub fn path(&self) -> Result<PathBuf> {
        if self.model == DEFAULT_MODEL {
            assets::ensure(&assets::SMOLLM2, &mut |m| eprintln!("{m}"))?;
            return Ok(assets::default_model_path());
        }
        let p = PathBuf::from(&self.model);
        if !p.exists() {
            return Err(CliError::Usage(format!(
                "--model {}: no such file or directory (give a .gguf file, an HF directory, or {DEFAULT_MODEL})",
                self.model
            )));
        }
        Ok(p)
    }
}

/// Which model a hash file belongs to: the file or directory name (for messages and reports) and
/// the weights' fingerprint, which decides where the hash file records one.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelId {
    pub name: String,
    /// None when the checkpoint cannot be opened (its load then reports why).
    pub fingerprint: Option<String>,
}

impl ModelId {
    pub fn of(path: &Path) -> Self {
        Self {
            name: Self::name_of(path),
            fingerprint: Checkpoint::open(path).and_then(|c| c.fingerprint()).ok(),
        }
    }

    /// The file or directory name.
    pub fn name_of(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string())
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A model on a device with its tokenizer.
pub struct Loaded<B: LlamaBackend> {
    pub model: Llama<B>,
    pub tokenizer: Tokenizer,
    pub config: LlamaConfig,
}

/// Opens the checkpoint, checks the tokenizer belongs to it, and loads the weights.
pub fn load<B: LlamaBackend>(
    path: &std::path::Path,
    max_positions: Option<usize>,
    device: &B::Device,
) -> Result<Loaded<B>> {
    let ckpt = Checkpoint::open(path)?;
    let config = ckpt.config()?;
    let tokenizer = ckpt.tokenizer()?;
    tokenizer.check_model_vocab(config.vocab_size)?;
    let max_positions = max_positions
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);
    let model = ckpt.load::<B>(&config, max_positions, device)?;
    Ok(Loaded {
        model,
        tokenizer,
        config,
    })
}
