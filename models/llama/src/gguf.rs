//! GGUF reader (v2/v3): metadata, tensor table and dequantisation to f32.
//!
//! Validates like llama.cpp's `gguf_init_from_reader`: every length is checked against the bytes
//! that remain before anything is allocated, so a truncated or crafted file gives an error, never a
//! panic or a huge allocation. Layout (little-endian): magic "GGUF", u32 version, u64 n_tensors,
//! u64 n_kv, the key/value pairs, the tensor infos, then the data section aligned to
//! `general.alignment` (default 32).

use std::collections::HashMap;
use std::path::Path;

use half::{bf16, f16};

use crate::error::LlamaError;

/// Longest key or string value we accept: a real tokenizer's longest token is far shorter.
const MAX_STRING_LEN: u64 = 1 << 20;
/// Largest array in metadata: vocabularies of 256K tokens and their merges fit comfortably.
const MAX_ARRAY_LEN: u64 = 1 << 24;
/// Tensors in ggml have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but we never need more than one level; this stops stack exhaustion.
const MAX_DEPTH: u32 = 2;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer value as u64 (negative values are refused).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The ggml tensor types we can dequantise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (a matrix [out, in] has dims = [in, out]).
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Shape in row-major order (slowest first), e.g. [out, in] for a weight matrix.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file, memory-mapped (or, from [`GgufFile::from_bytes`], held in memory).
pub struct GgufFile {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: HashMap<String, TensorInfo>,
    data: Bytes,
}

