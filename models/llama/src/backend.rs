//! The backend operations the model needs beyond Burn's own: implemented per backend, so each
//! can use its fastest path (Burn's pattern for custom ops: an extension trait on `Backend`).
//!
//! `top_keys` (the k largest of each row of scores) serves hash training and key selection:
//! Burn's `topk` took ~2.5 s per layer for 9×1024 rows × k = 81 on the H200 (measured), so cube
//! backends run `spotlight_kernels::top_keys` and the cpu backend its plain-Rust reference.

use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{element::BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use rayon::prelude::*;
use spotlight_kernels::reference;

use crate::cache::KvCache;
use crate::error::LlamaError;
use crate::fast::{handle_of, Decoder, DecoderWeights, FastDecode, SparseDecode};
use crate::model::Llama;
use crate::selector::SelectRows;

/// Operations of a backend that can run a Llama-family model.
pub trait LlamaBackend: Backend {
    /// y = x·Wᵀ with x: [rows, in] and W stored as HF does, [out, in]; returns [rows, out].
    fn projection(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;

    /// logits: [rows, n] f32; positions: [T] (row r sees its first positions[r % T] + 1 values);
    /// row_k: [T] the top count of each position (None: k for every row; each is capped at k).
    /// Returns (top [rows, k] ascending, padded with 0; count [rows] = min(k_r, visible);
    /// threshold [rows] = the k_r-th largest visible value, −3.4e38 when every visible one is
    /// taken).
    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        row_k: Option<IntTensor<Self>>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>);

    /// Dense causal attention of a call's rows over the cache, on the backend's own kernel
    /// (flash style: online softmax, no score matrix), or None where it has none (the caller then
    /// uses tensor ops). q: [batch, len, heads, head_dim] post-RoPE; k, v: the cache
    /// [batch, kv_heads, cap, head_dim] with this call's rows written; row (b, t) sees keys
    /// 0..=starts[b] + t (padding rows, t ≥ new_lens[b], repeat the last real row). Returns
    /// [batch, len, heads, head_dim].
    fn causal_attention(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _starts: &[usize],
        _new_lens: &[usize],
    ) -> Option<FloatTensor<Self>> {
        None
    }

    /// The fused decode engine over a prefilled cache ([`crate::fast`]), or None where this
    /// backend or this model has none (generation then decodes with tensor ops). The default:
    /// none.
    fn fast_decoder(
        _model: &Llama<Self>,
        _cache: &KvCache<Self>,
    ) -> Result<Option<Box<dyn FastDecode>>, LlamaError> {
        Ok(None)
    }

    /// Bytes a new allocation on `device` can still get, where the backend can tell (CUDA);
    /// None elsewhere (host memory, wgpu), where allocations are not checked in advance.
    fn free_memory(_device: &Self::Device) -> Option<u64> {
        None
    }
}

/// Free bytes on CUDA device `index` (the driver's count: other processes' use included).
fn cuda_free_bytes(index: usize) -> Option<u64> {
    use cudarc::driver::result;
    result::init().ok()?;
    let dev = result::device::get(index as i32).ok()?;
    // SAFETY: `dev` is a valid device; its primary context is the one CubeCL already retained,
    // made current on this thread for the query and released again (the count stays ≥ 1).
    unsafe {
        let ctx = result::primary_ctx::retain(dev).ok()?;
        result::ctx::set_current(ctx).ok()?;
        let free = result::mem_get_info().ok().map(|(free, _)| free as u64);
        let _ = result::primary_ctx::release(dev);
        free
    }
}

/// The same product through Burn's matmul: the reference and the fallback.
pub fn linear_by_matmul<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(x, B::float_transpose(weight))
}

/// Tensor-level wrapper of [`LlamaBackend::causal_attention`].
pub fn causal_attention<B: LlamaBackend>(
    q: Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    (starts, new_lens): (&[usize], &[usize]),
) -> Option<Tensor<B, 4>> {
    B::causal_attention(
        q.into_primitive().tensor(),
        k.clone().into_primitive().tensor(),
        v.clone().into_primitive().tensor(),
        starts,
        new_lens,
    )
    .map(|t| Tensor::from_primitive(TensorPrimitive::Float(t)))
}

