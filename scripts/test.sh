#!/usr/bin/env bash
# The one test command (README, CI): installs what the tests need on a fresh machine — the Vulkan
# CPU driver (lavapipe) for the wgpu tests and the real model and texts — then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1; then
  echo "== installing the Vulkan CPU driver (mesa-vulkan-drivers, libvulkan1) for wgpu"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== building"
cargo build --workspace --all-targets --locked

# Austen's novels come as a Debian package (`apt-get download`): the package lists must be there.
if ! apt-cache show r-cran-janeaustenr >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi

echo "== fetching the default model and texts (cached in \${SPOTLIGHT_HOME:-~/.cache/spotlight})"
"${CARGO_TARGET_DIR:-target}/debug/spotlight" fetch   # the binary just built (no feature-specific rebuild)

echo "== tests"
cargo test --workspace --all-targets --locked -- --test-threads 2

echo "== a user's own selector (examples/custom_selector.rs): decoded with, and a row of the evaluator"
"${CARGO_TARGET_DIR:-target}/debug/examples/custom_selector" > /tmp/spotlight-custom-selector.jsonl
grep -q '"method":"quarter-dot"' /tmp/spotlight-custom-selector.jsonl \
  || { echo "examples/custom_selector printed no row for its selector" >&2; exit 1; }

echo "== the server against the official openai client"
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip install -q "openai>=1.40,<3" 2>&1 | tail -n 2 || true
  python3 scripts/serve_openai_test.py "${CARGO_TARGET_DIR:-target}/debug/spotlight"
else
  echo "!! pip is unavailable: SKIPPING scripts/serve_openai_test.py (the official openai client test)" >&2
fi