/// A file's bytes: mapped from disk or owned.
pub enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Mapped(m) => m,
            Self::Owned(v) => v,
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], LlamaError> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(LlamaError::Gguf(format!(
                "truncated file: {what} needs {n} bytes at offset {}, only {remaining} remain",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], LlamaError> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("length checked"))
    }
    fn u32(&mut self, what: &str) -> Result<u32, LlamaError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, LlamaError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String, LlamaError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN {
            return Err(LlamaError::Gguf(format!(
                "{what}: string length {len} is implausible"
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| LlamaError::Gguf(format!("{what}: string is not UTF-8")))
    }
    fn value(&mut self, ty: u32, key: &str, depth: u32) -> Result<Value, LlamaError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(key)?[0]),
            1 => Value::I8(self.array::<1>(key)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            4 => Value::U32(self.u32(key)?),
            5 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(LlamaError::Gguf(format!(
                        "key {key}: invalid bool byte {b}"
                    )))
                }
            },
            8 => Value::String(self.string(key)?),
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(LlamaError::Gguf(format!(
                        "key {key}: arrays nested too deeply"
                    )));
                }
                let elem_ty = self.u32(key)?;
                let n = self.u64(key)?;
                if n > MAX_ARRAY_LEN {
                    return Err(LlamaError::Gguf(format!(
                        "key {key}: array length {n} is implausible"
                    )));
                }
                // Each element takes at least one byte: refuse counts the file cannot hold.
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(LlamaError::Gguf(format!(
                        "truncated file: key {key} claims {n} array elements, only {} bytes remain",
                        self.buf.len() - self.pos
                    )));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem_ty, key, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64(key)?),
            11 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            t => {
                return Err(LlamaError::Gguf(format!(
                    "key {key}: unknown value type {t}"
                )))
            }
        })
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file. Tensor data stays memory-mapped until dequantised.
    pub fn open(path: &Path) -> Result<Self, LlamaError> {
        let file = std::fs::File::open(path)
            .map_err(|e| LlamaError::Io(format!("cannot open {}: {e}", path.display())))?;
        // SAFETY: the map is read-only; a file changed underneath us gives wrong numbers, not UB in
        // safe code that only reads bytes (the same assumption every GGUF runtime makes).
        let data = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| LlamaError::Io(format!("cannot map {}: {e}", path.display())))?;
        Self::parse(Bytes::Mapped(data)).map_err(|e| match e {
            LlamaError::Gguf(m) => LlamaError::Gguf(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// Parses and validates a GGUF file held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, LlamaError> {
        Self::parse(Bytes::Owned(bytes))
    }

    fn parse(data: Bytes) -> Result<Self, LlamaError> {
        let mut r = Reader { buf: &data, pos: 0 };
        let magic = r.array::<4>("magic")?;
        if &magic != b"GGUF" {
            let shown: String = magic
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
                .collect();
            return Err(LlamaError::Gguf(format!(
                "not a GGUF file (magic \"{shown}\", expected \"GGUF\")"
            )));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
                return Err(LlamaError::Gguf(
                    "big-endian GGUF files are not supported".into(),
                ))
            }
            v => {
                return Err(LlamaError::Gguf(format!(
                    "unsupported GGUF version {v} (supported: 2, 3)"
                )))
            }
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Each entry needs well over 8 bytes; this bounds both counts by the file size.
        let remaining = (data.len() - r.pos) as u64;
        if n_tensors > remaining / 8 || n_kv > remaining / 8 {
            return Err(LlamaError::Gguf(format!(
                "header claims {n_tensors} tensors and {n_kv} keys, more than the file can hold"
            )));
        }
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            if key.is_empty() {
                return Err(LlamaError::Gguf("empty metadata key".into()));
            }
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(LlamaError::Gguf(format!("duplicate metadata key {key}")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(Value::U32(a)) if a.is_power_of_two() => *a as usize,
            Some(v) => {
                return Err(LlamaError::Gguf(format!(
                    "general.alignment must be a power-of-two u32, found {v:?}"
                )))
            }
        };
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(LlamaError::Gguf(format!(
                    "tensor {name}: {n_dims} dimensions (1..={MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            let mut n_elem: u64 = 1;
            for _ in 0..n_dims {
                let d = r.u64(&name)?;
                n_elem = n_elem
                    .checked_mul(d)
                    .filter(|&n| n < (1u64 << 40))
                    .ok_or_else(|| {
                        LlamaError::Gguf(format!("tensor {name}: element count overflows"))
                    })?;
                dims.push(d as usize);
            }
            let type_id = r.u32(&name)?;
            let ty = GgmlType::from_id(type_id).ok_or_else(|| {
                LlamaError::Gguf(format!(
                    "tensor {name}: unsupported ggml type {type_id} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
                ))
            })?;
            let (block, block_bytes) = ty.block();
            if dims[0] % block != 0 {
                return Err(LlamaError::Gguf(format!(
                    "tensor {name}: row length {} is not a multiple of the {ty:?} block size {block}",
                    dims[0]
                )));
            }
            let n_bytes = n_elem as usize / block * block_bytes;
            let offset = r.u64(&name)?;
            if offset % alignment as u64 != 0 {
                return Err(LlamaError::Gguf(format!(
                    "tensor {name}: offset {offset} is not aligned to {alignment}"
                )));
            }
            infos.push(TensorInfo {
                name,
                dims,
                ty,
                offset: offset as usize,
                n_bytes,
            });
        }
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let mut tensors = HashMap::with_capacity(infos.len());
        for mut info in infos {
            // A crafted offset near u64::MAX must not wrap around to a small end.
            let end = (data_start as u64)
                .checked_add(info.offset as u64)
                .and_then(|s| s.checked_add(info.n_bytes as u64));
            if end.is_none_or(|end| end > data.len() as u64) {
                return Err(LlamaError::Gguf(format!(
                    "truncated file: tensor {} needs {} bytes at data offset {}, the file has {}",
                    info.name,
                    info.n_bytes,
                    info.offset,
                    data.len()
                )));
            }
            info.offset += data_start;
            let name = info.name.clone();
            if tensors.insert(name.clone(), info).is_some() {
                return Err(LlamaError::Gguf(format!("duplicate tensor {name}")));
            }
        }
        Ok(Self {
            version,
            metadata,
            tensors,
            data,
        })
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.data[info.offset..info.offset + info.n_bytes]
    }

    /// The weights' identity ([`crate::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        crate::fingerprint::fingerprint(
            self.tensors
                .values()
                .map(|info| crate::fingerprint::StoredTensor {
                    name: &info.name,
                    ty: format!("{:?}", info.ty),
                    shape: info.shape(),
                    bytes: self.tensor_bytes(info),
                })
                .collect(),
        )
    }

    /// Dequantises a tensor to f32, in row-major order (see [`TensorInfo::shape`]).
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), LlamaError> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| LlamaError::MissingTensor(name.to_string()))?;
        Ok((info.shape(), dequantize(info.ty, self.tensor_bytes(info))))
    }

    /// A required metadata value.
    pub fn get(&self, key: &str) -> Result<&Value, LlamaError> {
        self.metadata
            .get(key)
            .ok_or_else(|| LlamaError::Gguf(format!("metadata key {key} is missing")))
    }
}

/// Dequantises whole blocks of `ty` to f32. `bytes.len()` must be a whole number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (block, block_bytes) = ty.block();
    assert_eq!(bytes.len() % block_bytes, 0, "dequantize: partial block");
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * block);
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    for b in bytes.chunks_exact(block_bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16_at(b, 0)),
            GgmlType::BF16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            // x = d · q, q signed bytes.
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| d * (q as i8) as f32));
            }
            // Low nibbles hold elements 0..16, high nibbles 16..32; x = d · (q − 8).
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * ((q & 15) as f32 - 8.0)));
                out.extend(qs.iter().map(|&q| d * ((q >> 4) as f32 - 8.0)));
            }
            // Same nibble layout with a minimum: x = d · q + m.
            GgmlType::Q4_1 => {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * (q & 15) as f32 + m));
                out.extend(qs.iter().map(|&q| d * (q >> 4) as f32 + m));
            }
        }
    }
    out
}

