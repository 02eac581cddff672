//! Weight sources: a GGUF file or a local HF directory, both seen through HF tensor names.
//!
//! Every tensor comes out as f32 in row-major order with HF's shape ([out, in] for projections).

use std::collections::HashMap;
use std::path::Path;

use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::gguf::{Bytes, GgufFile};
use crate::names;

/// A tensor read from a checkpoint: row-major shape and f32 values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

/// A checkpoint, addressed by HF tensor names.
pub trait WeightSource {
    /// The tensor `name` as (shape, data), or None if the checkpoint lacks it.
    fn get(&self, name: &str) -> Result<Option<HostTensor>, LlamaError>;
    /// Every tensor in the checkpoint (HF names where known), to report tensors nobody used.
    fn names(&self) -> Vec<String>;
}

/// GGUF as a weight source. `permuted_qk`: llama.cpp's converter reorders each head's q/k rows for
/// its interleaved RoPE (arch `llama`); we undo it so RoPE can use HF's rotate_half layout.
pub struct GgufSource<'a> {
    pub gguf: &'a GgufFile,
    pub config: &'a LlamaConfig,
    pub permuted_qk: bool,
}

impl<'a> GgufSource<'a> {
    pub fn new(gguf: &'a GgufFile, config: &'a LlamaConfig) -> Self {
        let arch = gguf
            .metadata
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .unwrap_or("llama");
        Self {
            gguf,
            config,
            permuted_qk: arch == "llama",
        }
    }
}

/// Undoes llama.cpp's q/k permutation: rows of each head go from [d/2, 2] (interleaved pairs)
/// back to [2, d/2] (halves). Works for weights ([out, in]) and biases ([out]).
pub fn unpermute_rows(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    if data.is_empty() || heads == 0 || row_len == 0 {
        return data.to_vec();
    }
    let rows = data.len() / row_len;
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * d + i * 2 + j;
                let dst = h * d + j * half + i;
                out[dst * row_len..(dst + 1) * row_len]
                    .copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}

impl WeightSource for GgufSource<'_> {
    fn get(&self, name: &str) -> Result<Option<HostTensor>, LlamaError> {
        let Some(gname) = names::hf_to_gguf(name) else {
            return Ok(None);
        };
        if !self.gguf.tensors.contains_key(&gname) {
            return Ok(None);
        }
        let (shape, mut data) = self.gguf.dequantize(&gname)?;
        if self.permuted_qk {
            let heads = if name.contains("q_proj") {
                Some(self.config.num_attention_heads)
            } else if name.contains("k_proj") {
                Some(self.config.num_key_value_heads)
            } else {
                None
            };
            if let Some(heads) = heads {
                // Weights [heads·d, hidden] or biases [heads·d]; anything else (a zero or missing
                // dimension, another head count) is refused here, before the row arithmetic.
                let rows = heads * self.config.head_dim;
                let expected = match shape.len() {
                    1 => vec![rows],
                    _ => vec![rows, self.config.hidden_size],
                };
                if shape != expected {
                    return Err(LlamaError::Shape {
                        name: name.to_string(),
                        expected,
                        found: shape,
                    });
                }
                data = unpermute_rows(&data, heads, shape.get(1).copied().unwrap_or(1));
            }
        }
        Ok(Some((shape, data)))
    }

    fn names(&self) -> Vec<String> {
        self.gguf
            .tensors
            .keys()
            .map(|g| names::gguf_to_hf(g).unwrap_or_else(|| g.clone()))
            .collect()
    }
}

/// A local HF model directory: `model.safetensors` or shards listed in `model.safetensors.index.json`.
pub struct SafetensorsSource {
    files: Vec<Bytes>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
}

