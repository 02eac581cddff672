//! Held-out retrieval quality during training: the q/k of held-out windows are captured once, and
//! every few steps the current hash is scored on them (IoU and attention mass at a budget against
//! the oracle of its own selection granularity, also by query position) — the evidence that a run
//! converged, measured on text it never trains on.

use burn::tensor::backend::Backend;
use rand::{rngs::StdRng, seq::index::sample, SeedableRng};
use spotlight_llama::LayerQk;

use crate::quality::{evaluate_layer, LayerQuality, Method, PositionQuality};
use crate::trainer::mix_seed;
use crate::{HashFile, TrainError};

/// Held-out windows' q/k (the layers scored only) and the query rows sampled in each.
pub struct HeldOut<B: Backend> {
    /// Per window: (layer, q/k) of the scored layers.
    windows: Vec<Vec<(usize, LayerQk<B>)>>,
    positions: Vec<Vec<usize>>,
    pub budget: f64,
    pub split: Vec<usize>,
}

/// A hash's held-out quality, averaged over windows and scored layers.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeldOutScore {
    pub iou: f64,
    pub mass_recall: f64,
    pub by_position: Vec<PositionQuality>,
}

impl<B: Backend> HeldOut<B> {
    /// `windows`: per window the q/k of every layer; `layers`: the layers scored; `queries`
    /// rows per window at positions ≥ min(512, len/2) (seeded).
    pub fn new(
        windows: Vec<Vec<LayerQk<B>>>,
        layers: &[usize],
        queries: usize,
        budget: f64,
        split: Vec<usize>,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let mut kept = Vec::new();
        let mut positions = Vec::new();
        for (w, qk) in windows.into_iter().enumerate() {
            let len = qk
                .first()
                .map(|l| l.q.dims()[1])
                .ok_or_else(|| TrainError::Config("held-out window without layers".into()))?;
            let min_pos = 512.min(len / 2);
            let mut rng = StdRng::seed_from_u64(mix_seed(seed, &[0x4e1d, w as u64]));
            let mut p: Vec<usize> = sample(&mut rng, len - min_pos, queries.min(len - min_pos))
                .into_iter()
                .map(|p| p + min_pos)
                .collect();
            p.sort_unstable();
            positions.push(p);
            kept.push(
                qk.into_iter()
                    .enumerate()
                    .filter(|(l, _)| layers.contains(l))
                    .collect(),
            );
        }
        Ok(Self {
            windows: kept,
            positions,
            budget,
            split,
        })
    }

    /// Scores `method` (a hash or a baseline) on every window and scored layer.
    pub fn score(&self, method: &Method) -> HeldOutScore {
        let mut rows: Vec<LayerQuality> = Vec::new();
        for (qk, positions) in self.windows.iter().zip(&self.positions) {
            for (l, layer) in qk {
                rows.extend(evaluate_layer(
                    *l,
                    layer,
                    positions,
                    std::slice::from_ref(method),
                    &[self.budget],
                    false,
                    &self.split,
                ));
            }
        }
        let n = rows.len().max(1) as f64;
        let bins = rows.first().map_or(0, |r| r.by_position.len());
        HeldOutScore {
            iou: rows.iter().map(|r| r.iou).sum::<f64>() / n,
            mass_recall: rows.iter().map(|r| r.mass_recall).sum::<f64>() / n,
            by_position: (0..bins)
                .map(|b| {
                    let bin: Vec<&PositionQuality> =
                        rows.iter().map(|r| &r.by_position[b]).collect();
                    let total: usize = bin.iter().map(|p| p.rows).sum();
                    let pooled = |f: fn(&PositionQuality) -> f64| {
                        bin.iter().map(|p| f(p) * p.rows as f64).sum::<f64>() / total.max(1) as f64
                    };
                    PositionQuality {
                        from: bin[0].from,
                        to: bin[0].to,
                        iou: pooled(|p| p.iou),
                        recall: pooled(|p| p.recall),
                        mass_recall: pooled(|p| p.mass_recall),
                        rows: total / (rows.len() / self.windows.len().max(1)).max(1),
                    }
                })
                .filter(|p| p.rows > 0)
                .collect(),
        }
    }

    /// Scores a hash file.
    pub fn score_hash(&self, name: &str, file: &HashFile) -> HeldOutScore {
        self.score(&Method::Hash {
            name: name.into(),
            file: file.clone(),
        })
    }
}
