//! Checkpoint tensor names: the HF names are ours; GGUF names map onto them in one table.

/// HF name → GGUF name, or None for names GGUF does not have.
pub fn hf_to_gguf(hf: &str) -> Option<String> {
    let fixed = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = fixed.iter().find(|(h, _)| *h == hf) {
        return Some(g.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, field) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    // Map layers.[i].<HF field> -> blk.[i].<GGUF field>
    let per_layer = [
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
    per_layer
        .iter()
        .find(|(h, _)| *h == field)
        .map(|(_, g)| format!("blk.{layer}.{g}"))
}

/// GGUF name → HF name (inverse of [`hf_to_gguf`]).
pub fn gguf_to_hf(gguf: &str) -> Option<String> {
    let fixed = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, h)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return Some(h.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, field) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let candidate = [
        "input_layernorm.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.q_proj.bias",
        "self_attn.k_proj.bias",
        "self_attn.v_proj.bias",
        "self_attn.o_proj.weight",
        "post_attention_layernorm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
    ]
    .iter()
    .map(|f| format!("model.layers.{layer}.{f}"))
    .find(|h| hf_to_gguf(h).as_deref() == Some(&format!("blk.{layer}.{field}")));
    candidate
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
