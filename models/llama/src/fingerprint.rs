//! A checkpoint's identity by its weights, not its file name: a renamed file is the same model,
//! and another model under the same name is not. The fingerprint hashes every tensor's name,
//! type, shape and byte length and samples of its bytes (the first and last 4 KiB and 16 slices
//! in between), so it costs a few pages per tensor of a memory-mapped file, whatever its size.

/// Bytes hashed at each end of a tensor.
const EDGE: usize = 4096;
/// Evenly spaced slices hashed in between, and their length.
const SLICES: usize = 16;
const SLICE: usize = 256;

/// FNV-1a, 64 bits: stable across platforms and Rust versions (the std hasher is not).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// One tensor as stored: its name, a type tag of the format, its shape and its bytes.
pub struct StoredTensor<'a> {
    pub name: &'a str,
    pub ty: String,
    pub shape: Vec<usize>,
    pub bytes: &'a [u8],
}

/// `w1:` and 16 hex digits over `tensors` (in any order: they are sorted by name here).
pub fn fingerprint(mut tensors: Vec<StoredTensor>) -> String {
    tensors.sort_by(|a, b| a.name.cmp(b.name));
    let mut h = Fnv::new();
    h.u64(tensors.len() as u64);
    for t in &tensors {
        h.bytes(t.name.as_bytes());
        h.bytes(&[0]);
        h.bytes(t.ty.as_bytes());
        h.bytes(&[0]);
        h.u64(t.shape.len() as u64);
        for &d in &t.shape {
            h.u64(d as u64);
        }
        let b = t.bytes;
        h.u64(b.len() as u64);
        if b.len() <= 2 * EDGE + SLICES * SLICE {
            h.bytes(b);
            continue;
        }
        h.bytes(&b[..EDGE]);
        let middle = b.len() - 2 * EDGE - SLICE;
        for i in 0..SLICES {
            let at = EDGE + middle * i / (SLICES - 1).max(1);
            h.bytes(&b[at..at + SLICE]);
        }
        h.bytes(&b[b.len() - EDGE..]);
    }
    format!("w1:{:016x}", h.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(name: &'a str, bytes: &'a [u8]) -> StoredTensor<'a> {
        StoredTensor {
            name,
            ty: "F32".into(),
            shape: vec![bytes.len() / 4],
            bytes,
        }
    }

    #[test]
    fn order_free_and_sensitive_to_names_bytes_and_shapes() {
        let a: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let b: Vec<u8> = (0..400u32).map(|i| (i * 3 % 251) as u8).collect();
        let base = fingerprint(vec![t("x", &a), t("y", &b)]);
        assert_eq!(base, fingerprint(vec![t("y", &b), t("x", &a)]));
        assert_ne!(base, fingerprint(vec![t("x", &a), t("z", &b)]));
        // A changed byte in the first edge, in a sampled slice and in a small tensor.
        for (at, small) in [
            (10, false),
            (EDGE + 5, false),
            (a.len() - 1, false),
            (3, true),
        ] {
            let (mut a2, mut b2) = (a.clone(), b.clone());
            if small {
                b2[at] ^= 1;
            } else {
                a2[at] ^= 1;
            }
            assert_ne!(
                base,
                fingerprint(vec![t("x", &a2), t("y", &b2)]),
                "byte {at}"
            );
        }
        let mut reshaped = t("x", &a);
        reshaped.shape = vec![100, 100];
        assert_ne!(base, fingerprint(vec![reshaped, t("y", &b)]));
        assert!(base.starts_with("w1:") && base.len() == 19);
    }
}
