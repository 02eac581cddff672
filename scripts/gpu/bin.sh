# Sourced by the GPU scripts: CUDA for NVRTC, the commit results belong to, and the binary carried
# in .gpu/ unpacked to /tmp/spotlight (every call: a warm machine may hold an older one).
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
export SPOTLIGHT_COMMIT="$(cat .gpu/commit)"
gunzip -c .gpu/spotlight.gz > /tmp/spotlight && chmod +x /tmp/spotlight
