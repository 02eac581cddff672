//! The layer-wise trainer (METHOD.md "Training"). Every step takes one sequence, runs the frozen
//! model once, and updates every layer's hash (each layout) from that layer's q and k; layers never
//! share a gradient, a clip or a moment, so this equals training them one at a time, batched.
//!
//! State = parameters + AdamW moments + the step count, checkpointed atomically; everything random
//! (windows, queries, pairs) is a function of (seed, step, layer), so a resumed run continues
//! exactly where the killed one would have been.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};
use spotlight_llama::{LayerQk, LlamaConfig};

use crate::adamw::{AdamW, AdamWConfig, Moments};
use crate::bradley_terry::{draft_scores, loss, loss_by_tensor_ops};
use crate::hash_file::{HashFile, HashHeader, LayerHash};
use crate::hash_mlp::HashMlp;
use crate::linear_hash::layer_rotations;
use crate::targets::{TargetConfig, Targets};
use crate::tensor_file::{self, Tensors};
use crate::TrainBackend;
use crate::{Layout, TrainError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub layouts: Vec<Layout>,
    pub steps: usize,
    /// Tokens per training sequence.
    pub seq_len: usize,
    pub targets: TargetConfig,
    /// Softsign sharpness γ of the training code.
    pub gamma: f64,
    /// Bradley–Terry temperature β and margin m.
    pub beta: f64,
    pub margin: f64,
    pub optimizer: AdamWConfig,
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Code bits per head: a multiple of head_dim, R = bits / head_dim networks per head
    /// (0: head_dim, the paper's one network).
    #[serde(default)]
    pub bits: usize,
    /// How the networks start.
    #[serde(default)]
    pub init: HashInit,
    /// Window lengths used in turn (step s reads a window of `seq_lens[s % len]` tokens); empty:
    /// `seq_len` every step. Mixed lengths train the positions a long context reaches.
    #[serde(default)]
    pub seq_lens: Vec<usize>,
    /// Layers trained (ascending); empty: all. The others keep their start.
    #[serde(default)]
    pub layers: Vec<usize>,
    /// γ of the first step, annealed geometrically to `gamma` at the last (0: `gamma` throughout).
    #[serde(default)]
    pub gamma_start: f64,
    /// The learned-linear ablation: W1 = b1 = 0 held fixed, so h2 = x·(I + W2) + b2 — one
    /// learned projection, no non-linearity.
    #[serde(default)]
    pub linear: bool,
}

/// The networks' starting point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashInit {
    /// The authors': W ~ N(0, 1e-3²), so the untrained code ≈ sign(x).
    #[default]
    Identity,
    /// h2 ≈ x·R with R random orthogonal per network: the untrained code is a random linear
    /// hash (see [`HashMlp::init_rotated`]).
    Rotation,
    /// Each head's first network near identity, the others rotated: the authors' start plus
    /// random linear bits.
    Mixed,
}

