//! The hash network and the Bradley–Terry loss as Burn ops with their own backward (Burn's
//! custom-op pattern, BURN.md): cube backends run the CubeCL kernels of `spotlight_kernels`
//! (`hash_train`, `bradley_terry`) — the hash forward is the decode kernel with a softsign
//! epilogue — and the cpu backend runs their plain-Rust references. `Autodiff<B>` records one node
//! per op whose backward calls the backend's backward kernel; the weight gradients are reductions
//! over rows, done with the backend's matmul.
//!
//! The same math written with plain Burn tensor ops ([`crate::HashMlp::soft_codes_by_tensor_ops`],
//! [`crate::bradley_terry::loss_by_tensor_ops`]) is the cross-check of both.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{element::BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use spotlight_kernels::bradley_terry::PairBuffers;
use spotlight_kernels::hash_pack::MlpBuffers;
use spotlight_kernels::hash_train::RowGradBuffers;
use spotlight_kernels::reference::bradley_terry::{self as bt_ref, PairSet};
use spotlight_kernels::reference::{self, MlpParams};

/// Hash weights as primitives, in the order w1 [nets, d, d], b1 [nets, 1, d], w2, b2.
pub type Weights<B> = [FloatTensor<B>; 4];

/// The sampled pairs of the loss: top and other key indices [rows, P], valid [rows, P].
#[derive(Debug, Clone)]
pub struct Pairs<B: Backend> {
    pub top: IntTensor<B>,
    pub other: IntTensor<B>,
    pub valid: FloatTensor<B>,
    pub beta: f64,
    pub margin: f64,
}

/// Backends that train the hash.
pub trait TrainBackend: Backend {
    /// What a training step uses by default: the custom ops where they are kernels; on cpu the
    /// tensor-op math, as Burn's multi-threaded GEMM outruns the scalar f64 references (measured:
    /// 0.20 vs 0.83 s per step, 2 layers × 512 tokens, `benches/results/train_ops_cpu_*.json`).
    const DEFAULT_OPS: crate::TrainOps;

    /// softsign(γ·h2(x)) for x [nets, rows, d].
    fn hash_soft(x: FloatTensor<Self>, w: Weights<Self>, gamma: f64) -> FloatTensor<Self>;

    /// The backward's per-row quantities for ∂L/∂c = `grad`: [∂x, ∂a1, ∂h2, h1], each
    /// [nets, rows, d] (∂W1 = xᵀ·∂a1, ∂W2 = h1ᵀ·∂h2; the biases' are row sums).
    fn hash_soft_backward(
        x: FloatTensor<Self>,
        w: Weights<Self>,
        gamma: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4];

    /// Row sums [3, rows] of the loss over scores [rows, n]: Σ valid·softplus(−diff),
    /// Σ valid·[diff < 0], Σ valid, with diff = β·(s_top − s_other) − m.
    fn bt_rows(scores: FloatTensor<Self>, pairs: Pairs<Self>) -> FloatTensor<Self>;

