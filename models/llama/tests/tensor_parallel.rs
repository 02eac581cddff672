//! The tensor-parallel split (`tensor_parallel::TpPlan`) on the REAL SmolLM2-135M checkpoint and on
//! one layer of the Llama-3-8B shape (SYNTHETIC weights): every tensor split and re-joined gives
//! back the original exactly, and the ranks' partial attention and MLP outputs, summed as the
//! all-reduce would, equal the unsplit layer's.

use std::path::PathBuf;

use spotlight_llama::config::LlamaConfig;
use spotlight_llama::gguf::GgufFile;
use spotlight_llama::load::{GgufSource, HostTensor, WeightSource};
use spotlight_llama::synthetic::random_vec;
use spotlight_llama::tensor_parallel::TpPlan;

fn smollm2_path() -> PathBuf {
    let home = std::env::var_os("SPOTLIGHT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/spotlight"));
    home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// y = W x for W [out, in] (f64 accumulation).
fn matvec((shape, w): &HostTensor, x: &[f64]) -> Vec<f64> {
    let cols = shape[1];
    assert_eq!(cols, x.len());
    w.chunks(cols)
        .map(|row| row.iter().zip(x).map(|(a, b)| *a as f64 * b).sum())
        .collect()
}

fn add_bias(mut y: Vec<f64>, bias: Option<&HostTensor>) -> Vec<f64> {
    if let Some((_, b)) = bias {
        for (v, b) in y.iter_mut().zip(b) {
            *v += *b as f64;
        }
    }
    y
}

/// A lookup of tensors by name.
type Lookup = Box<dyn Fn(&str) -> Option<HostTensor>>;

/// The layer's tensors, by their short field name.
struct Layer {
    get: Lookup,
}

impl Layer {
    fn w(&self, field: &str) -> HostTensor {
        (self.get)(field).unwrap_or_else(|| panic!("missing {field}"))
    }
}

/// MLP output down(silu(gate x) ⊙ up x).
fn mlp(layer: &Layer, x: &[f64]) -> Vec<f64> {
    let g = matvec(&layer.w("mlp.gate_proj.weight"), x);
    let u = matvec(&layer.w("mlp.up_proj.weight"), x);
    let h: Vec<f64> = g
        .iter()
        .zip(&u)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    matvec(&layer.w("mlp.down_proj.weight"), &h)
}

/// One decode step of attention: the query from `x`, keys and values from `cache` (RoPE left out:
/// it acts inside each head, which the split never cuts), o_proj applied to the heads held.
fn attention(
    layer: &Layer,
    x: &[f64],
    cache: &[Vec<f64>],
    head_dim: usize,
    group: usize,
) -> Vec<f64> {
    let q = add_bias(
        matvec(&layer.w("self_attn.q_proj.weight"), x),
        (layer.get)("self_attn.q_proj.bias").as_ref(),
    );
    let kv = |f: &str, b: &str| -> Vec<Vec<f64>> {
        cache
            .iter()
            .map(|c| add_bias(matvec(&layer.w(f), c), (layer.get)(b).as_ref()))
            .collect()
    };
    let (k, v) = (
        kv("self_attn.k_proj.weight", "self_attn.k_proj.bias"),
        kv("self_attn.v_proj.weight", "self_attn.v_proj.bias"),
    );
    let heads = q.len() / head_dim;
    let mut out = vec![0.0; q.len()];
    for h in 0..heads {
        let (qh, kvh) = (&q[h * head_dim..(h + 1) * head_dim], h / group);
        let logits: Vec<f64> = k
            .iter()
            .map(|kj| {
                let kh = &kj[kvh * head_dim..(kvh + 1) * head_dim];
                qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f64>() / (head_dim as f64).sqrt()
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        for (j, l) in logits.iter().enumerate() {
            let p = (l - m).exp() / z;
            for c in 0..head_dim {
                out[h * head_dim + c] += p * v[j][kvh * head_dim + c];
            }
        }
    }
    matvec(&layer.w("self_attn.o_proj.weight"), &out)
}

fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-30);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-9 * scale, "{name}[{i}]: {g} vs {w}");
    }
}

