//! Checkpoint tensor names: the HF names are ours; GGUF names map onto them in one table.

/// Whole-model tensors: (HF name, GGUF name).
const MODEL_NAMES: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// Per-layer tensors: `model.layers.{i}.<HF>` ↔ `blk.{i}.<GGUF>`.
const LAYER_NAMES: [(&str, &str); 12] = [
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// Maps a name through the tables; `forward` = HF → GGUF.
fn translate(name: &str, forward: bool) -> Option<String> {
    let pick = |(h, g): &(&'static str, &'static str)| if forward { (*h, *g) } else { (*g, *h) };
    if let Some((_, to)) = MODEL_NAMES.iter().map(pick).find(|(from, _)| *from == name) {
        return Some(to.to_string());
    }
    let (prefix_from, prefix_to) = if forward {
        ("model.layers.", "blk.")
    } else {
        ("blk.", "model.layers.")
    };
    let (layer, field) = name.strip_prefix(prefix_from)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    LAYER_NAMES
        .iter()
        .map(pick)
        .find(|(from, _)| *from == field)
        .map(|(_, to)| format!("{prefix_to}{layer}.{to}"))
}

/// HF name → GGUF name, or None for names GGUF does not have.
pub fn hf_to_gguf(hf: &str) -> Option<String> {
    translate(hf, true)
}

/// GGUF name → HF name (inverse of [`hf_to_gguf`]).
pub fn gguf_to_hf(gguf: &str) -> Option<String> {
    translate(gguf, false)
}

/// Names that checkpoints carry but the model computes itself.
pub fn is_ignorable(hf_or_gguf: &str) -> bool {
    hf_or_gguf.ends_with("rotary_emb.inv_freq") || hf_or_gguf == "rope_freqs.weight"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in [
            "self_attn.q_proj.weight",
            "mlp.down_proj.weight",
            "self_attn.v_proj.bias",
        ] {
            let hf = format!("model.layers.17.{f}");
            let g = hf_to_gguf(&hf).unwrap();
            assert_eq!(gguf_to_hf(&g).as_deref(), Some(hf.as_str()));
        }
        assert_eq!(
            hf_to_gguf("model.layers.3.self_attn.q_proj.weight").unwrap(),
            "blk.3.attn_q.weight"
        );
        assert_eq!(gguf_to_hf("output.weight").unwrap(), "lm_head.weight");
        assert!(gguf_to_hf("blk.0.unknown.weight").is_none());
    }
}
