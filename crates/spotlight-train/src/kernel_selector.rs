//! Spotlight Attention on the decode kernels (`spotlight_kernels`): keys are hashed and packed into
//! u32 codes by `hash_pack` as they enter the cache; each decode step hashes the query, scores
//! every cached code with XOR + popcount, selects sink + top-k + window per code set (histogram
//! select, ties to recent keys) and attends over the selected K/V rows only. Cube backends
//! (CUDA, wgpu) run this; the mask path of [`crate::selector::Hash`] is its reference (same codes,
//! same scores, same selection rules), and what teacher-forced evaluation uses.
//!
//! Codes live in the KV cache's code tensor as raw 32-bit words ([batch, 1, cap, sets·words]),
//! which is why this selector has no `scores` of its own: it only decodes.

use std::sync::Arc;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{element::BoolElement, CubeBackend, CubeRuntime, IntElement};
use burn_ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use spotlight_kernels::attend::{attend, KvLayout, QueryRow, QueryRows};
use spotlight_kernels::hash_pack::{hash_pack, DeviceHashWeights};
use spotlight_kernels::select::{Selection as IndexLists, Selector};
use spotlight_kernels::{AttendShape, CodeShape, KernelError, SequencePlan};
use spotlight_llama::fast::FusedHash;
use spotlight_llama::KeySelector;

use crate::hash_file::HashFile;
use crate::quality::Heads;
use crate::selector::Hash;
use crate::Layout;

type Cube<R, I, BT> = CubeBackend<R, f32, I, BT>;

/// The trained hash on the decode kernels, for one model on one device.
pub struct KernelHash<R: CubeRuntime> {
    name: String,
    layout: Layout,
    heads: Heads,
    bits: usize,
    query: Vec<DeviceHashWeights>,
    key: Vec<DeviceHashWeights>,
    client: burn_cubecl::cubecl::client::ComputeClient<R>,
}

impl<R: CubeRuntime> std::fmt::Debug for KernelHash<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelHash({}, {:?})", self.name, self.layout)
    }
}

impl<R: CubeRuntime> KernelHash<R> {
    /// Uploads the hash; fails (one line) when the kernels cannot run these shapes on this device.
    pub fn new(
        name: &str,
        file: &HashFile,
        heads: Heads,
        device: &R::Device,
    ) -> Result<Self, KernelError> {
        let client = R::client(device);
        let sets = file.header.layout.key_nets(heads.q_heads, heads.kv_heads);
        AttendShape::new(heads.q_heads, heads.kv_heads, sets, heads.head_dim)?;
        // The score kernel's histogram must fit shared memory (depends on the shape only).
        Selector::new(
            &client,
            CodeShape::new(heads.q_heads, sets, file.header.bits)?,
            1,
            1,
        )?;
        let plane = client.properties().hardware.plane_size_max as usize;
        if plane == 0 || !heads.head_dim.is_multiple_of(plane) || plane > heads.head_dim {
            return Err(KernelError::PlaneSize {
                plane,
                d: heads.head_dim,
            });
        }
        Ok(Self {
            name: name.into(),
            layout: file.header.layout,
            heads,
            bits: file.header.bits,
            query: file
                .layers
                .iter()
                .map(|l| DeviceHashWeights::upload(&client, &l.query))
                .collect(),
            key: file
                .layers
                .iter()
                .map(|l| DeviceHashWeights::upload(&client, l.key_weights()))
                .collect(),
            client,
        })
    }

    fn sets(&self) -> usize {
        self.layout
            .key_nets(self.heads.q_heads, self.heads.kv_heads)
    }

    fn words(&self) -> usize {
        self.bits / 32
    }
}

fn handle_of<R: CubeRuntime, I: IntElement, BT: BoolElement>(
    t: Tensor<Cube<R, I, BT>, 4>,
) -> CubeTensor<R> {
    into_contiguous(t.into_primitive().tensor())
}

fn tensor_of<R: CubeRuntime, I: IntElement, BT: BoolElement>(
    like: &CubeTensor<R>,
    handle: burn_cubecl::cubecl::server::Handle,
    shape: [usize; 4],
) -> Tensor<Cube<R, I, BT>, 4> {
    let t = CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape.to_vec()),
        handle,
        DType::F32,
    );
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