impl Default for TrainConfig {
    /// The authors' recipe (METHOD.md), except for the number of steps and the sequence length,
    /// which callers choose for their budget.
    fn default() -> Self {
        Self {
            layouts: Layout::ALL.to_vec(),
            steps: 1000,
            seq_len: 4096,
            targets: TargetConfig::default(),
            gamma: 64.0,
            beta: 1.0,
            margin: 0.0,
            optimizer: AdamWConfig::default(),
            seed: 0,
            checkpoint_every: 50,
            bits: 0,
            init: HashInit::Identity,
            seq_lens: Vec::new(),
            layers: Vec::new(),
            gamma_start: 0.0,
            linear: false,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |s: String| Err(TrainError::Config(s));
        if self.layouts.is_empty() {
            return bad("no layout to train".into());
        }
        if self.steps == 0
            || self.seq_len < 2
            || self.targets.queries == 0
            || self.targets.pairs == 0
        {
            return bad(format!(
                "steps ({}), seq_len ({}), queries ({}) and pairs ({}) must be positive (seq_len ≥ 2)",
                self.steps, self.seq_len, self.targets.queries, self.targets.pairs
            ));
        }
        if !(0.0..=1.0).contains(&self.targets.near_fraction) {
            return bad(format!(
                "near-miss fraction {} is not in [0, 1]",
                self.targets.near_fraction
            ));
        }
        if !(0.0..=1.0).contains(&self.targets.hard_fraction)
            || self.targets.near_fraction + self.targets.hard_fraction > 1.0
        {
            return bad(format!(
                "hard-negative fraction {} is not in [0, 1 − near fraction {}]",
                self.targets.hard_fraction, self.targets.near_fraction
            ));
        }
        if !(self.targets.top_fraction > 0.0 && self.targets.top_fraction < 1.0) {
            return bad(format!(
                "top fraction {} is not in (0, 1)",
                self.targets.top_fraction
            ));
        }
        if self.targets.group && !self.layouts.contains(&Layout::Group) {
            return bad("group targets train the group layout, which is not trained".into());
        }
        if let Some(&l) = self.seq_lens.iter().find(|&&l| l < 2 || l > self.seq_len) {
            return bad(format!(
                "window length {l} must be between 2 and --seq-len {}",
                self.seq_len
            ));
        }
        if !self.layers.windows(2).all(|w| w[0] < w[1]) {
            return bad(format!(
                "layers {:?} must be ascending, each once",
                self.layers
            ));
        }
        if self.gamma_start < 0.0 || self.gamma.is_nan() || self.gamma <= 0.0 {
            return bad(format!(
                "γ {} must be positive and its start {} not negative",
                self.gamma, self.gamma_start
            ));
        }
        Ok(())
    }

    /// Tokens of the window of step `step`.
    pub fn window_len(&self, step: usize) -> usize {
        match self.seq_lens.len() {
            0 => self.seq_len,
            n => self.seq_lens[step % n],
        }
    }

    /// γ at 0-based `step`: geometric from `gamma_start` to `gamma`.
    pub fn gamma_at(&self, step: usize) -> f64 {
        if self.gamma_start <= 0.0 || self.steps < 2 {
            return self.gamma;
        }
        let progress = (step.min(self.steps - 1)) as f64 / (self.steps - 1) as f64;
        self.gamma_start * (self.gamma / self.gamma_start).powf(progress)
    }

    /// Whether layer `l` of a model of `layers` is trained.
    pub fn trains_layer(&self, l: usize) -> bool {
        self.layers.is_empty() || self.layers.contains(&l)
    }

    /// Code bits per head for head size `d`, and the networks per head; a one-line error when
    /// `bits` is not a multiple of d or too long for the score kernels (256 bits).
    pub fn code_bits(&self, d: usize) -> Result<(usize, usize), TrainError> {
        let bits = if self.bits == 0 { d } else { self.bits };
        if d == 0 || !bits.is_multiple_of(d) || bits > 256 {
            return Err(TrainError::Config(format!(
                "{bits} code bits: must be a multiple of head_dim {d}, at most 256"
            )));
        }
        Ok((bits, bits / d))
    }
}

/// One layer's networks for one layout.
#[derive(Debug, Clone)]
pub struct LayerNets<B: Backend> {
    pub query: HashMlp<B>,
    /// Group layout only.
    pub key: Option<HashMlp<B>>,
}

impl<B: Backend> LayerNets<B> {
    fn params(&self) -> Vec<Tensor<B, 3>> {
        let mut p = self.query.params().to_vec();
        if let Some(k) = &self.key {
            p.extend(k.params());
        }
        p
    }

    /// The networks from their parameters (query, then key), `r` networks per input head.
    fn from_params(r: usize, p: Vec<Tensor<B, 3>>) -> Self {
        let mut it = p.into_iter();
        let mut four = || -> Option<[Tensor<B, 3>; 4]> {
            Some([it.next()?, it.next()?, it.next()?, it.next()?])
        };
        let query = HashMlp::from_params(r, four().expect("query params"));
        let key = four().map(|p| HashMlp::from_params(r, p));
        Self { query, key }
    }

    /// Soft codes of the sampled queries [q_heads, T, d] and of all keys [key_nets, N, d].
    pub fn soft_codes(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        gamma: f64,
    ) -> (Tensor<B, 3>, Tensor<B, 3>)
    where
        B: TrainBackend,
    {
        self.codes_with(queries, keys, |net, x| net.soft_codes(x, gamma))
    }

