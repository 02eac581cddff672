//! f32 safetensors files with a string header, shared by hash weight files and training checkpoints.
//!
//! Every write goes to a temporary file that is fsynced and then renamed over the target (and the
//! directory fsynced), so a kill at any instant leaves either the old file or the new one, never a
//! mix. Every file carries a CRC-32 of its metadata and tensors in its own metadata (`crc32`): a
//! file torn or damaged later (a copy cut short, a flipped bit) is detected at read, not trained on.
//! Checkpoints keep their predecessor (`<name>.prev.safetensors`), used when the newest is damaged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use crate::TrainError;

/// Named f32 tensors: name → (shape, values).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Metadata key of the checksum.
pub const CRC_KEY: &str = "crc32";

fn file_error(path: &Path, why: impl std::fmt::Display) -> TrainError {
    TrainError::HashFile {
        path: path.display().to_string(),
        why: why.to_string(),
    }
}

/// CRC-32 of the metadata (sorted by key, without the checksum itself) and of every tensor's
/// name, dtype, shape and bytes in name order: independent of how safetensors lays the file out.
fn checksum<'a>(
    metadata: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>,
) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let sorted: BTreeMap<_, _> = metadata.iter().filter(|(k, _)| *k != CRC_KEY).collect();
    for (k, v) in sorted {
        for s in [k, v] {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
    }
    for (name, dtype, shape, bytes) in tensors {
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{dtype:?}").as_bytes());
        for &d in shape {
            h.update(&(d as u64).to_le_bytes());
        }
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize()
}

/// The serialised file: tensors as f32 or (half = true) f16, the metadata plus its checksum.
///
/// Written here rather than by `safetensors::serialize`, whose header lists the metadata in hash
/// order: the same tensors must give the same bytes in every process (the kill-anywhere test
/// compares files). Header keys are sorted, tensors lie in name order, the header is padded with
/// spaces to a multiple of 8 bytes, as the format asks.
fn serialize(tensors: &Tensors, mut metadata: HashMap<String, String>, half: bool) -> Vec<u8> {
    let dtype = if half { Dtype::F16 } else { Dtype::F32 };
    let bytes: Vec<(&String, Vec<u8>, &Vec<usize>)> = tensors
        .iter()
        .map(|(name, (shape, v))| {
            let b: Vec<u8> = if half {
                v.iter()
                    .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                    .collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            };
            (name, b, shape)
        })
        .collect();
    let crc = checksum(
        &metadata,
        bytes
            .iter()
            .map(|(n, b, s)| (n.as_str(), dtype, s.as_slice(), b.as_slice())),
    );
    metadata.insert(CRC_KEY.into(), format!("{crc:08x}"));
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    let mut text = format!(
        "{{\"__metadata__\":{}",
        serde_json::to_string(&sorted).expect("strings serialise")
    );
    let mut offset = 0usize;
    for (name, b, shape) in &bytes {
        text += &format!(
            ",{}:{{\"dtype\":\"{dtype:?}\",\"shape\":{shape:?},\"data_offsets\":[{offset},{}]}}",
            serde_json::to_string(name).expect("strings serialise"),
            offset + b.len()
        );
        offset += b.len();
    }
    text.push('}');
    let mut text = text.into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend((text.len() as u64).to_le_bytes());
    out.extend(text);
    for (_, b, _) in &bytes {
        out.extend(b);
    }
    out
}

/// `path` with `.tmp` appended to its name (`a.safetensors` → `a.safetensors.tmp`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The previous checkpoint kept next to `path`: `checkpoint.safetensors` →
/// `checkpoint.prev.safetensors`.
pub fn previous_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_os_string();
    let mut name = stem;
    name.push(".prev");
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// Writes `data` to a temporary file next to `path` and fsyncs it; returns the temporary's path.
fn write_synced(path: &Path, data: &[u8]) -> Result<PathBuf, TrainError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).map_err(|e| file_error(path, e))?;
    }
    let tmp = sibling(path, ".tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| file_error(path, e))?;
    f.write_all(data).map_err(|e| file_error(path, e))?;
    f.sync_all().map_err(|e| file_error(path, e))?;
    Ok(tmp)
}

