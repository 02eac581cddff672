//! Weight sources: a GGUF file or a local HF directory, both seen through HF tensor names.
//!
//! Every tensor comes out as f32 in row-major order with HF's shape ([out, in] for projections).

use std::collections::HashMap;
use std::path::Path;

use crate::config::LlamaConfig;
use crate::error::LlamaError;
use crate::gguf::GgufFile;
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
                let row_len = if shape.len() == 2 { shape[1] } else { 1 };
                if shape[0] % (2 * heads) != 0 {
                    return Err(LlamaError::Shape {
                        name: name.to_string(),
                        expected: vec![heads * self.config.head_dim],
                        found: shape,
                    });
                }
                data = unpermute_rows(&data, heads, row_len);
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
    files: Vec<memmap2::Mmap>,
    /// tensor name → index into `files`
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    pub fn open(dir: &Path) -> Result<Self, LlamaError> {
        let single = dir.join("model.safetensors");
        let shard_names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else {
            let idx_path = dir.join("model.safetensors.index.json");
            let text = std::fs::read_to_string(&idx_path).map_err(|e| {
                LlamaError::Io(format!(
                    "{}: no model.safetensors or readable index ({e})",
                    dir.display()
                ))
            })?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| LlamaError::Io(format!("{}: {e}", idx_path.display())))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| LlamaError::Io(format!("{}: no weight_map", idx_path.display())))?;
            let mut v: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(String::from))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, name) in shard_names.iter().enumerate() {
            let path = dir.join(name);
            let f = std::fs::File::open(&path)
                .map_err(|e| LlamaError::Io(format!("cannot open {}: {e}", path.display())))?;
            // SAFETY: read-only map of a file we do not modify.
            let map = unsafe { memmap2::Mmap::map(&f) }
                .map_err(|e| LlamaError::Io(format!("cannot map {}: {e}", path.display())))?;
            let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| {
                LlamaError::Io(format!("invalid safetensors {}: {e}", path.display()))
            })?;
            for n in st.names() {
                index.insert(n.to_string(), i);
            }
            files.push(map);
        }
        Ok(Self { files, index })
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
