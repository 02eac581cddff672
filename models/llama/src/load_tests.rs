//! The same SYNTHETIC weights through every loader give the same logits: in memory, HF
//! safetensors, and GGUF with llama.cpp's q/k row permutation (which the loader must undo).

use burn::tensor::Tensor;

use crate::gguf::{self, GgmlType, Value};
use crate::load::{GgufSource, SafetensorsSource, WeightSource};
use crate::model::Llama;
use crate::names::hf_to_gguf;
use crate::test_util::{tiny_config, SyntheticWeights, TestBackend};

fn logits(source: &(impl WeightSource + ?Sized)) -> Vec<f32> {
    let c = tiny_config();
    let model = Llama::<TestBackend>::load(&c, source, 32, &Default::default()).unwrap();
    let mut cache = model.new_cache(1, 8).unwrap();
    let h: Tensor<TestBackend, 3> = model.forward(&[vec![1, 2, 3, 4, 5]], &mut cache).unwrap();
    model.logits(h).into_data().to_vec::<f32>().unwrap()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// llama.cpp's converter: rows of each head reordered from halves [2, d/2] to pairs [d/2, 2].
fn permute_like_llama_cpp(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    let d = data.len() / row_len / heads;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..d / 2 {
                let (src, dst) = (h * d + j * (d / 2) + i, h * d + i * 2 + j);
                out[dst * row_len..(dst + 1) * row_len]
                    .copy_from_slice(&data[src * row_len..(src + 1) * row_len]);
            }
        }
    }
    out
}

#[test]
fn safetensors_and_gguf_load_the_same_model() {
    let c = tiny_config();
    let w = SyntheticWeights::new(&c, 11);
    let want = logits(&w);
    let dir = tempfile::tempdir().unwrap();

    // HF safetensors: one shard, plain names.
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        w.0.iter()
            .map(|(n, (s, d))| (n.clone(), s.clone(), f32_bytes(d)))
            .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, &None, &dir.path().join("model.safetensors"))
        .unwrap();
    assert_eq!(
        logits(&SafetensorsSource::open(dir.path()).unwrap()),
        want,
        "safetensors"
    );

    // GGUF: GGUF names, q/k rows permuted as llama.cpp stores them for arch llama.
    let tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)> =
        w.0.iter()
            .map(|(n, (s, d))| {
                let data = if n.contains("q_proj") {
                    permute_like_llama_cpp(d, c.num_attention_heads, s[1])
                } else if n.contains("k_proj") {
                    permute_like_llama_cpp(d, c.num_key_value_heads, s[1])
                } else {
                    d.clone()
                };
                (
                    hf_to_gguf(n).unwrap(),
                    s.clone(),
                    GgmlType::F32,
                    f32_bytes(&data),
                )
            })
            .collect();
    let t: Vec<(&str, Vec<usize>, GgmlType, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, ty, b)| (n.as_str(), s.clone(), *ty, b.clone()))
        .collect();
    let path = dir.path().join("tiny.gguf");
    gguf::write(
        &path,
        &[("general.architecture", Value::String("llama".into()))],
        &t,
    )
    .unwrap();
    let file = gguf::GgufFile::open(&path).unwrap();
    let got = logits(&GgufSource::new(&file, &c));
    assert_eq!(got, want, "gguf with un-permuted q/k");
}
