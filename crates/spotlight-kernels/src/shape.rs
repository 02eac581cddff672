//! Head layouts shared by the kernels and their references.

use crate::KernelError;

/// Key codes and the query heads that score against them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeShape {
    pub q_heads: usize,
    /// Number of key-code sets per token (KV heads in the group layout, query heads in the faithful one).
    pub sets: usize,
    /// Bits per code = head_dim.
    pub bits: usize,
}

impl CodeShape {
    pub fn new(q_heads: usize, sets: usize, bits: usize) -> Result<Self, KernelError> {
        if bits == 0 || !bits.is_multiple_of(32) || bits > 256 {
            return Err(KernelError::HeadDim(bits));
        }
        if sets == 0 || q_heads == 0 || !q_heads.is_multiple_of(sets) {
            return Err(KernelError::Groups { q_heads, sets });
        }
        Ok(Self {
            q_heads,
            sets,
            bits,
        })
    }
    pub fn words(&self) -> usize {
        self.bits / 32
    }
    /// Query heads per code set.
    pub fn group(&self) -> usize {
        self.q_heads / self.sets
    }
    /// Scores run from 0 (all bits differ for every query of the group) to `group · bits`.
    pub fn bins(&self) -> usize {
        self.group() * self.bits + 1
    }
}

/// Decode attention over a KV cache, with queries grouped by code set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendShape {
    pub q_heads: usize,
    pub kv_heads: usize,
    /// Sets of query heads that share one index list (see [`CodeShape::sets`]).
    pub sets: usize,
    pub head_dim: usize,
}

impl AttendShape {
    pub fn new(
        q_heads: usize,
        kv_heads: usize,
        sets: usize,
        head_dim: usize,
    ) -> Result<Self, KernelError> {
        if head_dim == 0 || !head_dim.is_multiple_of(32) || head_dim > 256 {
            return Err(KernelError::HeadDim(head_dim));
        }
        if sets == 0 || !q_heads.is_multiple_of(sets) {
            return Err(KernelError::Groups { q_heads, sets });
        }
        if kv_heads == 0 || !sets.is_multiple_of(kv_heads) || !q_heads.is_multiple_of(kv_heads) {
            return Err(KernelError::SetsVsKvHeads { sets, kv_heads });
        }
        if q_heads / sets > 8 {
            return Err(KernelError::GroupTooLarge(q_heads / sets));
        }
        Ok(Self {
            q_heads,
            kv_heads,
            sets,
            head_dim,
        })
    }
    /// Dense GQA attention: one set per KV head.
    pub fn dense(q_heads: usize, kv_heads: usize, head_dim: usize) -> Result<Self, KernelError> {
        Self::new(q_heads, kv_heads, kv_heads, head_dim)
    }
    pub fn group(&self) -> usize {
        self.q_heads / self.sets
    }
    /// The KV head whose rows a set's query heads attend to.
    pub fn kv_head_of_set(&self, set: usize) -> usize {
        set * self.kv_heads / self.sets
    }
}
