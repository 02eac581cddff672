//! Asking for a K/V cache larger than the GPU's free memory: a one-line error with both numbers,
//! before anything is allocated; a cache that fits still works. SYNTHETIC weights (a one-layer
//! model; the cache size is what matters).
//!
//! It needs an NVIDIA GPU, so it runs only with SPOTLIGHT_CUDA_TESTS=1; elsewhere it says it was
//! skipped. `scripts/gpu/memory.sh` runs this test binary on the H200. The host-side arithmetic
//! (`kv_cache_bytes`, `check_free_memory`) is tested everywhere in `model_tests.rs`.

use burn::backend::cuda::{Cuda, CudaDevice};
use spotlight_llama::synthetic::SyntheticWeights;
use spotlight_llama::{Llama, LlamaBackend, LlamaConfig};

type Gpu = Cuda<f32, i32>;

fn enabled() -> bool {
    let on = std::env::var("SPOTLIGHT_CUDA_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set SPOTLIGHT_CUDA_TESTS=1 on a machine with an NVIDIA GPU");
    }
    on
}

#[test]
fn cache_beyond_free_memory_is_refused_before_allocating() {
    if !enabled() {
        return;
    }
    let device = CudaDevice::default();
    let c = LlamaConfig {
        vocab_size: 64,
        hidden_size: 64,
        intermediate_size: 64,
        ..LlamaConfig::attention_shape(1, 4, 2, 16, 32_768)
    };
    let model = Llama::<Gpu>::load(&c, &SyntheticWeights::new(&c, 3), 32_768, &device).unwrap();
    let free = Gpu::free_memory(&device).expect("CUDA reports free memory");
    // 2 · 1 layer · 2 KV heads · 16 dims · 4 bytes = 256 bytes per token and sequence.
    let per_seq = 256 * 32_768u64;
    let batch = (free / per_seq + 1) as usize * 2;
    let t0 = std::time::Instant::now();
    let err = model.new_cache(batch, 32_768).unwrap_err().to_string();
    assert!(
        t0.elapsed().as_secs_f64() < 1.0,
        "the refusal must come before any allocation"
    );
    assert!(
        err.starts_with("K/V cache needs ")
            && err.contains("the GPU has ")
            && err.contains(" free")
            && !err.contains('\n'),
        "{err}"
    );
    let after = Gpu::free_memory(&device).unwrap();
    assert!(
        after + (1 << 30) > free,
        "free memory fell from {free} to {after}: something was allocated"
    );
    println!("{err}");
    // A cache of a quarter of what is free is allocated.
    let fits = (free / per_seq / 4).max(1) as usize;
    let cache = model.new_cache(fits, 32_768).unwrap();
    assert_eq!(cache.batch(), fits);
}
