# Sourced by the GPU scripts: CUDA for NVRTC, the commit results belong to, and the binary carried
# in .gpu/ unpacked to /tmp/spotlight (every call: a warm machine may hold an older one).
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
export SPOTLIGHT_COMMIT="$(cat .gpu/commit)"
gunzip -c .gpu/spotlight.gz > /tmp/spotlight && chmod +x /tmp/spotlight
# The CUDA test binaries, when staged (run: SPOTLIGHT_CUDA_TESTS=1 /tmp/linear_mma_cuda).
for t in kernels linear_mma_cuda cuda_graphs; do
  if [ -f ".gpu/$t.gz" ]; then
    gunzip -c ".gpu/$t.gz" > "/tmp/$t" && chmod +x "/tmp/$t"
  fi
done
