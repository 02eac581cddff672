//! Training text: documents tokenized once into one token stream; each step reads a window of it.
//! Only the token ids stay in memory (the State of the Union corpus is ~2.1M tokens = 8 MB); the
//! model's q/k are produced per step from the window and dropped after it (streaming).

use std::path::Path;

use rand::{rngs::StdRng, Rng, SeedableRng};
use spotlight_llama::Tokenizer;

use crate::TrainError;

/// The token stream of a set of documents, separated by a blank line.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub tokens: Vec<u32>,
    pub documents: usize,
}

impl Corpus {
    /// Every `*.txt` file of `dir`, in name order.
    pub fn from_dir(dir: &Path, tokenizer: &Tokenizer) -> Result<Self, TrainError> {
        Self::from_dirs(&[dir], tokenizer)
    }

    /// Every `*.txt` file of each of `dirs`, folder by folder, in name order within each.
    pub fn from_dirs(dirs: &[&Path], tokenizer: &Tokenizer) -> Result<Self, TrainError> {
        let mut files = Vec::new();
        for dir in dirs {
            let mut in_dir: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| TrainError::Io(format!("cannot read {}: {e}", dir.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect();
            in_dir.sort();
            files.extend(in_dir);
        }
        let texts = files
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map_err(|e| TrainError::Io(format!("cannot read {}: {e}", p.display())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_texts(&texts, tokenizer)
    }

    pub fn from_texts(texts: &[String], tokenizer: &Tokenizer) -> Result<Self, TrainError> {
        let mut tokens = Vec::new();
        for t in texts {
            tokens.extend(tokenizer.encode(&format!("{}\n\n", t.trim()), false)?);
        }
        Ok(Self {
            tokens,
            documents: texts.len(),
        })
    }

    /// The window of `len` tokens for training step `step`: a seeded uniform offset, so a resumed
    /// run sees exactly the windows it would have seen.
    pub fn window(&self, len: usize, step: usize, seed: u64) -> Result<&[u32], TrainError> {
        if self.tokens.len() < len {
            return Err(TrainError::Config(format!(
                "the training text has {} tokens, fewer than --seq-len {len}",
                self.tokens.len()
            )));
        }
        let mut rng = StdRng::seed_from_u64(
            seed ^ 0x5eed_da7a ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let start = rng.random_range(0..=self.tokens.len() - len);
        Ok(&self.tokens[start..start + len])
    }
}
