//! The decoder's weights as device buffers: taken from a Burn model (sharing its buffers, except
//! the fused QKV which is one concatenation) or generated on the device (synthetic, for
//! benchmarks at shapes whose real weights we do not have).

use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::cubecl::server::Handle;
use spotlight_kernels::device::upload_f32;
use spotlight_kernels::fill::random_uniform_scaled;

use crate::config::LlamaConfig;

/// One decoder layer. Norm weights are f32; projections are `[out][in]` of the decoder's element
/// type.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub attention_norm: Handle,
    /// q, k and v stacked: `[(q_heads + 2·kv_heads)·d][hidden]`.
    pub qkv: Handle,
    pub o: Handle,
    pub mlp_norm: Handle,
    pub gate: Handle,
    pub up: Handle,
    pub down: Handle,
}

#[derive(Debug, Clone)]
pub struct DecoderWeights {
    pub config: LlamaConfig,
    /// `[vocab][hidden]`
    pub embed: Handle,
    pub layers: Vec<LayerWeights>,
    pub norm: Handle,
    /// `[vocab][hidden]` (the embedding's buffer when tied).
    pub lm_head: Handle,
    /// True for generated weights: everything measured with them is labelled synthetic.
    pub synthetic: bool,
}

impl DecoderWeights {
    /// Deterministic random weights of element type `E` for `config`, generated on the device:
    /// projections uniform in ±1/√in (so activations stay O(1)), norms 1. SYNTHETIC.
    pub fn synthetic<R: Runtime, E: Float + CubeElement>(
        client: &ComputeClient<R>,
        config: &LlamaConfig,
        seed: u32,
    ) -> Self {
        let c = config;
        let (h, d) = (c.hidden_size, c.head_dim);
        let qkv_rows = (c.num_attention_heads + 2 * c.num_key_value_heads) * d;
        let mut next = seed;
        let mut matrix = |rows: usize, cols: usize| {
            next = next.wrapping_add(0x9E37_79B9);
            random_uniform_scaled::<R, E>(client, rows * cols, next, 1.0 / (cols as f32).sqrt())
        };
        let ones = upload_f32(client, &vec![1.0; h]);
        let layers = (0..c.num_hidden_layers)
            .map(|_| LayerWeights {
                attention_norm: ones.clone(),
                qkv: matrix(qkv_rows, h),
                o: matrix(h, c.num_attention_heads * d),
                mlp_norm: ones.clone(),
                gate: matrix(c.intermediate_size, h),
                up: matrix(c.intermediate_size, h),
                down: matrix(h, c.intermediate_size),
            })
            .collect();
        let embed = matrix(c.vocab_size, h);
        let lm_head = if c.tie_word_embeddings {
            embed.clone()
        } else {
            matrix(c.vocab_size, h)
        };
        Self {
            config: config.clone(),
            embed,
            layers,
            norm: ones,
            lm_head,
            synthetic: true,
        }
    }

    /// Bytes of weights one decode step streams (every projection and the LM head once) for
    /// `config` with elements of `element_bytes`.
    pub fn bytes(config: &LlamaConfig, element_bytes: usize) -> usize {
        let c = config;
        let d = c.head_dim;
        let per_layer = c.hidden_size
            * ((c.num_attention_heads + 2 * c.num_key_value_heads) * d
                + c.num_attention_heads * d
                + 3 * c.intermediate_size);
        element_bytes * (c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size)
    }
}

type Cube<R, F, I, BT> = burn_cubecl::CubeBackend<R, F, I, BT>;

/// The device buffer behind a Burn tensor (made contiguous first; no copy when it already is).
pub(crate) fn handle_of<R, F, I, BT, const D: usize>(
    t: &burn::tensor::Tensor<Cube<R, F, I, BT>, D>,
) -> Handle
where
    R: burn_cubecl::CubeRuntime,
    F: burn_cubecl::FloatElement,
    I: burn_cubecl::IntElement,
    BT: burn_cubecl::element::BoolElement,
{
    burn_cubecl::kernel::into_contiguous(t.clone().into_primitive().tensor()).handle
}

impl DecoderWeights {
    /// The weights of a Burn model on a cube backend. Projections share the model's buffers;
    /// q, k and v are concatenated once; norm weights are copied as f32. Models with biases are
    /// not supported here (None: generation keeps the tensor path).
    pub fn from_model<R, F, I, BT>(model: &crate::Llama<Cube<R, F, I, BT>>) -> Option<Self>
    where
        R: burn_cubecl::CubeRuntime,
        F: burn_cubecl::FloatElement,
        I: burn_cubecl::IntElement,
        BT: burn_cubecl::element::BoolElement,
    {
        use burn::tensor::Tensor;
        let has_bias = model.lm_head.bias.is_some()
            || model.layers.iter().any(|b| {
                let a = &b.attention;
                let m = &b.mlp;
                [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
                    .iter()
                    .any(|l| l.bias.is_some())
            });
        if has_bias {
            return None;
        }
        let device = model.embed.device();
        let client = R::client(&device);
        let gamma = |t: &Tensor<Cube<R, F, I, BT>, 1>| {
            let v = t.to_data().convert::<f32>().to_vec::<f32>().ok()?;
            Some(upload_f32(&client, &v))
        };
        let mut layers = Vec::with_capacity(model.layers.len());
        for b in &model.layers {
            let a = &b.attention;
            let qkv = Tensor::cat(
                vec![a.q.weight.clone(), a.k.weight.clone(), a.v.weight.clone()],
                0,
            );
            layers.push(LayerWeights {
                attention_norm: gamma(&b.attention_norm.gamma)?,
                qkv: handle_of(&qkv),
                o: handle_of(&a.o.weight),
                mlp_norm: gamma(&b.mlp_norm.gamma)?,
                gate: handle_of(&b.mlp.gate.weight),
                up: handle_of(&b.mlp.up.weight),
                down: handle_of(&b.mlp.down.weight),
            });
        }
        Some(Self {
            config: model.config.clone(),
            embed: handle_of(&model.embed),
            layers,
            norm: gamma(&model.norm.gamma)?,
            lm_head: handle_of(&model.lm_head.weight),
            synthetic: false,
        })
    }
}