/// Writes a GGUF v3 file: used by tests and by tools that make small synthetic checkpoints.
/// `tensors` are (name, row-major shape, type, raw bytes of whole blocks).
pub fn write(
    path: &Path,
    metadata: &[(&str, Value)],
    tensors: &[(&str, Vec<usize>, GgmlType, Vec<u8>)],
) -> std::io::Result<()> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }
    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(s) => put_str(out, s),
            Value::Array(a) => {
                out.extend(a.first().map_or(4, type_id).to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                a.iter().for_each(|e| put_value(out, e));
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }
    let ggml_id = |t: GgmlType| match t {
        GgmlType::F32 => 0u32,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 8,
        GgmlType::BF16 => 30,
    };
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend(type_id(v).to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, shape, ty, bytes) in tensors {
        put_str(&mut out, name);
        out.extend((shape.len() as u32).to_le_bytes());
        shape
            .iter()
            .rev()
            .for_each(|d| out.extend((*d as u64).to_le_bytes()));
        out.extend(ggml_id(*ty).to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (bytes.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block_by_hand() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let x = dequantize(GgmlType::Q8_0, &b);
        assert_eq!(x.len(), 32);
        assert_eq!(x[0], -8.0); // 0.5 · (0 − 16)
        assert_eq!(x[31], 7.5); // 0.5 · 15
    }

    #[test]
    fn q4_1_block_by_hand() {
        let mut b = h(2.0).to_vec();
        b.extend(h(-1.0));
        // byte j = (high nibble 15 − j%16) << 4 | low nibble j
        b.extend((0..16u8).map(|j| ((15 - j) << 4) | j));
        let x = dequantize(GgmlType::Q4_1, &b);
        assert_eq!(x[0], -1.0); // 2·0 − 1
        assert_eq!(x[15], 29.0); // 2·15 − 1
        assert_eq!(x[16], 29.0); // high nibble of byte 0 = 15
        assert_eq!(x[31], -1.0); // high nibble of byte 15 = 0
    }

    #[test]
    fn q4_0_block_by_hand() {
        let mut b = h(0.25).to_vec();
        b.extend((0..16u8).map(|j| (j << 4) | (15 - j)));
        let x = dequantize(GgmlType::Q4_0, &b);
        assert_eq!(x[0], 0.25 * 7.0); // low nibble 15 → 15 − 8
        assert_eq!(x[16], 0.25 * -8.0); // high nibble 0 → −8
        assert_eq!(x[31], 0.25 * 7.0);
    }

    #[test]
    fn float_types() {
        assert_eq!(dequantize(GgmlType::F32, &1.5f32.to_le_bytes()), vec![1.5]);
        assert_eq!(dequantize(GgmlType::F16, &h(-3.0)), vec![-3.0]);
        assert_eq!(
            dequantize(GgmlType::BF16, &bf16::from_f32(0.75).to_le_bytes()),
            vec![0.75]
        );
    }

    /// A one-tensor file; `patch` edits its bytes (the tensor's offset field is the last 8 bytes
    /// of the tensor table).
    fn one_tensor(patch: impl FnOnce(&mut Vec<u8>, usize)) -> Result<GgufFile, LlamaError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gguf");
        let bytes = 1.5f32.to_le_bytes().repeat(8).to_vec();
        write(&p, &[], &[("w", vec![2, 4], GgmlType::F32, bytes)]).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        // magic, version, counts, name (8 + 1), n_dims, 2 dims, type: the offset follows.
        let offset_at = 4 + 4 + 8 + 8 + 8 + 1 + 4 + 16 + 4;
        patch(&mut b, offset_at);
        GgufFile::from_bytes(b)
    }

    #[test]
    fn tensor_offsets_near_the_top_of_u64_do_not_wrap() {
        assert!(one_tensor(|_, _| {}).is_ok());
        // A fuzzed file once had data_start + offset + size overflow u64 (a panic in debug,
        // a wrapped small end in release).
        for offset in [u64::MAX - 31, !31, 1 << 63] {
            let e = one_tensor(|b, at| b[at..at + 8].copy_from_slice(&offset.to_le_bytes()))
                .err()
                .expect("refused")
                .to_string();
            assert!(e.contains("truncated file: tensor w"), "{e}");
        }
    }

    #[test]
    fn zero_sized_dimensions_load_without_dividing_by_zero() {
        // dims [0, 4]: no elements; the q/k un-permutation must not divide by the row length.
        let f = one_tensor(|b, at| b[at - 4 - 16..at - 4 - 8].copy_from_slice(&0u64.to_le_bytes()))
            .unwrap();
        assert_eq!(f.tensors["w"].n_elements(), 0);
        assert_eq!(crate::load::unpermute_rows(&[], 3, 0), Vec::<f32>::new());
        assert_eq!(
            crate::load::unpermute_rows(&[1.0, 2.0], 0, 1),
            vec![1.0, 2.0]
        );
    }
}
