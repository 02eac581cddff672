//! A seeded mutator for binary file formats: bit flips, interesting bytes, edits of u32/u64
//! little-endian fields (the length and count fields GGUF and safetensors are made of),
//! truncation, chunk insertion, deletion and duplication, splices with another corpus entry, and
//! digit edits inside text (JSON numbers).

/// splitmix64: small, seeded, the same stream everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

const INTERESTING_U64: [u64; 14] = [
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0xff,
    0x7fff_ffff,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    i64::MAX as u64,
    u64::MAX - 7,
    u64::MAX,
];

/// One to four mutations of `data`; `other` is another corpus entry for splices. The result is
/// at most `max_len` bytes.
pub fn mutate(data: &[u8], other: &[u8], rng: &mut Rng, max_len: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(&mut v, other, rng);
    }
    v.truncate(max_len);
    v
}

fn mutate_once(v: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    if v.is_empty() {
        v.extend_from_slice(&other[..other.len().min(64)]);
        if v.is_empty() {
            v.push(rng.next_u64() as u8);
        }
        return;
    }
    // Edits cluster near the start, where headers and their length fields live.
    let pos = |rng: &mut Rng, len: usize| {
        if rng.below(2) == 0 {
            rng.below(len.min(4096))
        } else {
            rng.below(len)
        }
    };
    let len = v.len();
    match rng.below(11) {
        0 => {
            let i = pos(rng, len);
            v[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = pos(rng, len);
            v[i] = [0u8, 1, 0x7f, 0x80, 0xff, b'0', b'9', b'"', b'{', b'-'][rng.below(10)];
        }
        2 | 3 => {
            // A u64 (or u32) field set to an interesting value or nudged.
            let width = if rng.below(2) == 0 { 8 } else { 4 };
            if len >= width {
                let i = pos(rng, len - width + 1);
                let mut cur = [0u8; 8];
                cur[..width].copy_from_slice(&v[i..i + width]);
                let old = u64::from_le_bytes(cur);
                let new = match rng.below(3) {
                    0 => INTERESTING_U64[rng.below(INTERESTING_U64.len())],
                    1 => old.wrapping_add(1 + rng.below(16) as u64),
                    _ => old.wrapping_sub(1 + rng.below(16) as u64),
                };
                v[i..i + width].copy_from_slice(&new.to_le_bytes()[..width]);
            }
        }
        4 => v.truncate(rng.below(len)),
        5 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(256));
            v.drain(i..i + n);
        }
        6 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(256));
            let chunk = v[i..i + n].to_vec();
            let at = rng.below(len + 1);
            v.splice(at..at, chunk);
        }
        7 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(32);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            v.splice(at..at, bytes);
        }
        8 if !other.is_empty() => {
            // Splice: our head, the other's tail.
            let a = rng.below(len + 1);
            let b = rng.below(other.len());
            v.truncate(a);
            v.extend_from_slice(&other[b..other.len().min(b + 65536)]);
        }
        _ => {
            // Text: change a run of digits (JSON numbers, shapes, offsets).
            let start = pos(rng, len);
            if let Some(i) = v[start..].iter().position(u8::is_ascii_digit) {
                let i = start + i;
                let digits: &[u8] = match rng.below(4) {
                    0 => b"0",
                    1 => b"18446744073709551615",
                    2 => b"4294967296",
                    _ => b"-1",
                };
                let end = i + v[i..].iter().take_while(|b| b.is_ascii_digit()).count();
                v.splice(i..end, digits.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mutations() {
        let data: Vec<u8> = (0..200u8).collect();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| mutate(&data, b"other", &mut rng, 1 << 20))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
