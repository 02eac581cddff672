//! Whole-model checks on SYNTHETIC random weights: the Burn model against a plain-Rust reference
//! forward, cached decode against full prefill, and a ragged batch against each prompt alone.

use burn::tensor::Tensor;

use crate::backend::LlamaBackend;
use crate::config::LlamaConfig;
use crate::model::Llama;
use crate::test_util::{tiny_config, SyntheticWeights, TestBackend};

/// y = W·x for W stored [out, in].
fn matvec(w: &[f32], x: &[f32]) -> Vec<f32> {
    w.chunks_exact(x.len())
        .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
        .collect()
}

fn rms_norm(x: &[f32], g: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter()
        .zip(g)
        .map(|(v, g)| (*v as f64 * r) as f32 * g)
        .collect()
}

fn rope(x: &mut [f32], pos: usize, theta: f64) {
    let d = x.len();
    for i in 0..d / 2 {
        let a = pos as f64 * theta.powf(-(2.0 * i as f64) / d as f64);
        let (c, s) = (a.cos() as f32, a.sin() as f32);
        let (x1, x2) = (x[i], x[i + d / 2]);
        x[i] = x1 * c - x2 * s;
        x[i + d / 2] = x2 * c + x1 * s;
    }
}

/// Plain-Rust forward of the whole model: logits for every position.
fn reference_logits(c: &LlamaConfig, w: &SyntheticWeights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let get = |n: &str| &w.0[n].1;
    let (h, d, g) = (c.hidden_size, c.head_dim, c.group_size());
    let emb = get("model.embed_tokens.weight");
    let mut x: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| emb[t as usize * h..(t as usize + 1) * h].to_vec())
        .collect();
    for l in 0..c.num_hidden_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let xn: Vec<Vec<f32>> = x
            .iter()
            .map(|v| rms_norm(v, get(&p("input_layernorm.weight")), c.rms_norm_eps))
            .collect();
        let mut qs = Vec::new();
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        for (t, v) in xn.iter().enumerate() {
            let mut q = matvec(get(&p("self_attn.q_proj.weight")), v);
            let mut k = matvec(get(&p("self_attn.k_proj.weight")), v);
            q.chunks_exact_mut(d)
                .for_each(|hq| rope(hq, t, c.rope_theta));
            k.chunks_exact_mut(d)
                .for_each(|hk| rope(hk, t, c.rope_theta));
            qs.push(q);
            ks.push(k);
            vs.push(matvec(get(&p("self_attn.v_proj.weight")), v));
        }
        for t in 0..x.len() {
            let mut attn = vec![0.0f32; c.num_attention_heads * d];
            for head in 0..c.num_attention_heads {
                let kvh = head / g;
                let q = &qs[t][head * d..(head + 1) * d];
                let scores: Vec<f64> = (0..=t)
                    .map(|j| {
                        q.iter()
                            .zip(&ks[j][kvh * d..(kvh + 1) * d])
                            .map(|(a, b)| (a * b) as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for i in 0..d {
                        attn[head * d + i] += (ej / z) as f32 * vs[j][kvh * d + i];
                    }
                }
            }
            let o = matvec(get(&p("self_attn.o_proj.weight")), &attn);
            x[t].iter_mut().zip(o).for_each(|(a, b)| *a += b);
            let xn2 = rms_norm(
                &x[t],
                get(&p("post_attention_layernorm.weight")),
                c.rms_norm_eps,
            );
            let gate = matvec(get(&p("mlp.gate_proj.weight")), &xn2);
            let up = matvec(get(&p("mlp.up_proj.weight")), &xn2);
            let act: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(get(&p("mlp.down_proj.weight")), &act);
            x[t].iter_mut().zip(down).for_each(|(a, b)| *a += b);
        }
    }
    x.iter()
        .map(|v| matvec(emb, &rms_norm(v, get("model.norm.weight"), c.rms_norm_eps)))
        .collect()
}

fn load(c: &LlamaConfig, w: &SyntheticWeights) -> Llama<TestBackend> {
    Llama::load(c, w, c.max_position_embeddings, &Default::default()).unwrap()
}

fn to_vec<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}: element {i}: {x} vs {y} (tolerance {tol} × {scale})"
        );
    }
}

#[test]
fn model_matches_plain_rust_reference() {
    let c = tiny_config();
    let w = SyntheticWeights::new(&c, 1);
    let model = load(&c, &w);
    let tokens: Vec<u32> = vec![3, 17, 42, 0, 9, 9, 31];
    let mut cache = model.new_cache(1, 16).unwrap();
    let got = to_vec(
        model.logits(
            model
                .forward(std::slice::from_ref(&tokens), &mut cache)
                .unwrap(),
        ),
    );
    let want: Vec<f32> = reference_logits(&c, &w, &tokens).concat();
    // f32 throughout; differences come from summation order only.
    assert_close(&got, &want, 1e-4, "logits vs reference");
}

