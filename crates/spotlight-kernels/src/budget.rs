//! How many cached tokens a decode step reads: forced sink and window plus a top-k of the rest.

use crate::KernelError;

/// The budget policy (METHOD.md "Decoding"): `k = max(min(N, min_tokens), ceil(fraction · N))`
/// keys chosen by score among the middle tokens, plus the first `sink` and the last `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub fraction: f64,
    pub min_tokens: usize,
    pub sink: usize,
    pub window: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            fraction: 0.02,
            min_tokens: 20,
            sink: 4,
            window: 64,
        }
    }
}

/// The budget applied to one sequence of `len` cached tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencePlan {
    pub len: usize,
    pub sink: usize,
    pub window: usize,
    /// Tokens chosen by score from the middle `[sink, len - window)`.
    pub top_k: usize,
}

impl Budget {
    pub fn validate(&self) -> Result<(), KernelError> {
        if !(0.0..=1.0).contains(&self.fraction) {
            return Err(KernelError::Fraction(self.fraction));
        }
        Ok(())
    }

    pub fn plan(&self, len: usize) -> SequencePlan {
        let sink = self.sink.min(len);
        let window = self.window.min(len - sink);
        let middle = len - sink - window;
        let k = len
            .min(self.min_tokens)
            .max((self.fraction * len as f64).ceil() as usize);
        SequencePlan {
            len,
            sink,
            window,
            top_k: k.min(middle),
        }
    }
}

impl SequencePlan {
    /// Every one of `len` tokens (a sequence that attends densely).
    pub fn keep_all(len: usize) -> Self {
        Self {
            len,
            sink: 0,
            window: len,
            top_k: 0,
        }
    }

    /// Number of indices selected: sink + top-k + window, never more than `len`, no duplicates.
    pub fn selected(&self) -> usize {
        self.sink + self.top_k + self.window
    }
    /// First token of the forced window.
    pub fn middle_end(&self) -> usize {
        self.len - self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_never_exceed_the_sequence() {
        let b = Budget::default();
        for len in [0, 1, 3, 4, 5, 20, 67, 68, 69, 100, 1000, 4097, 131072] {
            let p = b.plan(len);
            assert!(p.selected() <= len, "{p:?}");
            assert_eq!(p.sink + p.window + (len - p.sink - p.window), len);
        }
        let p = b.plan(1000);
        assert_eq!((p.sink, p.window, p.top_k), (4, 64, 20));
        let p = b.plan(131072);
        assert_eq!(p.top_k, 2622); // ceil(0.02 · 131072)
        assert_eq!(b.plan(10).selected(), 10);
    }

    #[test]
    fn fraction_outside_unit_interval_is_an_error() {
        let b = Budget {
            fraction: 1.5,
            ..Budget::default()
        };
        assert_eq!(b.validate(), Err(KernelError::Fraction(1.5)));
    }
}