/// Makes the renames in `path`'s directory durable (a no-op where directories cannot be opened).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `tensors` and `metadata` to `path` atomically, as f32 or (half = true) as f16.
pub fn write(
    path: &Path,
    tensors: &Tensors,
    metadata: HashMap<String, String>,
    half: bool,
) -> Result<(), TrainError> {
    let data = serialize(tensors, metadata, half);
    let tmp = write_synced(path, &data)?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))?;
    sync_dir(path);
    Ok(())
}

/// Writes a checkpoint atomically (f32) and keeps the one it replaces as [`previous_path`].
///
/// Order: the new file is complete and fsynced under a temporary name; the current file is
/// hard-linked (copied where links are unsupported) to the previous name; the new file is renamed
/// over the current one. `path` therefore always names a complete checkpoint once one exists,
/// and the previous one survives until the next write.
pub fn write_checkpoint(
    path: &Path,
    tensors: &Tensors,
    metadata: HashMap<String, String>,
) -> Result<(), TrainError> {
    let data = serialize(tensors, metadata, false);
    let tmp = write_synced(path, &data)?;
    if path.exists() {
        let prev = previous_path(path);
        let _ = std::fs::remove_file(&prev);
        if std::fs::hard_link(path, &prev).is_err() {
            let copy = sibling(&prev, ".tmp");
            std::fs::copy(path, &copy).map_err(|e| file_error(&prev, e))?;
            std::fs::rename(&copy, &prev).map_err(|e| file_error(&prev, e))?;
        }
    }
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))?;
    sync_dir(path);
    Ok(())
}

/// Reads every tensor (f32, f16 or bf16, returned as f32) and the metadata of `path`; the
/// checksum is verified when the file has one (files written before checksums have none).
pub fn read(path: &Path) -> Result<(HashMap<String, String>, Tensors), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    parse(&bytes, path, false)
}

