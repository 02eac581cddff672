//! `spotlight info`: what a checkpoint is, without loading its weights onto a device.

use spotlight_llama::Checkpoint;

use crate::error::Result;
use crate::model_args::ModelArgs;

pub fn run(args: ModelArgs) -> Result<()> {
    let path = args.path()?;
    let ckpt = Checkpoint::open(&path)?;
    let c = ckpt.config()?;
    let tok = ckpt.tokenizer()?;
    tok.check_model_vocab(c.vocab_size)?;
    let per_layer = 2 * c.hidden_size
        + c.hidden_size * c.head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
        + 3 * c.hidden_size * c.intermediate_size;
    let params = c.num_hidden_layers * per_layer
        + c.vocab_size * c.hidden_size * if c.tie_word_embeddings { 1 } else { 2 }
        + c.hidden_size;
    println!("model        {}", path.display());
    if let Checkpoint::Gguf { file, .. } = &ckpt {
        let name = file
            .metadata
            .get("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        println!(
            "name         {name} (GGUF v{}, {} tensors)",
            file.version,
            file.tensors.len()
        );
    }
    println!("parameters   {:.1} M", params as f64 / 1e6);
    println!("layers       {}", c.num_hidden_layers);
    println!(
        "hidden       {} (MLP {})",
        c.hidden_size, c.intermediate_size
    );
    println!(
        "heads        {} query / {} KV, head_dim {}",
        c.num_attention_heads, c.num_key_value_heads, c.head_dim
    );
    println!(
        "context      {} tokens, RoPE θ {}{}",
        c.max_position_embeddings,
        c.rope_theta,
        if c.rope_scaling.is_some() {
            " (scaled)"
        } else {
            ""
        }
    );
    println!(
        "vocabulary   {} (tokenizer {}), tied head: {}",
        c.vocab_size,
        tok.vocab_size(),
        c.tie_word_embeddings
    );
    println!(
        "chat format  {:?}, stop ids {:?}",
        tok.template, tok.stop_ids
    );
    // What hash files record to know their model (`spotlight hash stamp`).
    println!("fingerprint  {}", ckpt.fingerprint()?);
    Ok(())
}
