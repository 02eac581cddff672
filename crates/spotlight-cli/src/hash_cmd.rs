//! `spotlight hash …`: operations on hash files.

use std::path::PathBuf;

use spotlight_train::{hash_merge, HashFile};

use crate::error::Result;

#[derive(Debug, clap::Subcommand)]
pub enum HashCommand {
    /// Join hash files trained on disjoint layer ranges (`train --layers`) into one.
    Merge(MergeArgs),
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
    }
}