impl<R: CubeRuntime, I: IntElement, BT: BoolElement> KeySelector<Cube<R, I, BT>> for KernelHash<R> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn encode_keys(
        &self,
        layer: usize,
        k: Tensor<Cube<R, I, BT>, 4>,
    ) -> Option<Tensor<Cube<R, I, BT>, 4>> {
        let [batch, kv, len, d] = k.dims();
        let (sets, words) = (self.sets(), self.words());
        // hash_pack reads [rows][heads][d]: rows = (sequence, position), heads = code sets.
        let x = match self.layout {
            Layout::Group => k.swap_dims(1, 2),
            Layout::Faithful => {
                let g = sets / kv;
                k.swap_dims(1, 2)
                    .reshape([batch, len, kv, 1, d])
                    .expand([batch, len, kv, g, d])
                    .reshape([batch, len, sets, d])
            }
        };
        let x = handle_of(x);
        let rows = batch * len;
        let codes = self.client.empty(4 * rows * sets * words);
        let weights = match self.layout {
            Layout::Group => &self.key[layer],
            Layout::Faithful => &self.query[layer],
        };
        hash_pack(&self.client, weights, &x.handle, rows, &codes).expect("shapes checked in new");
        // [batch, len, sets, words] → the logical [batch, sets, len, words] the cache expects.
        Some(tensor_of(&x, codes, [batch, len, sets, words]).swap_dims(1, 2))
    }

    fn scores(
        &self,
        _: usize,
        _: Tensor<Cube<R, I, BT>, 4>,
        _: Tensor<Cube<R, I, BT>, 4>,
        _: Option<Tensor<Cube<R, I, BT>, 4>>,
    ) -> Tensor<Cube<R, I, BT>, 4> {
        unreachable!(
            "the kernel selector decodes only (SelectRows::Decode): decode_attend never declines"
        )
    }

    fn decode_attend(
        &self,
        layer: usize,
        q: Tensor<Cube<R, I, BT>, 4>,
        keys: &Tensor<Cube<R, I, BT>, 4>,
        values: &Tensor<Cube<R, I, BT>, 4>,
        codes: &Tensor<Cube<R, I, BT>, 4>,
        plans: &[SequencePlan],
    ) -> Option<Tensor<Cube<R, I, BT>, 4>> {
        let [batch, kv, g, d] = q.dims();
        let h = kv * g;
        let cap = keys.dims()[2];
        let (sets, words) = (self.sets(), self.words());
        let client = &self.client;
        let q = handle_of(q);
        let k = handle_of(keys.clone());
        let v = handle_of(values.clone());
        let codes = handle_of(codes.clone());
        let q_codes = client.empty(4 * batch * h * words);
        // Shapes were checked in `new`; what fails below is a bug, not input.
        hash_pack(client, &self.query[layer], &q.handle, batch, &q_codes)
            .expect("shapes checked in new");
        let code_shape = CodeShape::new(h, sets, self.bits).expect("checked in new");
        let selector =
            Selector::new(client, code_shape, batch, cap).expect("checked for this shape in new");
        let longest = plans.iter().map(SequencePlan::selected).max().unwrap_or(0);
        let lists = IndexLists::new(client, batch, sets, longest.max(1), 0);
        selector
            .run(client, &q_codes, &codes.handle, plans, &lists)
            .expect("plans fit the cache and the lists");
        let rows: Vec<QueryRow> = plans
            .iter()
            .enumerate()
            .map(|(seq, p)| QueryRow { seq, len: p.len })
            .collect();
        let out = client.empty(4 * batch * h * d);
        let shape = AttendShape::new(h, kv, sets, d).expect("checked in new");
        attend::<R, f32>(
            client,
            &shape,
            &q.handle,
            &k.handle,
            &v.handle,
            KvLayout { batch, cap },
            &QueryRows::upload(client, &rows),
            Some((&lists, longest)),
            &out,
        )
        .expect("query rows fit the cache");
        Some(tensor_of(&q, out, [batch, kv, g, d]))
    }

    fn fused_hash(&self) -> Option<FusedHash> {
        // The fused decoder codes keys per KV head: the group layout.
        (self.layout == Layout::Group).then(|| FusedHash {
            query: self.query.clone(),
            key: self.key.clone(),
            bits: self.bits,
        })
    }
}

/// Backends that choose how Spotlight Attention decodes: the kernels on cube backends, the
/// mask path (Burn ops, the reference) on the CPU.
pub trait SelectorBackend: spotlight_llama::LlamaBackend {
    /// The decode selector of a trained hash.
    fn decode_hash_selector(
        name: &str,
        file: &HashFile,
        heads: Heads,
        device: &Self::Device,
    ) -> Result<Arc<dyn KeySelector<Self>>, KernelError>;
}

impl<R: CubeRuntime, I: IntElement, BT: BoolElement> SelectorBackend for Cube<R, I, BT> {
    fn decode_hash_selector(
        name: &str,
        file: &HashFile,
        heads: Heads,
        device: &Self::Device,
    ) -> Result<Arc<dyn KeySelector<Self>>, KernelError> {
        Ok(Arc::new(KernelHash::<R>::new(name, file, heads, device)?))
    }
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> SelectorBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>>,
    NdArrayTensor: From<SharedArray<I>>,
{
    fn decode_hash_selector(
        name: &str,
        file: &HashFile,
        heads: Heads,
        device: &Self::Device,
    ) -> Result<Arc<dyn KeySelector<Self>>, KernelError> {
        Ok(Arc::new(Hash::<Self>::new(name, file, heads, device)))
    }
}
