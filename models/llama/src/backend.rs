//! The backend operations the model needs beyond Burn's own: implemented per backend, so each
//! can use its fastest path (Burn's pattern for custom ops: an extension trait on `Backend`).

use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::{element::BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use rayon::prelude::*;

/// Operations of a backend that can run a Llama-family model.
pub trait LlamaBackend: Backend {
    /// y = x·Wᵀ with x: [rows, in] and W stored as HF does, [out, in]; returns [rows, out].
    fn projection(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// The same product through Burn's matmul: the reference and the fallback.
pub fn linear_by_matmul<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(x, B::float_transpose(weight))
}

/// Tensor-level wrapper of [`LlamaBackend::projection`].
pub fn projection<B: LlamaBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(B::projection(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    )))
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> LlamaBackend
    for CubeBackend<R, F, I, BT>
{
    fn projection(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_by_matmul::<Self>(x, weight)
    }
}

/// Rows of x above which a packed GEMM (Burn's matmul) beats one dot product per output.
const CPU_DOT_MAX_ROWS: usize = 16;

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> LlamaBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn projection(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        // At decode (few rows) ndarray's GEMM repacks all of W on every call — 6× slower than
        // streaming W once. Dot products over W's contiguous rows read it exactly once.
        match (&x, &weight) {
            (NdArrayTensor::F32(xs), NdArrayTensor::F32(ws))
                if xs.shape()[0] <= CPU_DOT_MAX_ROWS =>
            {
                let (xv, wv) = (xs.view(), ws.view());
                match (xv.as_slice(), wv.as_slice()) {
                    (Some(xd), Some(wd)) => {
                        let (rows, d_in, d_out) = (xv.shape()[0], xv.shape()[1], wv.shape()[0]);
                        let y = gemv_rows(xd, wd, rows, d_in, d_out);
                        let arr =
                            ndarray::ArcArray::from_shape_vec(ndarray::IxDyn(&[rows, d_out]), y)
                                .expect("shape matches data");
                        NdArrayTensor::from(arr)
                    }
                    _ => linear_by_matmul::<Self>(x, weight),
                }
            }
            _ => linear_by_matmul::<Self>(x, weight),
        }
    }
}

/// y[r, o] = Σ_i x[r, i]·w[o, i], parallel over blocks of outputs.
fn gemv_rows(x: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    const BLOCK: usize = 64;
    let mut y_t = vec![0f32; d_out * rows]; // [out, rows]: each block writes a contiguous range
    y_t.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(blk, out)| {
            for (j, w_row) in w[blk * BLOCK * d_in..]
                .chunks_exact(d_in)
                .take(out.len() / rows)
                .enumerate()
            {
                for r in 0..rows {
                    out[j * rows + r] = dot(&x[r * d_in..(r + 1) * d_in], w_row);
                }
            }
        });
    if rows == 1 {
        return y_t;
    }
    let mut y = vec![0f32; rows * d_out];
    for o in 0..d_out {
        for r in 0..rows {
            y[r * d_out + o] = y_t[o * rows + r];
        }
    }
    y
}

/// Dot product with 8 independent accumulators so the compiler vectorises it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{random_vec, TestBackend};
    use burn::tensor::TensorData;

    #[test]
    fn cpu_linear_matches_matmul_at_awkward_shapes() {
        let device = Default::default();
        for (rows, d_in, d_out) in [
            (1, 7, 5),
            (3, 64, 130),
            (16, 33, 65),
            (17, 9, 3),
            (1, 576, 1),
        ] {
            let x = random_vec(rows * d_in, 1, 1.0);
            let w = random_vec(d_out * d_in, 2, 1.0);
            let xt = Tensor::<TestBackend, 2>::from_data(TensorData::new(x, [rows, d_in]), &device);
            let wt =
                Tensor::<TestBackend, 2>::from_data(TensorData::new(w, [d_out, d_in]), &device);
            let fast = projection(xt.clone(), wt.clone())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            let reference = xt
                .matmul(wt.transpose())
                .into_data()
                .to_vec::<f32>()
                .unwrap();
            for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
                // f32, different summation order: relative 1e-5 of the row's magnitude.
                assert!(
                    (a - b).abs() <= 1e-5 * (d_in as f32).sqrt() * b.abs().max(1.0),
                    "[{rows},{d_in},{d_out}] #{i}: {a} vs {b}"
                );
            }
        }
    }
}