    /// Pair weights [rows, P] w = g·valid·β·σ(−diff) for `grad`, the gradient of the row sums
    /// [3, rows] (only its first row carries any): ∂L/∂s_top = −w, ∂L/∂s_other = +w.
    fn bt_pair_grads(
        scores: FloatTensor<Self>,
        pairs: Pairs<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Tensor-level [`TrainBackend::hash_soft`].
pub fn hash_soft<B: TrainBackend>(
    x: Tensor<B, 3>,
    w: [Tensor<B, 3>; 4],
    gamma: f64,
) -> Tensor<B, 3> {
    let w = w.map(|t| t.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(B::hash_soft(
        x.into_primitive().tensor(),
        w,
        gamma,
    )))
}

/// Tensor-level [`TrainBackend::bt_rows`]: scores [rows, n], pairs [rows, P] → [3, rows].
pub fn bt_rows<B: TrainBackend>(
    scores: Tensor<B, 2>,
    top: Tensor<B, 2, Int>,
    other: Tensor<B, 2, Int>,
    valid: Tensor<B, 2>,
    (beta, margin): (f64, f64),
) -> Tensor<B, 2> {
    let pairs = Pairs {
        top: top.into_primitive(),
        other: other.into_primitive(),
        valid: valid.into_primitive().tensor(),
        beta,
        margin,
    };
    Tensor::from_primitive(TensorPrimitive::Float(B::bt_rows(
        scores.into_primitive().tensor(),
        pairs,
    )))
}

// ---------------------------------------------------------------------------------------------
// Host path: the plain-Rust references (the cpu backend, and cube backends on shapes or element
// types the kernels do not take).

mod host {
    use super::*;

    pub fn floats<B: Backend, const D: usize>(t: FloatTensor<B>) -> (Vec<f64>, [usize; D]) {
        let t = Tensor::<B, D>::from_primitive(TensorPrimitive::Float(t));
        let dims = t.dims();
        let v = t
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("converted to f64");
        (v, dims)
    }

    /// Key indices as u32; negative ones become u32::MAX (outside every row: skipped).
    pub fn indices<B: Backend>(t: IntTensor<B>) -> Vec<u32> {
        let t = Tensor::<B, 2, Int>::from_primitive(t);
        let v = t
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("converted to i64");
        v.into_iter()
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect()
    }

    pub fn tensor<B: Backend, const D: usize>(
        v: Vec<f64>,
        shape: [usize; D],
        device: &B::Device,
    ) -> FloatTensor<B> {
        Tensor::<B, D>::from_data(TensorData::new(v, shape), device)
            .into_primitive()
            .tensor()
    }

    fn weights<B: Backend>(w: Weights<B>) -> [Vec<f64>; 4] {
        w.map(|t| floats::<B, 3>(t).0)
    }

    fn params<'a>(nets: usize, d: usize, w: &'a [Vec<f64>; 4]) -> MlpParams<'a> {
        MlpParams {
            nets,
            d,
            w1: &w[0],
            b1: &w[1],
            w2: &w[2],
            b2: &w[3],
        }
    }

    pub fn hash_soft<B: Backend>(x: FloatTensor<B>, w: Weights<B>, gamma: f64) -> FloatTensor<B> {
        let device = B::float_device(&x);
        let (x, [nets, rows, d]) = floats::<B, 3>(x);
        let w = weights::<B>(w);
        let c = reference::hash_soft(&params(nets, d, &w), &x, rows, gamma);
        tensor::<B, 3>(c, [nets, rows, d], &device)
    }

    pub fn hash_soft_backward<B: Backend>(
        x: FloatTensor<B>,
        w: Weights<B>,
        gamma: f64,
        grad: FloatTensor<B>,
    ) -> [FloatTensor<B>; 4] {
        let device = B::float_device(&x);
        let (x, shape) = floats::<B, 3>(x);
        let [nets, rows, d] = shape;
        let (grad, _) = floats::<B, 3>(grad);
        let w = weights::<B>(w);
        let g = reference::hash_soft_backward(&params(nets, d, &w), &x, rows, gamma, &grad);
        [g.x, g.a1, g.h2, g.h1].map(|v| tensor::<B, 3>(v, shape, &device))
    }

    /// Runs `f` on the reference's view of the loss inputs.
    pub fn with_pairs<B: Backend, T>(
        scores: FloatTensor<B>,
        pairs: Pairs<B>,
        f: impl FnOnce(&PairSet) -> T,
    ) -> T {
        let (scores, [rows, n]) = floats::<B, 2>(scores);
        let top = indices::<B>(pairs.top);
        let other = indices::<B>(pairs.other);
        let (valid, [_, p]) = floats::<B, 2>(pairs.valid);
        f(&PairSet {
            scores: &scores,
            top: &top,
            other: &other,
            valid: &valid,
            rows,
            n,
            pairs: p,
            beta: pairs.beta,
            margin: pairs.margin,
        })
    }

    pub fn bt_rows<B: Backend>(scores: FloatTensor<B>, pairs: Pairs<B>) -> FloatTensor<B> {
        let device = B::float_device(&scores);
        let (v, rows) = with_pairs(scores, pairs, |set| (bt_ref::bt_rows(set), set.rows));
        tensor::<B, 2>(v, [3, rows], &device)
    }