/// Parses the bytes of a file read from `path` (named in errors). `require_crc`: a file without
/// a checksum is refused (checkpoints always have one).
pub fn parse(
    bytes: &[u8],
    path: &Path,
    require_crc: bool,
) -> Result<(HashMap<String, String>, Tensors), TrainError> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| file_error(path, format!("not a valid safetensors file ({e:?})")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| file_error(path, format!("not a valid safetensors file ({e:?})")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    match metadata.get(CRC_KEY) {
        Some(stored) => {
            let crc = checksum(
                &metadata,
                views
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
            );
            if *stored != format!("{crc:08x}") {
                return Err(file_error(
                    path,
                    format!("checksum mismatch (stored {stored}, computed {crc:08x}): the file is damaged or was cut short"),
                ));
            }
        }
        None if require_crc => return Err(file_error(path, "has no checksum")),
        None => {}
    }
    let mut tensors = Tensors::new();
    for (name, view) in views {
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
    Ok((metadata, tensors))
}

/// A checkpoint as read by [`read_or_previous`].
pub struct Checkpoint {
    pub metadata: HashMap<String, String>,
    pub tensors: Tensors,
    /// The file it came from: `path`, or [`previous_path`] when `path` was damaged or missing.
    pub path: PathBuf,
    /// Why `path` was not used, when the previous one was.
    pub fell_back: Option<String>,
}

/// A test of a checkpoint's metadata (e.g. that it belongs to this training run).
pub type MetadataCheck<'a> = dyn Fn(&HashMap<String, String>) -> Result<(), TrainError> + 'a;

/// Reads the checkpoint at `path` (checksum required); if it is missing or damaged, the previous
/// one. Fails, with `path`'s error, only when neither is usable. `check` runs on each candidate's
/// metadata (e.g. that it belongs to this training run): a candidate it rejects is not used.
pub fn read_or_previous(path: &Path, check: &MetadataCheck) -> Result<Checkpoint, TrainError> {
    let load = |p: &Path| -> Result<(HashMap<String, String>, Tensors), TrainError> {
        let bytes = std::fs::read(p).map_err(|e| file_error(p, e))?;
        let (meta, tensors) = parse(&bytes, p, true)?;
        check(&meta)?;
        Ok((meta, tensors))
    };
    let first = match load(path) {
        Ok((metadata, tensors)) => {
            return Ok(Checkpoint {
                metadata,
                tensors,
                path: path.to_path_buf(),
                fell_back: None,
            })
        }
        Err(e) => e,
    };
    let prev = previous_path(path);
    if !prev.exists() {
        return Err(first);
    }
    match load(&prev) {
        Ok((metadata, tensors)) => Ok(Checkpoint {
            metadata,
            tensors,
            path: prev,
            fell_back: Some(first.to_string()),
        }),
        Err(_) => Err(first),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(step: f32) -> Tensors {
        Tensors::from([
            ("a".to_string(), (vec![2, 3], vec![step; 6])),
            ("b".to_string(), (vec![4], vec![1.0, -2.0, 3.5, step])),
        ])
    }

    fn meta(step: usize) -> HashMap<String, String> {
        HashMap::from([("step".to_string(), step.to_string())])
    }

    fn no_check(_: &HashMap<String, String>) -> Result<(), TrainError> {
        Ok(())
    }

    #[test]
    fn round_trip_with_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        write(&p, &sample(1.0), meta(1), false).unwrap();
        let (m, t) = read(&p).unwrap();
        assert_eq!(t, sample(1.0));
        assert_eq!(m["step"], "1");
        assert!(m.contains_key(CRC_KEY));
        assert!(!sibling(&p, ".tmp").exists());
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        write(&p, &sample(1.0), meta(1), false).unwrap();
        let good = std::fs::read(&p).unwrap();
        let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            // A flipped bit in the JSON header's padding spaces or in a JSON key's case may
            // still parse; everything else must fail or give back exactly what was written.
            if let Ok((m, t)) = parse(&bad, &p, true) {
                assert!(i < 8 + header_len, "flipped data byte {i} went unnoticed");
                assert_eq!((m["step"].as_str(), t), ("1", sample(1.0)), "byte {i}");
            }
        }
        for n in 0..good.len() {
            assert!(parse(&good[..n], &p, true).is_err(), "cut at {n} accepted");
        }
    }

    #[test]
    fn checkpoint_keeps_the_previous_and_falls_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("checkpoint.safetensors");
        assert_eq!(
            previous_path(&p),
            dir.path().join("checkpoint.prev.safetensors")
        );
        write_checkpoint(&p, &sample(1.0), meta(1)).unwrap();
        assert!(!previous_path(&p).exists());
        write_checkpoint(&p, &sample(2.0), meta(2)).unwrap();
        let c = read_or_previous(&p, &no_check).unwrap();
        assert_eq!(
            (c.metadata["step"].as_str(), c.fell_back.is_none()),
            ("2", true)
        );
        // Torn newest: the previous one is used, and says why.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let c = read_or_previous(&p, &no_check).unwrap();
        assert_eq!(c.metadata["step"], "1");
        assert_eq!(c.tensors, sample(1.0));
        assert!(c.fell_back.unwrap().contains("checkpoint.safetensors"));
        // Newest missing (as between two renames elsewhere): the previous one too.
        std::fs::remove_file(&p).unwrap();
        assert_eq!(
            read_or_previous(&p, &no_check).unwrap().metadata["step"],
            "1"
        );
        // Both damaged: the newest's error.
        std::fs::write(&p, b"junk").unwrap();
        std::fs::write(previous_path(&p), b"junk").unwrap();
        let e = read_or_previous(&p, &no_check).err().unwrap().to_string();
        assert!(
            e.contains("checkpoint.safetensors") && !e.contains("prev"),
            "{e}"
        );
    }

    #[test]
    fn checkpoints_without_checksum_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        let views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
        let data = safetensors::tensor::serialize(views, &Some(meta(3))).unwrap();
        std::fs::write(&p, data).unwrap();
        assert!(read(&p).is_ok());
        let e = read_or_previous(&p, &no_check).err().unwrap().to_string();
        assert!(e.contains("no checksum"), "{e}");
    }
}
