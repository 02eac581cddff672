//! `spotlight hash …`: operations on hash files.

use std::path::PathBuf;

use spotlight_train::{hash_merge, HashFile};

use spotlight_llama::Checkpoint;

use crate::error::{CliError, Result};
use crate::model_args::{ModelArgs, ModelId};

#[derive(Debug, clap::Subcommand)]
pub enum HashCommand {
    /// Join hash files trained on disjoint layer ranges (`train --layers`) into one.
    Merge(MergeArgs),
    /// Record a model's weights fingerprint in hash files made for it, so they follow the model
    /// under any file name and refuse other weights of the same name (files written by
    /// `spotlight train` already carry it).
    Stamp(StampArgs),
}

#[derive(Debug, clap::Args)]
pub struct StampArgs {
    /// The hash files, rewritten in place (atomically): each must fit the model.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The model the files were trained for (a .gguf file, an HF directory, or smollm2-135m).
    #[arg(long, default_value = crate::model_args::DEFAULT_MODEL)]
    pub model: String,
    /// Write f16 weights (as the shipped files are) instead of f32.
    #[arg(long)]
    pub f16: bool,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The files to join: same model, layout, bits and training configuration except --layers;
    /// their trained layers may not overlap or leave a gap.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The merged file.
    #[arg(long)]
    pub out: PathBuf,
    /// Write f16 weights (as the shipped files are) instead of f32.
    #[arg(long)]
    pub f16: bool,
}

pub fn run(command: HashCommand) -> Result<()> {
    match command {
        HashCommand::Merge(a) => {
            let files = a
                .files
                .iter()
                .map(|p| Ok((p.as_path(), HashFile::load(p)?)))
                .collect::<Result<Vec<_>>>()?;
            let merged = hash_merge::merge(&files)?;
            if a.f16 {
                merged.save_f16(&a.out)?;
            } else {
                merged.save(&a.out)?;
            }
            let trained = merged
                .header
                .trained_layers
                .as_ref()
                .map_or("all".to_string(), |t| {
                    format!("{}..={}", t[0], t[t.len() - 1])
                });
            eprintln!(
                "wrote {} ({} files, layers {trained} trained)",
                a.out.display(),
                files.len()
            );
            Ok(())
        }
        HashCommand::Stamp(a) => {
            let path = ModelArgs {
                model: a.model.clone(),
                backend: None,
            }
            .path()?;
            let name = ModelId::name_of(&path);
            let ckpt = Checkpoint::open(&path)?;
            let (config, fingerprint) = (ckpt.config()?, ckpt.fingerprint()?);
            for p in &a.files {
                let mut file = HashFile::load(p)?;
                // By name where the file records no weights yet, else by the weights.
                file.check_model(&name, Some(&fingerprint), &config)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", p.display())))?;
                file.header.model_fingerprint = Some(fingerprint.clone());
                if a.f16 {
                    file.save_f16(p)?;
                } else {
                    file.save(p)?;
                }
                eprintln!(
                    "{}: made for the weights {fingerprint} ({})",
                    p.display(),
                    name
                );
            }
            Ok(())
        }
    }
}
