//! The two GQA layouts of the hash (METHOD.md "Hash function").

use serde::{Deserialize, Serialize};

/// How hash networks map to heads when G query heads share one KV head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The authors' code: one network per query head codes both q and k; a key gets one code per
    /// query head; one top-k per query head.
    Faithful,
    /// One query network per query head, one key network per KV head; a key gets one code per KV
    /// head, the group's scores are summed, one top-k per KV head (each selected K/V row read once).
    Group,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::Faithful, Layout::Group];

    pub fn name(self) -> &'static str {
        match self {
            Layout::Faithful => "faithful",
            Layout::Group => "group",
        }
    }

    /// Number of key networks (= key code sets per token).
    pub fn key_nets(self, q_heads: usize, kv_heads: usize) -> usize {
        match self {
            Layout::Faithful => q_heads,
            Layout::Group => kv_heads,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == s)
    }
}