    pub fn bt_pair_grads<B: Backend>(
        scores: FloatTensor<B>,
        pairs: Pairs<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let device = B::float_device(&scores);
        let (grad, _) = floats::<B, 2>(grad);
        let (v, shape) = with_pairs(scores, pairs, |set| {
            (
                bt_ref::bt_pair_grads(set, &grad[..set.rows]),
                [set.rows, set.pairs],
            )
        });
        tensor::<B, 2>(v, shape, &device)
    }
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> TrainBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    const DEFAULT_OPS: crate::TrainOps = crate::TrainOps::TensorOps;

    fn hash_soft(x: FloatTensor<Self>, w: Weights<Self>, gamma: f64) -> FloatTensor<Self> {
        host::hash_soft::<Self>(x, w, gamma)
    }

    fn hash_soft_backward(
        x: FloatTensor<Self>,
        w: Weights<Self>,
        gamma: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4] {
        host::hash_soft_backward::<Self>(x, w, gamma, grad)
    }

    fn bt_rows(scores: FloatTensor<Self>, pairs: Pairs<Self>) -> FloatTensor<Self> {
        host::bt_rows::<Self>(scores, pairs)
    }

    fn bt_pair_grads(
        scores: FloatTensor<Self>,
        pairs: Pairs<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        host::bt_pair_grads::<Self>(scores, pairs, grad)
    }
}

// ---------------------------------------------------------------------------------------------
// Cube backends: the kernels.

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

fn new_f32<R: CubeRuntime>(like: &CubeTensor<R>, shape: Vec<usize>) -> CubeTensor<R> {
    let handle = like
        .client
        .empty(shape.iter().product::<usize>().max(1) * 4);
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        handle,
        DType::F32,
    )
}

/// The kernels read f32 (widths they cannot take are refused by the launch, which then falls back
/// to the host: one place, `MlpBuffers::check`, says which widths run).
fn all_f32<R: CubeRuntime>(x: &CubeTensor<R>, w: &[CubeTensor<R>; 4]) -> bool {
    x.dtype == DType::F32 && w.iter().all(|t| t.dtype == DType::F32)
}

fn mlp<R: CubeRuntime>(w: &[CubeTensor<R>; 4]) -> MlpBuffers<'_> {
    let shape = w[0].meta.shape();
    MlpBuffers {
        nets: shape[0],
        d: shape[1],
        w1: &w[0].handle,
        b1: &w[1].handle,
        w2: &w[2].handle,
        b2: &w[3].handle,
    }
}