/// The index of a sharded checkpoint: the shard file names (sorted, once each) and which shard
/// each tensor is in. Shard names must be plain file names in the model's directory.
pub fn shard_index(text: &str) -> Result<(Vec<String>, HashMap<String, String>), String> {
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no weight_map")?;
    let mut where_is = HashMap::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| format!("weight_map entry {tensor} is not a file name"))?;
        let plain =
            !shard.is_empty() && !shard.contains(['/', '\\']) && shard != "." && shard != "..";
        if !plain {
            return Err(format!(
                "weight_map names {shard:?} for {tensor}: shards must be files in the model's directory"
            ));
        }
        where_is.insert(tensor.clone(), shard.to_string());
    }
    let mut names: Vec<String> = where_is.values().cloned().collect();
    names.sort();
    names.dedup();
    Ok((names, where_is))
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self, LlamaError> {
        let single = dir.join("model.safetensors");
        let (shard_names, where_is) = if single.exists() {
            (vec!["model.safetensors".to_string()], None)
        } else {
            let idx_path = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx_path).map_err(|e| {
                LlamaError::Io(format!(
                    "{}: no model.safetensors or readable index ({e})",
                    dir.display()
                ))
            })?;
            let (names, where_is) = shard_index(&text)
                .map_err(|e| LlamaError::Io(format!("{}: {e}", idx_path.display())))?;
            (names, Some(where_is))
        };
        let mut shards = Vec::new();
        for name in &shard_names {
            let path = dir.join(name);
            if !path.is_file() {
                return Err(LlamaError::Io(format!(
                    "{}: model.safetensors.index.json names shard {name}, which is missing",
                    dir.display()
                )));
            }
            let f = std::fs::File::open(&path)
                .map_err(|e| LlamaError::Io(format!("cannot open {}: {e}", path.display())))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&f) }
                .map_err(|e| LlamaError::Io(format!("cannot map {}: {e}", path.display())))?;
            shards.push((path.display().to_string(), Bytes::Mapped(map)));
        }
        let source = Self::from_shards(shards)?;
        if let Some(where_is) = where_is {
            source.check_index(dir, &shard_names, &where_is)?;
        }
        Ok(source)
    }

    /// Validates shards held as bytes, each named (in errors) by its path.
    pub fn from_shards(shards: Vec<(String, Bytes)>) -> Result<Self, LlamaError> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, (path, bytes)) in shards.into_iter().enumerate() {
            let st = safetensors::SafeTensors::deserialize(&bytes)
                .map_err(|e| LlamaError::Io(format!("invalid safetensors {path}: {e}")))?;
            for n in st.names() {
                if index.insert(n.to_string(), i).is_some() {
                    return Err(LlamaError::Io(format!(
                        "{path}: tensor {n} is also in an earlier shard"
                    )));
                }
            }
            files.push(bytes);
        }
        Ok(Self { files, index })
    }

    /// The weights' identity ([`crate::fingerprint`]).
    pub fn fingerprint(&self) -> Result<String, LlamaError> {
        Ok(crate::fingerprint::fingerprint(self.stored()?))
    }

    /// Every tensor as stored (name, dtype, shape, bytes).
    fn stored(&self) -> Result<Vec<crate::fingerprint::StoredTensor<'_>>, LlamaError> {
        let mut out = Vec::new();
        for bytes in &self.files {
            let st = safetensors::SafeTensors::deserialize(bytes)
                .map_err(|e| LlamaError::Io(format!("invalid safetensors: {e}")))?;
            for (name, view) in st.tensors() {
                let name_in = self
                    .index
                    .get_key_value(&name)
                    .map(|(k, _)| k.as_str())
                    .expect("indexed at open");
                out.push(crate::fingerprint::StoredTensor {
                    name: name_in,
                    ty: format!("{:?}", view.dtype()),
                    shape: view.shape().to_vec(),
                    bytes: view.data(),
                });
            }
        }
        Ok(out)
    }

    /// Every tensor the index places in a shard is in that shard.
    fn check_index(
        &self,
        dir: &Path,
        shard_names: &[String],
        where_is: &HashMap<String, String>,
    ) -> Result<(), LlamaError> {
        let mut tensors: Vec<(&String, &String)> = where_is.iter().collect();
        tensors.sort();
        for (tensor, shard) in tensors {
            let found = self.index.get(tensor).map(|&i| &shard_names[i]);
            if found != Some(shard) {
                return Err(LlamaError::Io(format!(
                    "{}: model.safetensors.index.json places {tensor} in {shard}, which does not hold it",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

/// Little-endian f32, f16 or bf16 safetensors data widened to f32; None for other dtypes.
pub fn safetensors_f32(dtype: safetensors::Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    use safetensors::Dtype;
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

impl WeightSource for SafetensorsSource {
    fn get(&self, name: &str) -> Result<Option<HostTensor>, LlamaError> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let st = safetensors::SafeTensors::deserialize(&self.files[i]).expect("validated at open");
        let t = st
            .tensor(name)
            .map_err(|e| LlamaError::Io(format!("tensor {name}: {e}")))?;
        let data = safetensors_f32(t.dtype(), t.data()).ok_or_else(|| {
            LlamaError::Io(format!(
                "tensor {name}: dtype {:?} is not supported (f32, f16, bf16)",
                t.dtype()
            ))
        })?;
        Ok(Some((t.shape().to_vec(), data)))
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(heads, 2, d/2, in).swapaxes(1, 2) — build that from known rows.
        let (heads, d, row_len) = (2, 6, 3);
        let hf: Vec<f32> = (0..heads * d * row_len).map(|x| x as f32).collect();
        let mut permuted = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + j * (d / 2) + i;
                    let dst = h * d + i * 2 + j;
                    permuted[dst * row_len..(dst + 1) * row_len]
                        .copy_from_slice(&hf[src * row_len..(src + 1) * row_len]);
                }
            }
        }
        assert_eq!(unpermute_rows(&permuted, heads, row_len), hf);
    }
}
