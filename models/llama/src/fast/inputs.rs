//! A decode step's own values — tokens, each row's place and length, the sequences' plans, the
//! key ring's row — in one device buffer the decoder keeps for its life. Each step writes them
//! with one upload and one copy before its kernels, so the kernels read the same addresses every
//! step: a step of one shape launches the same kernels with the same arguments, which is what a
//! recorded step (a CUDA graph) needs to be replayed.

use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use spotlight_kernels::copy::copy;
use spotlight_kernels::device::upload_u32;

/// Sections start on 256-byte boundaries (wgpu's storage-buffer offset alignment).
const ALIGN_WORDS: usize = 64;

/// The sections of [`StepInputs`], as device handles into its one buffer.
pub(super) struct StepInputs {
    buffer: Handle,
    words: usize,
    offsets: [usize; SECTIONS],
    /// Token of each row `[rows]`.
    pub tokens: Handle,
    /// Sequence of each row `[rows]`.
    pub seq: Handle,
    /// Position of each row's new token `[rows]`.
    pub pos: Handle,
    /// Rows each row's query sees, `pos + 1` `[rows]`.
    pub len: Handle,
    /// Selection plans `[batch][4]` (sparse decoding).
    pub plan: Handle,
    /// First key-ring row this step writes `[1]`.
    pub ring_row: Handle,
    /// Places of the keys hashed on a step that empties the key ring `[ring rows]` each.
    pub flush_seq: Handle,
    pub flush_pos: Handle,
}

const SECTIONS: usize = 8;

/// The host values of one step, section by section (each at most its section's length).
#[derive(Debug, Default)]
pub(super) struct StepWords {
    pub tokens: Vec<u32>,
    pub seq: Vec<u32>,
    pub pos: Vec<u32>,
    pub len: Vec<u32>,
    pub plan: Vec<u32>,
    pub ring_row: u32,
    pub flush_seq: Vec<u32>,
    pub flush_pos: Vec<u32>,
}

impl StepInputs {
    /// Room for steps of up to `batch` rows over `batch` sequences, with a key ring of
    /// `ring_rows` rows.
    pub fn new<R: Runtime>(client: &ComputeClient<R>, batch: usize, ring_rows: usize) -> Self {
        let batch = batch.max(1);
        let lens = [
            batch,
            batch,
            batch,
            batch,
            4 * batch,
            1,
            ring_rows.max(1),
            ring_rows.max(1),
        ];
        let mut offsets = [0; SECTIONS];
        let mut words = 0;
        for (o, n) in offsets.iter_mut().zip(lens) {
            *o = words;
            words += n.div_ceil(ALIGN_WORDS) * ALIGN_WORDS;
        }
        let buffer = client.empty(4 * words);
        let section = |i: usize| {
            let end = words - offsets[i] - lens[i];
            buffer
                .clone()
                .offset_start(4 * offsets[i] as u64)
                .offset_end(4 * end as u64)
        };
        Self {
            tokens: section(0),
            seq: section(1),
            pos: section(2),
            len: section(3),
            plan: section(4),
            ring_row: section(5),
            flush_seq: section(6),
            flush_pos: section(7),
            buffer,
            words,
            offsets,
        }
    }

    /// Writes one step's values (one upload, one copy launch). Sections the step does not use
    /// keep zeros.
    pub fn write<R: Runtime>(&self, client: &ComputeClient<R>, step: &StepWords) {
        let mut host = vec![0u32; self.words];
        let ring_row = [step.ring_row];
        let parts: [&[u32]; SECTIONS] = [
            &step.tokens,
            &step.seq,
            &step.pos,
            &step.len,
            &step.plan,
            &ring_row,
            &step.flush_seq,
            &step.flush_pos,
        ];
        for (i, part) in parts.iter().enumerate() {
            let at = self.offsets[i];
            let end = self.offsets.get(i + 1).copied().unwrap_or(self.words);
            let n = part.len().min(end - at);
            host[at..at + n].copy_from_slice(&part[..n]);
        }
        copy(client, &upload_u32(client, &host), &self.buffer, self.words);
    }
}

/// The length a step's launches are planned for when its longest row (or list) has `n` keys:
/// at least 128, and above that `n` rounded up to a quarter of its power of two. Steps of one
/// span launch the same kernels with the same arguments, so one recorded graph serves the
/// `n/4` or so steps of each span; the kernels read true lengths from the device and do no
/// work past them (the rounding costs at most a quarter more grid, never more rows read).
pub fn span_of(n: usize) -> usize {
    const SMALLEST: usize = 128;
    if n <= SMALLEST {
        return SMALLEST;
    }
    let top = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    let quarter = (top / 4).max(1);
    n.div_ceil(quarter) * quarter
}

#[cfg(test)]
mod tests {
    use super::span_of;

    #[test]
    fn spans_cover_their_lengths_and_change_a_few_times_per_octave() {
        let mut spans = std::collections::BTreeSet::new();
        for n in 0..=70_000 {
            let s = span_of(n);
            assert!(s >= n && s >= 128, "span {s} for {n}");
            assert!(
                s <= 128.max(n + n / 4),
                "span {s} for {n} overshoots a quarter"
            );
            spans.insert(s);
        }
        // 128, then four spans per octave from 256 to 65536 and one past it.
        assert_eq!(spans.len(), 1 + 4 * 9 + 1, "{spans:?}");
    }
}