/// Split/re-join of every tensor, then the partial sums of one layer, for each `tp`.
fn check(
    config: &LlamaConfig,
    names: &[String],
    get: &dyn Fn(&str) -> Option<HostTensor>,
    layer: usize,
    tps: &[usize],
) {
    let prefix = format!("model.layers.{layer}.");
    let whole = Layer {
        get: {
            let tensors: Vec<(String, HostTensor)> = names
                .iter()
                .filter_map(|n| Some((n.strip_prefix(&prefix)?.to_string(), get(n)?)))
                .collect();
            Box::new(move |f: &str| tensors.iter().find(|(n, _)| n == f).map(|(_, t)| t.clone()))
        },
    };
    let h = config.hidden_size;
    let x: Vec<f64> = random_vec(h, 7, 1.0).into_iter().map(f64::from).collect();
    let cache: Vec<Vec<f64>> = (0..5)
        .map(|j| {
            random_vec(h, 100 + j, 1.0)
                .into_iter()
                .map(f64::from)
                .collect()
        })
        .collect();
    let group = config.num_attention_heads / config.num_key_value_heads;
    let (mlp_want, attn_want) = (
        mlp(&whole, &x),
        attention(&whole, &x, &cache, config.head_dim, group),
    );
    for &tp in tps {
        let plan = TpPlan::new(config, tp).unwrap();
        for name in names {
            let Some(t) = get(name) else { continue };
            let parts: Vec<HostTensor> =
                (0..tp).map(|r| plan.shard(name, &t, r).unwrap()).collect();
            assert_eq!(
                plan.unshard(name, &parts).unwrap(),
                t,
                "{name} at --tp {tp}"
            );
        }
        let (mut mlp_sum, mut attn_sum) = (vec![0.0; h], vec![0.0; h]);
        for rank in 0..tp {
            let shards: Vec<(String, HostTensor)> = names
                .iter()
                .filter_map(|n| {
                    let f = n.strip_prefix(&prefix)?.to_string();
                    Some((f, plan.shard(n, &get(n)?, rank).unwrap()))
                })
                .collect();
            let part = Layer {
                get: Box::new(move |f: &str| {
                    shards.iter().find(|(n, _)| n == f).map(|(_, t)| t.clone())
                }),
            };
            for (s, p) in mlp_sum.iter_mut().zip(mlp(&part, &x)) {
                *s += p;
            }
            for (s, p) in
                attn_sum
                    .iter_mut()
                    .zip(attention(&part, &x, &cache, config.head_dim, group))
            {
                *s += p;
            }
        }
        assert_close(&format!("mlp at --tp {tp}"), &mlp_sum, &mlp_want);
        assert_close(&format!("attention at --tp {tp}"), &attn_sum, &attn_want);
    }
}

#[test]
fn smollm2_splits_and_rejoins_and_its_partial_sums_are_the_layer() {
    let gguf = GgufFile::open(&smollm2_path()).expect("the default model (spotlight fetch)");
    let config = LlamaConfig::from_gguf(&gguf).unwrap();
    let source = GgufSource::new(&gguf, &config);
    let mut names = source.names();
    names.sort();
    let get = |n: &str| source.get(n).unwrap();
    // 3 KV heads: --tp 2 is the uneven split (2 + 1 heads), 3 one head each.
    check(&config, &names, &get, 5, &[1, 2, 3]);
    assert!(TpPlan::new(&config, 4).is_err(), "more ranks than KV heads");
}

#[test]
fn llama3_8b_shape_layer_splits_and_its_partial_sums_are_the_layer() {
    // One layer of the Llama-3-8B shape, SYNTHETIC weights (the whole model would be 32 GB).
    let config = LlamaConfig::preset("llama3-8b").unwrap();
    let (h, q, kv, f) = (
        config.hidden_size,
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
        config.intermediate_size,
    );
    let p = "model.layers.0.";
    let shapes = [
        ("input_layernorm.weight", vec![h]),
        ("self_attn.q_proj.weight", vec![q, h]),
        ("self_attn.k_proj.weight", vec![kv, h]),
        ("self_attn.v_proj.weight", vec![kv, h]),
        ("self_attn.o_proj.weight", vec![h, q]),
        ("mlp.gate_proj.weight", vec![f, h]),
        ("mlp.up_proj.weight", vec![f, h]),
        ("mlp.down_proj.weight", vec![h, f]),
    ];
    let tensors: Vec<(String, HostTensor)> = shapes
        .into_iter()
        .enumerate()
        .map(|(i, (n, s))| {
            let len = s.iter().product();
            (format!("{p}{n}"), (s, random_vec(len, i as u64 + 1, 0.05)))
        })
        .collect();
    let names: Vec<String> = tensors.iter().map(|(n, _)| n.clone()).collect();
    let get = |n: &str| tensors.iter().find(|(m, _)| m == n).map(|(_, t)| t.clone());
    check(&config, &names, &get, 0, &[1, 2, 4, 8]);
}
