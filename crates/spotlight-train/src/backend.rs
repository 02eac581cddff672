//! The backend operation training needs beyond Burn's own: the true top keys of each query row
//! (Burn's `topk` took ~2.5 s per layer for 9×1024 rows × k = 81 on the H200 — measured —
//! and sorts on the host elsewhere). Cube backends run `spotlight_kernels::top_keys`; the cpu
//! backend runs its plain-Rust reference.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{element::BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use spotlight_kernels::reference;

/// Top keys of rows of logits; see [`top_keys`].
pub trait TrainBackend: Backend {
    /// logits: [rows, n] f32; positions: [T] (row r sees its first positions[r % T] + 1 values).
    /// Returns (top [rows, k] ascending, padded with 0; count [rows]; threshold [rows]).
    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>);
}

/// Tensor-level wrapper: (top [rows, k], count [rows], threshold [rows]).
pub fn top_keys<B: TrainBackend>(
    logits: Tensor<B, 2>,
    positions: Tensor<B, 1, Int>,
    k: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>, Tensor<B, 1>) {
    let (top, count, thr) = B::top_keys(
        logits.into_primitive().tensor(),
        positions.into_primitive(),
        k,
    );
    (
        Tensor::from_primitive(top),
        Tensor::from_primitive(count),
        Tensor::from_primitive(TensorPrimitive::Float(thr)),
    )
}

/// The reference on host data, for backends without the kernel.
fn top_keys_on_host<B: Backend>(
    logits: FloatTensor<B>,
    positions: IntTensor<B>,
    k: usize,
) -> (IntTensor<B>, IntTensor<B>, FloatTensor<B>) {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let positions = Tensor::<B, 1, Int>::from_primitive(positions);
    let device = logits.device();
    let [rows, n] = logits.dims();
    let values = logits.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let pos: Vec<u32> = positions
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|p| p as u32)
        .collect();
    let (top, count, thr) = reference::top_keys(&values, n, &pos, k);
    let int = |v: Vec<u32>| v.into_iter().map(|x| x as i64).collect::<Vec<_>>();
    (
        Tensor::<B, 2, Int>::from_data(TensorData::new(int(top), [rows, k]), &device)
            .into_primitive(),
        Tensor::<B, 1, Int>::from_data(TensorData::new(int(count), [rows]), &device)
            .into_primitive(),
        Tensor::<B, 1>::from_data(TensorData::new(thr, [rows]), &device)
            .into_primitive()
            .tensor(),
    )
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> TrainBackend
    for CubeBackend<R, F, I, BT>
{
    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>) {
        // The kernel reads f32 logits and 32-bit positions.
        if logits.dtype != DType::F32 || !matches!(positions.dtype, DType::I32 | DType::U32) {
            return top_keys_on_host::<Self>(logits, positions, k);
        }
        let logits = into_contiguous(logits);
        let positions = into_contiguous(positions);
        let (rows, n) = (logits.meta.shape()[0], logits.meta.shape()[1]);
        let t = positions.meta.shape()[0];
        let client = logits.client.clone();
        let new = |shape: Vec<usize>, dtype: DType| {
            let handle = client.empty(shape.iter().product::<usize>() * 4);
            CubeTensor::new_contiguous(
                client.clone(),
                logits.device.clone(),
                Shape::from(shape),
                handle,
                dtype,
            )
        };
        let top = new(vec![rows, k], positions.dtype);
        let count = new(vec![rows], positions.dtype);
        let thr = new(vec![rows], DType::F32);
        spotlight_kernels::top_keys::top_keys::<R>(
            &client,
            &logits.handle,
            rows,
            n,
            &positions.handle,
            t,
            k,
            &top.handle,
            &count.handle,
            &thr.handle,
        )
        .expect("k ≤ n checked by the caller");
        (top, count, thr)
    }
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> TrainBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>) {
        top_keys_on_host::<Self>(logits, positions, k)
    }
}
