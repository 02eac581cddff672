//! Joining hash files trained on disjoint layer ranges (`spotlight train --layers a..b` on several
//! GPUs or machines) into one: layers are trained independently, so the join is exact.

use std::path::Path;

use crate::{HashFile, TrainError};

/// Merges `files` (each with its path, for errors) into one file holding every layer from the
/// file that trained it. They must be for the same model, shape, layout and bits, trained with the
/// same configuration apart from the layer range, and their trained layers must neither overlap nor
/// leave a gap. Layers none of them trained keep the first file's start.
pub fn merge(files: &[(&Path, HashFile)]) -> Result<HashFile, TrainError> {
    let Some((first_path, first)) = files.first() else {
        return Err(TrainError::Config("hash merge: no files given".into()));
    };
    let h0 = &first.header;
    let mut owner: Vec<Option<usize>> = vec![None; h0.layers];
    for (i, (path, f)) in files.iter().enumerate() {
        let h = &f.header;
        let shape = |h: &crate::HashHeader| {
            (
                h.format.clone(),
                h.model.clone(),
                h.layers,
                h.q_heads,
                h.kv_heads,
                h.head_dim,
                h.bits,
                h.layout,
            )
        };
        if shape(h) != shape(h0) {
            return Err(TrainError::HashFile {
                path: path.display().to_string(),
                why: format!(
                    "made for {} ({} layers, {}×{} heads of {}, {} bits, {} layout), {} is for {} ({} layers, {}×{} heads of {}, {} bits, {} layout)",
                    h.model, h.layers, h.q_heads, h.kv_heads, h.head_dim, h.bits, h.layout.name(),
                    first_path.display(), h0.model, h0.layers, h0.q_heads, h0.kv_heads, h0.head_dim,
                    h0.bits, h0.layout.name()
                ),
            });
        }
        if h.model_fingerprint != h0.model_fingerprint {
            return Err(TrainError::HashFile {
                path: path.display().to_string(),
                why: format!(
                    "made for the weights {}, {} for {}",
                    h.model_fingerprint.as_deref().unwrap_or("(unrecorded)"),
                    first_path.display(),
                    h0.model_fingerprint.as_deref().unwrap_or("(unrecorded)")
                ),
            });
        }
        if config_without_layers(&h.training) != config_without_layers(&h0.training) {
            return Err(TrainError::HashFile {
                path: path.display().to_string(),
                why: format!(
                    "trained with another configuration than {} (only --layers may differ)",
                    first_path.display()
                ),
            });
        }
        for (l, o) in owner.iter_mut().enumerate() {
            if !h.trained(l) {
                continue;
            }
            if let Some(j) = *o {
                return Err(TrainError::HashFile {
                    path: path.display().to_string(),
                    why: format!("layer {l} is also trained in {}", files[j].0.display()),
                });
            }
            *o = Some(i);
        }
    }
    let trained: Vec<usize> = (0..h0.layers).filter(|&l| owner[l].is_some()).collect();
    if let (Some(&lo), Some(&hi)) = (trained.first(), trained.last()) {
        if let Some(gap) = (lo..=hi).find(|&l| owner[l].is_none()) {
            return Err(TrainError::Config(format!(
                "hash merge: layer {gap} is trained in none of the files (they cover {lo}..={hi} with a gap)"
            )));
        }
    }
    let mut out = first.clone();
    for (l, o) in owner.iter().enumerate() {
        if let Some(i) = o {
            out.layers[l] = files[*i].1.layers[l].clone();
        }
    }
    out.header.trained_layers = if trained.len() == h0.layers {
        None
    } else {
        Some(trained)
    };
    if let Some(c) = out
        .header
        .training
        .get_mut("config")
        .and_then(|c| c.as_object_mut())
    {
        let layers = out.header.trained_layers.clone().unwrap_or_default();
        c.insert("layers".into(), serde_json::json!(layers));
    }
    Ok(out)
}

/// The training record without the layer range (what may differ between merged files).
fn config_without_layers(training: &serde_json::Value) -> serde_json::Value {
    let mut t = training.clone();
    if let Some(c) = t.get_mut("config").and_then(|c| c.as_object_mut()) {
        c.remove("layers");
    }
    t
}