#[test]
fn cached_decode_equals_full_forward() {
    let c = tiny_config();
    let model = load(&c, &SyntheticWeights::new(&c, 2));
    let tokens: Vec<u32> = vec![5, 1, 44, 12, 7, 30, 2, 19, 8];
    let mut full_cache = model.new_cache(1, 16).unwrap();
    let full = to_vec(
        model.logits(
            model
                .forward(std::slice::from_ref(&tokens), &mut full_cache)
                .unwrap(),
        ),
    );
    let mut cache = model.new_cache(1, 16).unwrap();
    // Prefill 4 tokens, then a chunk of 2, then one token at a time.
    let mut got = to_vec(model.logits(model.forward(&[tokens[..4].to_vec()], &mut cache).unwrap()));
    got.extend(to_vec(model.logits(
        model.forward(&[tokens[4..6].to_vec()], &mut cache).unwrap(),
    )));
    for &t in &tokens[6..] {
        got.extend(to_vec(model.forward_last(&[vec![t]], &mut cache).unwrap()));
    }
    assert_close(&got, &full, 1e-5, "incremental vs full");
    assert_eq!(cache.lens, vec![tokens.len()]);
}

#[test]
fn ragged_batch_equals_each_prompt_alone() {
    let c = tiny_config();
    let model = load(&c, &SyntheticWeights::new(&c, 3));
    let a: Vec<u32> = vec![4, 8, 15, 16, 23, 42];
    let b: Vec<u32> = vec![11, 2];
    let alone = |p: &[u32], next: u32| {
        let mut cache = model.new_cache(1, 12).unwrap();
        let mut out = to_vec(model.forward_last(&[p.to_vec()], &mut cache).unwrap());
        out.extend(to_vec(
            model.forward_last(&[vec![next]], &mut cache).unwrap(),
        ));
        out
    };
    let mut cache = model.new_cache(2, 12).unwrap();
    let first = to_vec(
        model
            .forward_last(&[a.clone(), b.clone()], &mut cache)
            .unwrap(),
    );
    let second = to_vec(model.forward_last(&[vec![1], vec![3]], &mut cache).unwrap());
    let v = c.vocab_size;
    let batch_a = [&first[..v], &second[..v]].concat();
    let batch_b = [&first[v..], &second[v..]].concat();
    assert_close(&batch_a, &alone(&a, 1), 1e-5, "sequence a");
    assert_close(&batch_b, &alone(&b, 3), 1e-5, "sequence b");
    assert_eq!(cache.lens, vec![7, 3]);
}

#[test]
fn overflow_and_bad_tokens_are_errors() {
    let c = tiny_config();
    let model = load(&c, &SyntheticWeights::new(&c, 4));
    let mut cache = model.new_cache(1, 4).unwrap();
    let err = model.forward(&[vec![1; 5]], &mut cache).unwrap_err();
    assert!(err.to_string().contains("exceeds the context"), "{err}");
    let err = model.forward(&[vec![50]], &mut cache).unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    assert!(model.new_cache(1, 65).is_err());
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let c = tiny_config();
    let mut w = SyntheticWeights::new(&c, 5);
    w.0.remove("model.layers.1.mlp.up_proj.weight");
    let err = Llama::<TestBackend>::load(&c, &w, 64, &Default::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "tensor model.layers.1.mlp.up_proj.weight is missing from the checkpoint"
    );
    let mut w = SyntheticWeights::new(&c, 5);
    w.0.get_mut("model.norm.weight").unwrap().0 = vec![23];
    let err = Llama::<TestBackend>::load(&c, &w, 64, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.norm.weight: expected shape [24], found [23]"),
        "{err}"
    );
}

#[test]
fn nan_and_inf_weights_are_refused_by_name() {
    let c = tiny_config();
    for (bad, shown) in [(f32::NAN, "NaN"), (f32::NEG_INFINITY, "-inf")] {
        let mut w = SyntheticWeights::new(&c, 5);
        w.0.get_mut("model.layers.1.self_attn.k_proj.weight")
            .unwrap()
            .1[7] = bad;
        let err = Llama::<TestBackend>::load(&c, &w, 64, &Default::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("tensor model.layers.1.self_attn.k_proj.weight holds {shown} at index 7: the checkpoint is damaged")
        );
    }
}

#[test]
fn cache_size_is_checked_against_free_memory() {
    let c = tiny_config();
    let per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;
    assert_eq!(
        crate::model::kv_cache_bytes(&c, 3, 10, 4),
        Some(3 * 10 * per_token as u64)
    );
    assert_eq!(crate::model::kv_cache_bytes(&c, usize::MAX, 2, 4), None);
    assert!(crate::model::check_free_memory(100, None).is_ok());
    assert!(crate::model::check_free_memory(100, Some(100)).is_ok());
    let err = crate::model::check_free_memory(3 << 30, Some(1 << 30))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("K/V cache needs 3.00 GiB (3221225472 bytes), the GPU has 1.00 GiB (1073741824 bytes) free"),
        "{err}"
    );
    // The CPU backend cannot tell: nothing is refused in advance.
    assert_eq!(TestBackend::free_memory(&Default::default()), None);
    let model = load(&c, &SyntheticWeights::new(&c, 4));
    assert!(model.new_cache(2, 64).is_ok());
}