fn pair_kernel_fits<R: CubeRuntime>(
    scores: &CubeTensor<R>,
    pairs: &Pairs<Cube<R, impl FloatElement, impl IntElement, impl BoolElement>>,
) -> bool {
    scores.dtype == DType::F32
        && pairs.valid.dtype == DType::F32
        && [&pairs.top, &pairs.other]
            .iter()
            .all(|t| matches!(t.dtype, DType::I32 | DType::U32))
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> TrainBackend
    for Cube<R, F, I, BT>
{
    const DEFAULT_OPS: crate::TrainOps = crate::TrainOps::Custom;

    fn hash_soft(x: FloatTensor<Self>, w: Weights<Self>, gamma: f64) -> FloatTensor<Self> {
        if !all_f32(&x, &w) {
            return host::hash_soft::<Self>(x, w, gamma);
        }
        let x = into_contiguous(x);
        let w = w.map(into_contiguous);
        let rows = x.meta.shape()[1];
        let out = new_f32(&x, x.meta.shape().to_vec());
        match spotlight_kernels::hash_train::hash_soft::<R>(
            &x.client,
            &mlp(&w),
            &x.handle,
            rows,
            gamma as f32,
            &out.handle,
        ) {
            Ok(()) => out,
            // A width the kernel does not take, or a tile over the device's shared memory.
            Err(_) => host::hash_soft::<Self>(x, w, gamma),
        }
    }

    fn hash_soft_backward(
        x: FloatTensor<Self>,
        w: Weights<Self>,
        gamma: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4] {
        if !all_f32(&x, &w) || grad.dtype != DType::F32 {
            return host::hash_soft_backward::<Self>(x, w, gamma, grad);
        }
        let x = into_contiguous(x);
        let w = w.map(into_contiguous);
        let grad = into_contiguous(grad);
        let rows = x.meta.shape()[1];
        let out: [CubeTensor<R>; 4] = std::array::from_fn(|_| new_f32(&x, x.meta.shape().to_vec()));
        let bufs = RowGradBuffers {
            x: &out[0].handle,
            a1: &out[1].handle,
            h2: &out[2].handle,
            h1: &out[3].handle,
        };
        match spotlight_kernels::hash_train::hash_soft_backward::<R>(
            &x.client,
            &mlp(&w),
            &x.handle,
            rows,
            gamma as f32,
            &grad.handle,
            bufs,
        ) {
            Ok(()) => out,
            // A width the kernel does not take, or a tile over the device's shared memory.
            Err(_) => host::hash_soft_backward::<Self>(x, w, gamma, grad),
        }
    }

    fn bt_rows(scores: FloatTensor<Self>, pairs: Pairs<Self>) -> FloatTensor<Self> {
        if !pair_kernel_fits(&scores, &pairs) {
            return host::bt_rows::<Self>(scores, pairs);
        }
        on_pair_buffers(scores, pairs, |set, scores| {
            let out = new_f32(scores, vec![3, set.rows]);
            spotlight_kernels::bradley_terry::bt_rows::<R>(&scores.client, set, &out.handle)
                .expect("shapes checked by the tensors");
            out
        })
    }

    fn bt_pair_grads(
        scores: FloatTensor<Self>,
        pairs: Pairs<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !pair_kernel_fits(&scores, &pairs) || grad.dtype != DType::F32 {
            return host::bt_pair_grads::<Self>(scores, pairs, grad);
        }
        let grad = into_contiguous(grad);
        on_pair_buffers(scores, pairs, |set, scores| {
            let out = new_f32(scores, vec![set.rows, set.pairs]);
            spotlight_kernels::bradley_terry::bt_pair_grads::<R>(
                &scores.client,
                set,
                &grad.handle,
                &out.handle,
            )
            .expect("shapes checked by the tensors");
            out
        })
    }
}

/// Runs `run` on the loss inputs as kernel arguments (contiguous, alive for the call).
fn on_pair_buffers<R, F, I, BT, T>(
    scores: CubeTensor<R>,
    pairs: Pairs<Cube<R, F, I, BT>>,
    run: impl FnOnce(&PairBuffers, &CubeTensor<R>) -> T,
) -> T
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let scores = into_contiguous(scores);
    let (top, other, valid) = (
        into_contiguous(pairs.top),
        into_contiguous(pairs.other),
        into_contiguous(pairs.valid),
    );
    let set = PairBuffers {
        scores: &scores.handle,
        top: &top.handle,
        other: &other.handle,
        valid: &valid.handle,
        rows: scores.meta.shape()[0],
        n: scores.meta.shape()[1],
        pairs: top.meta.shape()[1],
        beta: pairs.beta as f32,
        margin: pairs.margin as f32,
    };
    run(&set, &scores)
}

// ---------------------------------------------------------------------------------------------
// Autodiff: one node per op, its backward on the inner backend's backward kernels.

#[derive(Debug)]
struct HashSoftBackward;

