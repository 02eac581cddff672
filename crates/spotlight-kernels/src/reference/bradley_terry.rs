//! The Bradley–Terry ranking loss over sampled pairs (METHOD.md "Training", step 6), per row of
//! draft scores, in f64.
//!
//! Row r (one head, one query) has `pairs` pairs (top key i, other key j) with a validity weight.
//! diff = β·(s[r][i] − s[r][j]) − m; the row's loss sum is Σ valid · softplus(−diff). A pair whose
//! key index lies outside the row (≥ n) does not count.

/// Inputs of the loss: scores `[rows][n]`, pairs `[rows][pairs]`.
#[derive(Debug, Clone, Copy)]
pub struct PairSet<'a> {
    pub scores: &'a [f64],
    pub top: &'a [u32],
    pub other: &'a [u32],
    pub valid: &'a [f64],
    pub rows: usize,
    pub n: usize,
    pub pairs: usize,
    pub beta: f64,
    pub margin: f64,
}

/// log(1 + eˣ) without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

impl PairSet<'_> {
    /// (valid weight, diff) of pair p of row r; weight 0 for pairs outside the row.
    fn pair(&self, r: usize, p: usize) -> (f64, f64) {
        let at = r * self.pairs + p;
        let (i, j) = (self.top[at] as usize, self.other[at] as usize);
        if i >= self.n || j >= self.n {
            return (0.0, 0.0);
        }
        let s = &self.scores[r * self.n..];
        (self.valid[at], self.beta * (s[i] - s[j]) - self.margin)
    }
}

/// Per-row sums `[3][rows]`: Σ valid·softplus(−diff), Σ valid·[diff < 0], Σ valid.
pub fn bt_rows(set: &PairSet) -> Vec<f64> {
    let rows = set.rows;
    let mut out = vec![0.0; 3 * rows];
    for r in 0..rows {
        for p in 0..set.pairs {
            let (v, diff) = set.pair(r, p);
            out[r] += v * softplus(-diff);
            out[rows + r] += v * (diff < 0.0) as u8 as f64;
            out[2 * rows + r] += v;
        }
    }
    out
}

/// Pair weights `[rows][pairs]` w = g[r]·valid·β·σ(−diff) for the incoming gradient g `[rows]` of
/// the row loss sums: ∂L/∂s[top] −= w and ∂L/∂s[other] += w.
pub fn bt_pair_grads(set: &PairSet, grad: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; set.rows * set.pairs];
    for r in 0..set.rows {
        for p in 0..set.pairs {
            let (v, diff) = set.pair(r, p);
            out[r * set.pairs + p] = grad[r] * v * set.beta / (1.0 + diff.exp());
        }
    }
    out
}

/// ∂L/∂scores `[rows][n]` from the pair weights (the scatter the kernels leave to the backend).
pub fn bt_score_grads(set: &PairSet, weights: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; set.rows * set.n];
    for r in 0..set.rows {
        for p in 0..set.pairs {
            let at = r * set.pairs + p;
            let (i, j) = (set.top[at] as usize, set.other[at] as usize);
            if i < set.n && j < set.n {
                out[r * set.n + i] -= weights[at];
                out[r * set.n + j] += weights[at];
            }
        }
    }
    out
}