/// Tensor-level wrapper of [`LlamaBackend::projection`].
pub fn projection<B: LlamaBackend>(x: Tensor<B, 2>, weight: Tensor<B, 2>) -> Tensor<B, 2> {
    Tensor::from_primitive(TensorPrimitive::Float(B::projection(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
    )))
}

/// Tensor-level wrapper of [`LlamaBackend::top_keys`]: (top [rows, k], count [rows], threshold [rows]).
pub fn top_keys<B: LlamaBackend>(
    logits: Tensor<B, 2>,
    positions: Tensor<B, 1, Int>,
    k: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>, Tensor<B, 1>) {
    top_keys_per_row(logits, positions, None, k)
}

/// [`top_keys`] with a top count per position (`row_k` [T], each capped at k).
pub fn top_keys_per_row<B: LlamaBackend>(
    logits: Tensor<B, 2>,
    positions: Tensor<B, 1, Int>,
    row_k: Option<Tensor<B, 1, Int>>,
    k: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>, Tensor<B, 1>) {
    let (top, count, thr) = B::top_keys(
        logits.into_primitive().tensor(),
        positions.into_primitive(),
        row_k.map(|r| r.into_primitive()),
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
    row_k: Option<IntTensor<B>>,
    k: usize,
) -> (IntTensor<B>, IntTensor<B>, FloatTensor<B>) {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let device = logits.device();
    let [rows, n] = logits.dims();
    let values = logits.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let host = |t: IntTensor<B>| -> Vec<u32> {
        Tensor::<B, 1, Int>::from_primitive(t)
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|p| p as u32)
            .collect()
    };
    let pos = host(positions);
    let row_k = row_k.map(host);
    let (top, count, thr) = reference::top_keys(&values, n, &pos, row_k.as_deref(), k);
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

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> LlamaBackend
    for CubeBackend<R, F, I, BT>
{
    fn projection(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_by_matmul::<Self>(x, weight)
    }

    fn free_memory(device: &Self::Device) -> Option<u64> {
        let cuda =
            (device as &dyn std::any::Any).downcast_ref::<burn::backend::cuda::CudaDevice>()?;
        // A driver that cannot be loaded panics inside cudarc: that is "unknown", not a crash.
        let free = std::panic::catch_unwind(|| cuda_free_bytes(cuda.index))
            .ok()
            .flatten()?;
        // What CubeCL's pools hold but do not use is free to our allocations too.
        let pooled = R::client(device)
            .memory_usage()
            .map(|u| {
                u.bytes_reserved
                    .saturating_sub(u.bytes_in_use + u.bytes_padding)
            })
            .unwrap_or(0);
        Some(free + pooled)
    }

    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        row_k: Option<IntTensor<Self>>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>) {
        // The kernel reads f32 logits and 32-bit positions and counts.
        let int32 = |d: DType| matches!(d, DType::I32 | DType::U32);
        if logits.dtype != DType::F32
            || !int32(positions.dtype)
            || row_k.as_ref().is_some_and(|r| r.dtype != positions.dtype)
        {
            return top_keys_on_host::<Self>(logits, positions, row_k, k);
        }
        let logits = into_contiguous(logits);
        let positions = into_contiguous(positions);
        let (rows, n) = (logits.meta.shape()[0], logits.meta.shape()[1]);
        let t = positions.meta.shape()[0];
        let client = logits.client.clone();
        // Without per-row counts every row takes k: a [T] column of k.
        let row_k = match row_k {
            Some(r) => into_contiguous(r),
            None => {
                let ks = vec![k as u32; t];
                CubeTensor::new_contiguous(
                    client.clone(),
                    logits.device.clone(),
                    Shape::from(vec![t]),
                    spotlight_kernels::device::upload_u32(&client, &ks),
                    positions.dtype,
                )
            }
        };
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
            &row_k.handle,
            t,
            k,
            &top.handle,
            &count.handle,
            &thr.handle,
        )
        .expect("k ≤ n checked by the caller");
        (top, count, thr)
    }

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        starts: &[usize],
        new_lens: &[usize],
    ) -> Option<FloatTensor<Self>> {
        use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
        use spotlight_kernels::prefill::{flash_prefill, PrefillShape};
        let [batch, len, heads, d] = q.meta.shape().dims::<4>();
        let [_, kv_heads, cap, _] = k.meta.shape().dims::<4>();
        if k.dtype != F::dtype() || v.dtype != F::dtype() || starts.len() != batch {
            return None;
        }
        let q = into_contiguous(Self::float_cast(q, burn::tensor::FloatDType::F32));
        let (k, v) = (into_contiguous(k), into_contiguous(v));
        let client = q.client.clone();
        let out = client.empty(batch * len * heads * d * 4);
        if len == 1 {
            // One position per sequence: the decode kernel, which splits long caches over cubes.
            let shape = spotlight_kernels::AttendShape::new(heads, kv_heads, kv_heads, d).ok()?;
            let rows: Vec<QueryRow> = (0..batch)
                .map(|seq| QueryRow {
                    seq,
                    len: (starts[seq] + 1).min(cap),
                })
                .collect();
            let rows = QueryRows::upload(&client, &rows);
            let layout = KvLayout { batch, cap };
            attend::<R, F>(
                &client, &shape, &q.handle, &k.handle, &v.handle, layout, &rows, None, &out,
            )
            .ok()?;
        } else {
            let shape = PrefillShape {
                batch,
                len,
                q_heads: heads,
                kv_heads,
                head_dim: d,
                cap,
            };
            flash_prefill::<R, F>(
                &client, &shape, &q.handle, &k.handle, &v.handle, starts, new_lens, &out,
            )
            .ok()?;
        }
        let out = CubeTensor::new_contiguous(
            client,
            q.device.clone(),
            Shape::from(vec![batch, len, heads, d]),
            out,
            DType::F32,
        );
        Some(Self::float_cast(out, F::dtype().into()))
    }

    fn fast_decoder(
        model: &Llama<Self>,
        cache: &KvCache<Self>,
    ) -> Result<Option<Box<dyn FastDecode>>, LlamaError> {
        if cache.record_queries {
            return Ok(None);
        }
        // Sparse attention needs a selector the decoder can run (the trained hash, group layout).
        let sparse = match &cache.selection {
            None => None,
            Some(s) => match (s.rows, s.selector.fused_hash()) {
                (SelectRows::Decode, Some(hash)) => Some(SparseDecode {
                    hash,
                    budget: s.budget,
                    dense_layers: s.dense_layers,
                    dense_below: s.dense_below,
                }),
                _ => return Ok(None),
            },
        };
        let client = R::client(&model.embed.device());
        // A device or shape the kernels cannot take: decode with tensor ops instead.
        if Decoder::<R, F>::supports(&client, &model.config).is_err() {
            return Ok(None);
        }
        let Some(weights) = DecoderWeights::from_model(model) else {
            return Ok(None);
        };
        let (cos, sin) = model.rope.tables();
        let (k, v) = cache
            .layers
            .iter()
            .map(|l| (handle_of(&l.k), handle_of(&l.v)))
            .unzip();
        let decoder = Decoder::<R, F>::new(
            client,
            weights,
            (k, v),
            cache.lens.clone(),
            cache.capacity(),
            (handle_of(cos), handle_of(sin)),
        )?
        .with_graph_device(&model.embed.device());
        let decoder = match sparse {
            None => decoder,
            Some(sparse) => {
                // Codes of the prefilled keys, as the selector stored them at insert.
                let codes = cache
                    .layers
                    .iter()
                    .map(|l| match &l.codes {
                        Some(c) => handle_of(c),
                        None => client_empty::<R>(&model.embed.device()),
                    })
                    .collect();
                decoder.with_sparse(sparse, codes)?
            }
        };
        Ok(Some(Box::new(decoder)))
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

    fn top_keys(
        logits: FloatTensor<Self>,
        positions: IntTensor<Self>,
        row_k: Option<IntTensor<Self>>,
        k: usize,
    ) -> (IntTensor<Self>, IntTensor<Self>, FloatTensor<Self>) {
        top_keys_on_host::<Self>(logits, positions, row_k, k)
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

/// A placeholder buffer (the code cache of a layer that never selects).
fn client_empty<R: CubeRuntime>(device: &R::Device) -> burn_cubecl::cubecl::server::Handle {
    R::client(device).empty(16)
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
