//! f32 safetensors files with a string header, written atomically (temp file + rename, so a kill
//! mid-write leaves the previous file intact). Shared by hash weight files and training checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::TrainError;

/// Named f32 tensors: name → (shape, values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn file_error(path: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::HashFile {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// Writes `tensors` and `metadata` to `path` atomically, as f32 or (half = true) as f16.
pub fn write(
    path: &Path,
    tensors: &Tensors,
    metadata: HashMap<String, String>,
    half: bool,
) -> Result<(), TrainError> {
    let dtype = if half { Dtype::F16 } else { Dtype::F32 };
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, (shape, v))| {
            let b: Vec<u8> = if half {
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (name.clone(), b, shape.clone())
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, s)| {
            let view = TensorView::new(dtype, s.clone(), b).map_err(|e| file_error(path, e))?;
            Ok((n.clone(), view))
        })
        .collect::<Result<_, TrainError>>()?;
    let data =
        safetensors::tensor::serialize(views, &Some(metadata)).map_err(|e| file_error(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(path, e))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| file_error(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

/// Reads every tensor (f32, f16 or bf16, returned as f32) and the metadata of `path`.
pub fn read(path: &Path) -> Result<(HashMap<String, String>, Tensors), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| file_error(path, format!("not a valid safetensors file ({e:?})")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| file_error(path, format!("not a valid safetensors file ({e:?})")))?;
    let mut tensors = Tensors::new();
    for (name, view) in st.tensors() {
        let v =
            spotlight_llama::load::safetensors_f32(view.dtype(), view.data()).ok_or_else(|| {
                file_error(
                    path,
                    format!(
                        "tensor {name} is {:?}, expected F32, F16 or BF16",
                        view.dtype()
                    ),
                )
            })?;
        if let Some(bad) = v.iter().position(|x| !x.is_finite()) {
            return Err(file_error(
                path,
                format!("tensor {name} has a non-finite value at {bad}"),
            ));
        }
        tensors.insert(name, (view.shape().to_vec(), v));
    }
    Ok((meta.metadata().clone().unwrap_or_default(), tensors))
}
