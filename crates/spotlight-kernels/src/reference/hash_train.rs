//! The hash network in training (METHOD.md "Training"): the softsign code c = softsign(γ·h2) and
//! its backward, in f64 so gradient checks against finite differences are meaningful.
//!
//! Layout: vectors `[nets][rows][d]` (net outer, as training batches them), weights as
//! [`super::HashWeights`] (`w1[net][in][out]`).

/// One layer set of hash weights in f64 (`x · W` convention).
#[derive(Debug, Clone, Copy)]
pub struct MlpParams<'a> {
    pub nets: usize,
    pub d: usize,
    pub w1: &'a [f64],
    pub b1: &'a [f64],
    pub w2: &'a [f64],
    pub b2: &'a [f64],
}

/// Per-row quantities of the backward: what the weight gradients are reduced from.
#[derive(Debug, Clone, PartialEq)]
pub struct HashRowGrads {
    /// ∂L/∂x `[nets][rows][d]`.
    pub x: Vec<f64>,
    /// ∂L/∂a1, a1 = x·W1 + b1 (so ∂L/∂W1 = xᵀ·a1, ∂L/∂b1 = Σ_rows a1).
    pub a1: Vec<f64>,
    /// ∂L/∂h2 (so ∂L/∂W2 = h1ᵀ·h2, ∂L/∂b2 = Σ_rows h2).
    pub h2: Vec<f64>,
    /// h1 itself, the input of the second layer.
    pub h1: Vec<f64>,
}

fn sigmoid(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

impl MlpParams<'_> {
    fn layer(&self, w: &[f64], b: &[f64], net: usize, x: &[f64]) -> Vec<f64> {
        let d = self.d;
        (0..d)
            .map(|j| b[net * d + j] + (0..d).map(|i| x[i] * w[(net * d + i) * d + j]).sum::<f64>())
            .collect()
    }

    /// W·g for one net (the transposed product of the backward): Σ_i W[j][i]·g[i].
    fn layer_t(&self, w: &[f64], net: usize, g: &[f64]) -> Vec<f64> {
        let d = self.d;
        (0..d)
            .map(|j| (0..d).map(|i| w[(net * d + j) * d + i] * g[i]).sum::<f64>())
            .collect()
    }

    /// (a1, h1, h2) of one vector.
    fn row(&self, net: usize, x: &[f64]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let a1 = self.layer(self.w1, self.b1, net, x);
        let h1: Vec<f64> = x
            .iter()
            .zip(&a1)
            .map(|(x, a)| x + a * sigmoid(*a))
            .collect();
        let a2 = self.layer(self.w2, self.b2, net, &h1);
        let h2 = h1.iter().zip(&a2).map(|(h, a)| h + a).collect();
        (a1, h1, h2)
    }
}

/// c = softsign(γ·h2) = γh2 / (1 + |γh2|) for x `[nets][rows][d]`.
pub fn hash_soft(p: &MlpParams, x: &[f64], rows: usize, gamma: f64) -> Vec<f64> {
    let d = p.d;
    let mut out = Vec::with_capacity(p.nets * rows * d);
    for net in 0..p.nets {
        for r in 0..rows {
            let (_, _, h2) = p.row(net, &x[(net * rows + r) * d..][..d]);
            out.extend(h2.iter().map(|h| {
                let g = gamma * h;
                g / (1.0 + g.abs())
            }));
        }
    }
    out
}

/// The backward of [`hash_soft`] for the incoming gradient `grad` (∂L/∂c, same layout as x).
pub fn hash_soft_backward(
    p: &MlpParams,
    x: &[f64],
    rows: usize,
    gamma: f64,
    grad: &[f64],
) -> HashRowGrads {
    let d = p.d;
    let len = p.nets * rows * d;
    let mut out = HashRowGrads {
        x: Vec::with_capacity(len),
        a1: Vec::with_capacity(len),
        h2: Vec::with_capacity(len),
        h1: Vec::with_capacity(len),
    };
    for net in 0..p.nets {
        for r in 0..rows {
            let at = (net * rows + r) * d;
            let (a1, h1, h2) = p.row(net, &x[at..][..d]);
            // softsign'(u) = 1 / (1 + |u|)².
            let gh2: Vec<f64> = h2
                .iter()
                .zip(&grad[at..at + d])
                .map(|(h, g)| {
                    let den = 1.0 + (gamma * h).abs();
                    g * gamma / (den * den)
                })
                .collect();
            // h2 = h1 + h1·W2 + b2.
            let back2 = p.layer_t(p.w2, net, &gh2);
            let gh1: Vec<f64> = gh2.iter().zip(&back2).map(|(g, b)| g + b).collect();
            // h1 = x + SiLU(a1), SiLU'(a) = σ(a)(1 + a(1 − σ(a))).
            let ga1: Vec<f64> = gh1
                .iter()
                .zip(&a1)
                .map(|(g, &a)| {
                    let s = sigmoid(a);
                    g * s * (1.0 + a * (1.0 - s))
                })
                .collect();
            let back1 = p.layer_t(p.w1, net, &ga1);
            out.x.extend(gh1.iter().zip(&back1).map(|(g, b)| g + b));
            out.a1.extend(ga1);
            out.h2.extend(gh2);
            out.h1.extend(h1);
        }
    }
    out
}