impl<B: TrainBackend> Backward<B, 5> for HashSoftBackward {
    type State = (FloatTensor<B>, Weights<B>, f64);

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w, gamma) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let device = B::float_device(&x);
        let dtype = x.dtype();
        let shape = x.shape();
        let (nets, rows) = (shape[0], shape[1]);
        let [gx, ga1, gh2, h1] = B::hash_soft_backward(x.clone(), w, gamma, grad);
        // Reductions over rows as products: ∂W = inputᵀ·∂out, ∂b = 1ᵀ·∂out.
        let ones = B::float_ones(Shape::new([nets, 1, rows]), &device, dtype.into());
        let t = |a: FloatTensor<B>| B::float_swap_dims(a, 1, 2);
        let [px, pw1, pb1, pw2, pb2] = ops.parents;
        if let Some(node) = pw1 {
            grads.register::<B>(node.id, B::float_matmul(t(x), ga1.clone()));
        }
        if let Some(node) = pb1 {
            grads.register::<B>(node.id, B::float_matmul(ones.clone(), ga1));
        }
        if let Some(node) = pw2 {
            grads.register::<B>(node.id, B::float_matmul(t(h1), gh2.clone()));
        }
        if let Some(node) = pb2 {
            grads.register::<B>(node.id, B::float_matmul(ones, gh2));
        }
        if let Some(node) = px {
            grads.register::<B>(node.id, gx);
        }
    }
}

#[derive(Debug)]
struct BtRowsBackward;

impl<B: TrainBackend> Backward<B, 1> for BtRowsBackward {
    type State = (FloatTensor<B>, Pairs<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (scores, pairs) = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        let Some(parent) = parent else { return };
        let shape = scores.shape();
        let device = B::float_device(&scores);
        let dtype = scores.dtype();
        let n = shape[1] as i64;
        let w = B::bt_pair_grads(scores, pairs.clone(), grad);
        // Keys repeat within a row: scatter-add. Indices outside the row carry w = 0 and are
        // clamped only so the scatter stays in bounds.
        let clamp = |i: IntTensor<B>| B::int_clamp(i, 0.into(), (n - 1).max(0).into());
        let zeros = B::float_zeros(shape, &device, dtype.into());
        let g = B::float_scatter_add(1, zeros, clamp(pairs.other), w.clone());
        let g = B::float_scatter_add(1, g, clamp(pairs.top), B::float_neg(w));
        grads.register::<B>(parent.id, g);
    }
}

fn inner_pairs<B: Backend, C: CheckpointStrategy>(p: Pairs<Autodiff<B, C>>) -> Pairs<B> {
    Pairs {
        top: p.top,
        other: p.other,
        valid: p.valid.primitive,
        beta: p.beta,
        margin: p.margin,
    }
}

impl<B: TrainBackend, C: CheckpointStrategy> TrainBackend for Autodiff<B, C> {
    const DEFAULT_OPS: crate::TrainOps = B::DEFAULT_OPS;

    fn hash_soft(x: FloatTensor<Self>, w: Weights<Self>, gamma: f64) -> FloatTensor<Self> {
        let nodes = [
            x.node.clone(),
            w[0].node.clone(),
            w[1].node.clone(),
            w[2].node.clone(),
            w[3].node.clone(),
        ];
        let w = w.map(|t| t.primitive);
        match HashSoftBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::hash_soft(x.primitive.clone(), w.clone(), gamma);
                prep.finish((x.primitive, w, gamma), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::hash_soft(x.primitive, w, gamma)),
        }
    }

    fn hash_soft_backward(
        x: FloatTensor<Self>,
        w: Weights<Self>,
        gamma: f64,
        grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4] {
        // Not differentiated twice: computed on the inner backend, untracked.
        let w = w.map(|t| t.primitive);
        B::hash_soft_backward(x.primitive, w, gamma, grad.primitive)
            .map(<Self as AutodiffBackend>::from_inner)
    }

    fn bt_rows(scores: FloatTensor<Self>, pairs: Pairs<Self>) -> FloatTensor<Self> {
        let pairs = inner_pairs(pairs);
        match BtRowsBackward
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::bt_rows(scores.primitive.clone(), pairs.clone());
                prep.finish((scores.primitive, pairs), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::bt_rows(scores.primitive, pairs)),
        }
    }

    fn bt_pair_grads(
        scores: FloatTensor<Self>,
        pairs: Pairs<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <Self as AutodiffBackend>::from_inner(B::bt_pair_grads(
            scores.primitive,
            inner_pairs(pairs),
            grad.primitive,
        ))
    }
}