    /// [`LayerNets::soft_codes`] in plain Burn tensor ops (the cross-check).
    pub fn soft_codes_by_tensor_ops(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        gamma: f64,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        self.codes_with(queries, keys, |net, x| {
            net.soft_codes_by_tensor_ops(x, gamma)
        })
    }

    fn codes_with(
        &self,
        queries: Tensor<B, 3>,
        keys: Tensor<B, 3>,
        code: impl Fn(&HashMlp<B>, Tensor<B, 3>) -> Tensor<B, 3>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let cq = code(&self.query, queries);
        let ck = match &self.key {
            Some(key) => code(key, keys),
            None => {
                // Faithful: each query head's network codes its KV head's keys.
                let [kv, n, d] = keys.dims();
                let g = self.query.input_heads() / kv;
                let repeated =
                    keys.reshape([kv, 1, n, d])
                        .expand([kv, g, n, d])
                        .reshape([kv * g, n, d]);
                code(&self.query, repeated)
            }
        };
        (cq, ck)
    }

    pub fn to_layer_hash(&self) -> Result<LayerHash, TrainError> {
        Ok(LayerHash {
            query: self.query.to_weights()?,
            key: self.key.as_ref().map(HashMlp::to_weights).transpose()?,
        })
    }
}

struct NetState<B: Backend> {
    nets: LayerNets<B>,
    moments: Vec<Moments<B, 3>>,
    /// The starting weights, when weight decay pulls towards them.
    anchors: Option<Vec<Tensor<B, 3>>>,
}

/// What one layer of one layout did in one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub layout: Layout,
    pub layer: usize,
    pub loss: f64,
    pub misordered: f64,
    pub valid_pairs: f64,
    pub grad_norm: f64,
    pub lr: f64,
}

/// Model dimensions the hash depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Dims {
    model: String,
    layers: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// Mixes a seed with small integers into an independent stream seed (splitmix64 finaliser).
