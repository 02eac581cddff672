//! Backend choice, made once at the edge: `--backend cuda|wgpu|cpu`, default the best available.
//!
//! Library code is generic over `B: Backend`; this file is the only place that names concrete
//! backends. Availability is probed first so a missing GPU gives a one-line error, not a panic
//! from deep inside a runtime.

use burn::backend::{
    cuda::CudaDevice, ndarray::NdArrayDevice, wgpu::WgpuDevice, Cuda, NdArray, Wgpu,
};
use spotlight_llama::LlamaBackend;
use spotlight_train::kernel_selector::SelectorBackend;
use spotlight_train::TrainBackend;

use crate::error::{CliError, Result};

/// Compute backends Spotlight runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// NVIDIA GPUs through CUDA (kernels compiled at run time with NVRTC).
    Cuda,
    /// Vulkan / Metal / DX12 through wgpu (also lavapipe, a CPU Vulkan driver).
    Wgpu,
    /// Plain CPU (ndarray).
    Cpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Wgpu => "wgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// What every command needs of a backend: the model's ops (the top-keys kernel among them), how
/// Spotlight Attention decodes on it, and the hash training ops.
pub trait SpotlightBackend: LlamaBackend + SelectorBackend + TrainBackend {}
impl<B: LlamaBackend + SelectorBackend + TrainBackend> SpotlightBackend for B {}

/// Work to run on whichever backend was chosen.
pub trait OnBackend {
    type Output;
    fn run<B: SpotlightBackend>(
        self,
        device: B::Device,
        backend: BackendKind,
    ) -> Result<Self::Output>;
}

/// Runs `job` on `kind`, or on the best available backend when `kind` is None.
pub fn run<J: OnBackend>(kind: Option<BackendKind>, job: J) -> Result<J::Output> {
    let kind = match kind {
        Some(k) => k,
        None => best_available(),
    };
    match kind {
        BackendKind::Cuda => {
            cuda_ready().map_err(|why| {
                CliError::Backend(format!("--backend cuda is not usable here: {why}"))
            })?;
            job.run::<Cuda<f32, i32>>(CudaDevice::default(), kind)
        }
        BackendKind::Wgpu => {
            let device = wgpu_device().map_err(|why| {
                CliError::Backend(format!("--backend wgpu is not usable here: {why}"))
            })?;
            job.run::<Wgpu<f32, i32>>(device, kind)
        }
        BackendKind::Cpu => job.run::<NdArray<f32>>(NdArrayDevice::Cpu, kind),
    }
}

/// CUDA if a GPU and the toolkit pieces are there, else a real GPU through wgpu, else the CPU.
/// (A CPU-emulated Vulkan device is slower than the CPU backend, so it is never the default.)
pub fn best_available() -> BackendKind {
    if cuda_ready().is_ok() {
        BackendKind::Cuda
    } else if probe_wgpu(&[WgpuDevice::DiscreteGpu(0), WgpuDevice::IntegratedGpu(0)]).is_some() {
        BackendKind::Wgpu
    } else {
        BackendKind::Cpu
    }
}

/// Checks what burn's CUDA runtime will need: the driver with at least one GPU, NVRTC, and the
/// CUDA headers (NVRTC compiles kernels against them at run time).
pub fn cuda_ready() -> std::result::Result<(), String> {
    // SAFETY: loading the system's CUDA driver library and calling two C entry points with the
    // documented signatures `CUresult cuInit(unsigned)` and `CUresult cuDeviceGetCount(int*)`.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1")
            .or_else(|_| libloading::Library::new("libcuda.so"))
            .map_err(|_| {
                "no NVIDIA driver (libcuda.so.1 not found); use --backend wgpu or cpu".to_string()
            })?;
        let cu_init: libloading::Symbol<unsafe extern "C" fn(u32) -> i32> = lib
            .get(b"cuInit")
            .map_err(|e| format!("libcuda has no cuInit: {e}"))?;
        let code = cu_init(0);
        if code != 0 {
            return Err(format!(
                "cuInit failed with CUDA error {code} (no usable GPU?)"
            ));
        }
        let count_fn: libloading::Symbol<unsafe extern "C" fn(*mut i32) -> i32> = lib
            .get(b"cuDeviceGetCount")
            .map_err(|e| format!("libcuda has no cuDeviceGetCount: {e}"))?;
        let mut n = 0i32;
        if count_fn(&mut n) != 0 || n == 0 {
            return Err("the CUDA driver sees no GPU".into());
        }
        let nvrtc = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"]
            .iter()
            .any(|name| libloading::Library::new(name).is_ok());
        if !nvrtc {
            return Err("libnvrtc.so (CUDA runtime compiler) not found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH".into());
        }
    }
    let roots = std::env::var_os("CUDA_PATH")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(["/usr/local/cuda", "/opt/cuda", "/usr"].map(std::path::PathBuf::from));
    if !roots.into_iter().any(|r| r.join("include/cuda.h").exists()) {
        return Err(
            "CUDA headers not found (set CUDA_PATH to the toolkit, e.g. /usr/local/cuda)".into(),
        );
    }
    Ok(())
}

/// The wgpu device to use: the default one, after checking that it initialises.
pub(crate) fn wgpu_device() -> std::result::Result<WgpuDevice, String> {
    probe_wgpu(&[WgpuDevice::DefaultDevice]).ok_or_else(|| {
        "no wgpu adapter found (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1)".to_string()
    })
}

/// Returns the first device on which a tiny computation succeeds. wgpu reports a missing adapter
/// by panicking, so the probe catches that and keeps the panic message off the terminal.
fn probe_wgpu(devices: &[WgpuDevice]) -> Option<WgpuDevice> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let found = devices.iter().find(|d| {
        let d = (*d).clone();
        std::panic::catch_unwind(move || {
            let t = burn::tensor::Tensor::<Wgpu<f32, i32>, 1>::from_floats([1.0, 2.0], &d);
            t.sum().into_scalar()
        })
        .is_ok_and(|s| s == 3.0)
    });
    std::panic::set_hook(hook);
    found.cloned()
}