pub fn mix_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed;
    for &p in parts {
        z = z.wrapping_add(p.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// Draft scores per selection unit: [q_heads, T, N] as they are, or with group targets summed
/// over each KV head's group → [kv_heads, T, N] (the score a group selection ranks by).
fn unit_scores<B: Backend>(scores: Tensor<B, 3>, group: bool, kv: usize) -> Tensor<B, 3> {
    if !group {
        return scores;
    }
    let [h, t, n] = scores.dims();
    scores
        .reshape([kv, h / kv, t, n])
        .sum_dim(1)
        .reshape([kv, t, n])
}

/// How a training step computes codes and loss: the custom ops (CubeCL kernels on cube backends,
/// the plain-Rust references on cpu) or the same math in plain Burn tensor ops (the cross-check).
/// Both train the same network; the choice changes speed only, so it is not part of the
/// checkpoint. The default is the backend's faster one ([`TrainBackend::DEFAULT_OPS`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainOps {
    #[default]
    Custom,
    TensorOps,
}

pub struct Trainer<B: AutodiffBackend> {
    pub config: TrainConfig,
    /// None: the backend's default ([`TrainBackend::DEFAULT_OPS`]).
    pub ops: Option<TrainOps>,
    /// Completed steps.
    pub step: usize,
    /// The model's weights fingerprint, recorded in the hash files (see [`HashHeader`]).
    pub model_fingerprint: Option<String>,
    /// Some(N): time the phases of the first N layers of each step (device-synchronised) and
    /// skip the rest, for finding where a step's time goes; the times are in [`Self::profile_ms`].
    pub profile: Option<usize>,
    /// The last profiled step's milliseconds per phase.
    profile_ms: Vec<(&'static str, f64)>,
    dims: Dims,
    llama: LlamaConfig,
    /// [layout][layer]
    state: Vec<Vec<NetState<B::InnerBackend>>>,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Fresh networks at the near-identity init, seeded per (layout, layer, role).
    pub fn new(
        config: TrainConfig,
        model: &str,
        llama: &LlamaConfig,
        device: &B::Device,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        let (h, kv, d) = (
            llama.num_attention_heads,
            llama.num_key_value_heads,
            llama.head_dim,
        );
        let (bits, replicas) = config.code_bits(d)?;
        spotlight_kernels::CodeShape::new(h, kv, bits).map_err(TrainError::from)?;
        if let Some(&l) = config
            .layers
            .iter()
            .find(|&&l| l >= llama.num_hidden_layers)
        {
            return Err(TrainError::Config(format!(
                "layer {l} does not exist: the model has {} layers",
                llama.num_hidden_layers
            )));
        }
        let g = h / kv;
        // `heads` networks' start; `per_kv` heads share a KV head (g for query networks, 1 for
        // key networks), and a head's networks take its KV head's rotations, so a query and its
        // key start as one linear hash (the baseline's rotations for the same seed and layer).
        let init = |heads: usize, per_kv: usize, seed: u64, layer: usize| {
            let mlp = match config.init {
                HashInit::Identity => {
                    HashMlp::init(heads * replicas, d, seed, device).with_replicas(replicas)
                }
                HashInit::Rotation | HashInit::Mixed => {
                    let r = layer_rotations(d, kv, bits, config.seed, layer);
                    let dd = d * d;
                    let per_net: Vec<f32> = (0..heads * replicas)
                        .flat_map(|n| {
                            let block = (n / replicas / per_kv) * replicas + n % replicas;
                            r[block * dd..(block + 1) * dd].to_vec()
                        })
                        .collect();
                    let mixed = config.init == HashInit::Mixed;
                    HashMlp::init_rotated(&per_net, replicas, d, mixed, seed, device)
                }
            };
            if config.linear {
                mlp.without_first_layer()
            } else {
                mlp
            }
        };
        let state = config
            .layouts
            .iter()
            .enumerate()
            .map(|(li, &layout)| {
                (0..llama.num_hidden_layers)
                    .map(|l| {
                        let seed = |role: u64| mix_seed(config.seed, &[li as u64, l as u64, role]);
                        let nets = LayerNets {
                            query: init(h, g, seed(0), l),
                            key: (layout == Layout::Group).then(|| init(kv, 1, seed(1), l)),
                        };
                        let moments = nets.params().iter().map(Moments::zeros_like).collect();
                        let anchors = config.optimizer.decay_to_init.then(|| nets.params());
                        NetState {
                            nets,
                            moments,
                            anchors,
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            ops: None,
            config,
            step: 0,
            model_fingerprint: None,
            profile: None,
            profile_ms: Vec::new(),
            dims: Dims {
                model: model.into(),
                layers: llama.num_hidden_layers,
                q_heads: h,
                kv_heads: kv,
                head_dim: d,
            },
            llama: llama.clone(),
            state,
            device: device.clone(),
        })
    }

    /// One training step on one sequence's q/k (all layers, all layouts).
    pub fn train_step(
        &mut self,
        qk: &[LayerQk<B::InnerBackend>],
    ) -> Result<Vec<StepRecord>, TrainError>
    where
        B: TrainBackend,
        B::InnerBackend: spotlight_llama::LlamaBackend + TrainBackend,
    {
        if qk.len() != self.dims.layers {
            return Err(TrainError::Config(format!(
                "{} layers of q/k given to a trainer of {} layers",
                qk.len(),
                self.dims.layers
            )));
        }
        let c = self.config.clone();
        let ops = self.ops.unwrap_or(B::DEFAULT_OPS);
        let optimizer = AdamW {
            config: c.optimizer,
        };
        let lr = c.optimizer.lr_at(self.step, c.steps);
        let gamma = c.gamma_at(self.step);
        let mut records = Vec::new();
        let mut stats: Vec<Tensor<B::InnerBackend, 1>> = Vec::new();
        let profile = self.profile;
        let mut phases = Phases::<B>::new(profile.is_some(), &self.device);
        let layers = qk
            .iter()
            .enumerate()
            .filter(|(l, _)| c.trains_layer(*l))
            .take(profile.unwrap_or(usize::MAX));
        let lift = |t: Targets<B::InnerBackend>| Targets::<B> {
            positions: Tensor::from_inner(t.positions),
            queries: Tensor::from_inner(t.queries),
            top: Tensor::from_inner(t.top),
            other: Tensor::from_inner(t.other),
            valid: Tensor::from_inner(t.valid),
        };
        for (l, layer) in layers {
            // Targets shared by the layouts unless they depend on the layout (hard negatives
            // from its own code, group targets for the group layout).
            let own_targets = |layout: Layout| {
                c.targets.hard_fraction > 0.0 || (c.targets.group && layout == Layout::Group)
            };
            let shared = c.layouts.iter().any(|&x| !own_targets(x)).then(|| {
                let mut rng =
                    StdRng::seed_from_u64(mix_seed(c.seed, &[0x7a, self.step as u64, l as u64]));
                let cfg = TargetConfig {
                    group: false,
                    ..c.targets
                };
                lift(Targets::sample(&layer.q, &layer.k, &cfg, &mut rng, None))
            });
            phases.mark("targets");
            let keys = Tensor::<B, 3>::from_inner(layer.k.clone());
            for (li, &layout) in c.layouts.iter().enumerate() {
                let st = &mut self.state[li][l];
                let group_targets = c.targets.group && layout == Layout::Group;
                let targets = match (&shared, own_targets(layout)) {
                    (Some(t), false) => t.clone(),
                    _ => {
                        let mut rng = StdRng::seed_from_u64(mix_seed(
                            c.seed,
                            &[0x7b, self.step as u64, l as u64, layout as u64],
                        ));
                        let cfg = TargetConfig {
                            group: group_targets,
                            ..c.targets
                        };
                        // The current code's scores, for hard negatives (no gradient).
                        let nets = &st.nets;
                        let current = |queries: &Tensor<B::InnerBackend, 3>| {
                            let (cq, ck) = nets.soft_codes(queries.clone(), layer.k.clone(), gamma);
                            unit_scores(draft_scores(cq, ck), group_targets, layer.k.dims()[0])
                        };
                        let t = Targets::sample(&layer.q, &layer.k, &cfg, &mut rng, Some(&current));
                        phases.mark("targets");
                        lift(t)
                    }
                };
                let params: Vec<Tensor<B, 3>> = st
                    .nets
                    .params()
                    .into_iter()
                    .map(|p| Tensor::from_inner(p).require_grad())
                    .collect();
                let nets = LayerNets::from_params(st.nets.query.replicas, params.clone());
                let queries = targets.queries.clone();
                let (cq, ck) = match ops {
                    TrainOps::Custom => nets.soft_codes(queries, keys.clone(), gamma),
                    TrainOps::TensorOps => {
                        nets.soft_codes_by_tensor_ops(queries, keys.clone(), gamma)
                    }
                };
                phases.mark("codes");
                let scores = unit_scores(draft_scores(cq, ck), group_targets, layer.k.dims()[0]);
                phases.mark("scores");
                let out = match ops {
                    TrainOps::Custom => loss(scores, &targets, c.beta, c.margin),
                    TrainOps::TensorOps => loss_by_tensor_ops(scores, &targets, c.beta, c.margin),
                };
                phases.mark("loss");
                let grads = out.loss.clone().backward();
                phases.mark("backward");
                let grads: Vec<_> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| match p.grad(&grads) {
                        // The learned-linear ablation holds W1 and b1 (parts 0, 1 of each net).
                        Some(g) if !(c.linear && i % 4 < 2) => g,
                        _ => p.clone().inner().zeros_like(),
                    })
                    .collect();
                let mut inner: Vec<_> = params.into_iter().map(|p| p.inner()).collect();
                let grad_norm = optimizer.step(
                    &mut inner,
                    &grads,
                    &mut st.moments,
                    st.anchors.as_deref(),
                    lr,
                    self.step + 1,
                );
                st.nets = LayerNets::from_params(st.nets.query.replicas, inner);
                phases.mark("adamw");
                // Statistics stay on the device until the step ends (one sync per step).
                stats.push(Tensor::cat(
                    vec![
                        out.loss.inner(),
                        out.wrong.inner(),
                        out.valid.inner(),
                        grad_norm,
                    ],
                    0,
                ));
                records.push(StepRecord {
                    step: self.step,
                    layout,
                    layer: l,
                    loss: 0.0,
                    misordered: 0.0,
                    valid_pairs: 0.0,
                    grad_norm: 0.0,
                    lr,
                });
            }
        }
        if !stats.is_empty() {
            let values = Tensor::cat(stats, 0)
                .into_data()
                .convert::<f64>()
                .to_vec::<f64>()
                .expect("f64 data");
            for (r, v) in records.iter_mut().zip(values.chunks_exact(4)) {
                r.loss = v[0];
                r.misordered = if v[2] > 0.0 { v[1] / v[2] } else { 0.0 };
                r.valid_pairs = v[2];
                r.grad_norm = v[3];
            }
        }
        phases.mark("read statistics");
        if phases.on {
            self.profile_ms = phases.totals.iter().map(|&(n, t)| (n, t * 1e3)).collect();
        }
        self.step += 1;
        Ok(records)
    }

    /// The current hash of one layout as a file.
    pub fn hash_file(&self, layout: Layout) -> Result<HashFile, TrainError> {
        let li = self
            .config
            .layouts
            .iter()
            .position(|&x| x == layout)
            .ok_or_else(|| {
                TrainError::Config(format!("layout {} was not trained", layout.name()))
            })?;
        let training = serde_json::json!({ "config": self.config, "steps_done": self.step });
        let (bits, _) = self.config.code_bits(self.dims.head_dim)?;
        let mut header = HashHeader::new(&self.dims.model, &self.llama, layout, bits, training);
        header.model_fingerprint = self.model_fingerprint.clone();
        if !self.config.layers.is_empty() {
            header.trained_layers = Some(self.config.layers.clone());
        }
        Ok(HashFile {
            header,
            layers: self.state[li]
                .iter()
                .map(|s| s.nets.to_layer_hash())
                .collect::<Result<_, _>>()?,
        })
    }

    /// Writes parameters, moments and the step count atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let mut tensors = Tensors::new();
        for (li, layout) in self.config.layouts.iter().enumerate() {
            for (l, st) in self.state[li].iter().enumerate() {
                let p = st.nets.params();
                for (i, t) in p.iter().enumerate() {
                    let name = format!("{}.{l}.{i}", layout.name());
                    tensors.insert(format!("{name}.p"), to_host(t));
                    tensors.insert(format!("{name}.m"), to_host(&st.moments[i].m));
                    tensors.insert(format!("{name}.v"), to_host(&st.moments[i].v));
                }
            }
        }
        let meta =
            serde_json::json!({ "config": self.config, "dims": self.dims, "step": self.step });
        tensor_file::write_checkpoint(
            path,
            &tensors,
            HashMap::from([("trainer".into(), meta.to_string())]),
        )
    }

    /// The step count of a checkpoint's metadata, after checking it was written by a trainer of
    /// this config and model.
    fn checkpoint_meta(
        &self,
        path: &Path,
        meta: &HashMap<String, String>,
    ) -> Result<usize, TrainError> {
        let bad = |why: String| TrainError::HashFile {
            path: path.display().to_string(),
            why,
        };
        let meta: serde_json::Value = meta
            .get("trainer")
            .and_then(|m| serde_json::from_str(m).ok())
            .ok_or_else(|| bad("not a training checkpoint".into()))?;
        let config: TrainConfig = serde_json::from_value(meta["config"].clone())
            .map_err(|e| bad(format!("unreadable config ({e})")))?;
        let dims: Dims = serde_json::from_value(meta["dims"].clone())
            .map_err(|e| bad(format!("unreadable dims ({e})")))?;
        if dims != self.dims {
            return Err(bad(format!("written for {:?}, not {:?}", dims, self.dims)));
        }
        if config != self.config {
            return Err(bad(
                "written with other training flags; rerun with the same flags or delete it to start over".into(),
            ));
        }
        let step = meta["step"]
            .as_u64()
            .ok_or_else(|| bad("no step count".into()))?;
        if step > self.config.steps as u64 {
            return Err(bad(format!(
                "step {step} is beyond the run's {} steps",
                self.config.steps
            )));
        }
        Ok(step as usize)
    }

    /// Checks that the checkpoint at `path` (or its predecessor), if there is one, can be
    /// resumed by this trainer: a run directory of another config is refused before anything in
    /// it is touched.
    pub fn check_resumable(&self, path: &Path) -> Result<(), TrainError> {
        if !path.exists() && !tensor_file::previous_path(path).exists() {
            return Ok(());
        }
        tensor_file::read_or_previous(path, &|meta| self.checkpoint_meta(path, meta).map(|_| ()))
            .map(|_| ())
    }

    /// Continues from a checkpoint written by a trainer with the same config and model. A
    /// damaged newest checkpoint (torn, cut short, checksum mismatch) gives way to the previous
    /// one ([`tensor_file::read_or_previous`]); the returned note then says why, for the caller
    /// to show.
    pub fn resume(&mut self, path: &Path) -> Result<Option<String>, TrainError> {
        let ckpt = tensor_file::read_or_previous(path, &|meta| {
            self.checkpoint_meta(path, meta).map(|_| ())
        })?;
        let note = ckpt
            .fell_back
            .as_ref()
            .map(|why| format!("{why}; resuming from {}", ckpt.path.display()));
        self.restore(&ckpt.path, &ckpt.metadata, ckpt.tensors)?;
        Ok(note)
    }

    /// Milliseconds per phase of the last step run with [`Self::profile`] set (empty before).
    pub fn profile_ms(&self) -> &[(&'static str, f64)] {
        &self.profile_ms
    }

    /// Takes parameters, moments and the step count from a checkpoint's contents (read from
    /// `path`, named in errors), after checking they belong to this trainer.
    pub fn restore(
        &mut self,
        path: &Path,
        metadata: &HashMap<String, String>,
        mut tensors: Tensors,
    ) -> Result<(), TrainError> {
        let bad = |why: String| TrainError::HashFile {
            path: path.display().to_string(),
            why,
        };
        let step = self.checkpoint_meta(path, metadata)?;
        // Everything is read and checked before anything is replaced: a bad checkpoint leaves
        // the trainer as it was.
        let mut restored = Vec::new();
        for (li, layout) in self.config.layouts.iter().enumerate() {
            for (l, st) in self.state[li].iter().enumerate() {
                let shapes: Vec<[usize; 3]> = st.nets.params().iter().map(|t| t.dims()).collect();
                let mut params = Vec::new();
                let mut moments = Vec::new();
                for (i, shape) in shapes.iter().enumerate() {
                    let name = format!("{}.{l}.{i}", layout.name());
                    let mut get = |suffix: &str| -> Result<Tensor<B::InnerBackend, 3>, TrainError> {
                        let (s, v) = tensors
                            .remove(&format!("{name}.{suffix}"))
                            .ok_or_else(|| bad(format!("tensor {name}.{suffix} is missing")))?;
                        if s != shape {
                            return Err(bad(format!(
                                "tensor {name}.{suffix} has shape {s:?}, expected {shape:?}"
                            )));
                        }
                        Ok(Tensor::from_data(
                            burn::tensor::TensorData::new(v, *shape),
                            &self.device,
                        ))
                    };
                    params.push(get("p")?);
                    moments.push(Moments {
                        m: get("m")?,
                        v: get("v")?,
                    });
                }
                restored.push((li, l, params, moments));
            }
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(bad(format!(
                "tensor {extra} belongs to no network of this run"
            )));
        }
        for (li, l, params, moments) in restored {
            let st = &mut self.state[li][l];
            st.nets = LayerNets::from_params(st.nets.query.replicas, params);
            st.moments = moments;
        }
        self.step = step;
        Ok(())
    }
}

/// Device-synchronised wall time per named phase (only when profiling).
struct Phases<B: Backend> {
    on: bool,
    device: B::Device,
    last: std::time::Instant,
    totals: Vec<(&'static str, f64)>,
}

impl<B: Backend> Phases<B> {
    fn new(on: bool, device: &B::Device) -> Self {
        if on {
            let _ = B::sync(device);
        }
        Self {
            on,
            device: device.clone(),
            last: std::time::Instant::now(),
            totals: Vec::new(),
        }
    }

    fn mark(&mut self, name: &'static str) {
        if !self.on {
            return;
        }
        let _ = B::sync(&self.device);
        let dt = self.last.elapsed().as_secs_f64();
        self.last = std::time::Instant::now();
        match self.totals.iter_mut().find(|(n, _)| *n == name) {
            Some(t) => t.1 += dt,
            None => self.totals.push((name, dt)),
        }
    }
}

fn to_host<B: Backend>(t: &Tensor<B, 3>) -> (Vec<usize>, Vec<f32>) {
    (
        t.dims().to_vec(),
        t.to_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data"),
    )
}
