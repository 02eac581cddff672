# Sourced by the GPU scripts that need the model: bin.sh, then (once per machine) joins and verifies
# the model carried in parts (.gpu1 … .gpuN) and lays out $SPOTLIGHT_HOME as `spotlight fetch` would.
source scripts/gpu/bin.sh
export SPOTLIGHT_HOME=/tmp/spotlight-home
model="$SPOTLIGHT_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$SPOTLIGHT_HOME/models/.verified" ]; then
  mkdir -p "$SPOTLIGHT_HOME/models" "$SPOTLIGHT_HOME/texts/moby-dick"
  cat .gpu[1-9]/model.part* > "$model"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $model" | sha256sum -c -
  echo verified > "$SPOTLIGHT_HOME/models/.verified"
  cp .gpu/moby-dick.txt "$SPOTLIGHT_HOME/texts/moby-dick/data.txt"
  echo verified > "$SPOTLIGHT_HOME/texts/moby-dick/.verified"
  tar xzf .gpu/sotu.tgz -C "$SPOTLIGHT_HOME/texts"
  echo verified > "$SPOTLIGHT_HOME/texts/sotu/.verified"
  if [ -d "$SPOTLIGHT_HOME/texts/austen" ]; then echo verified > "$SPOTLIGHT_HOME/texts/austen/.verified"; fi
fi
if [ ! -f "$SPOTLIGHT_HOME/fonts/dejavu/.verified" ] && [ -f .gpu/fonts.tgz ]; then
  tar xzf .gpu/fonts.tgz -C "$SPOTLIGHT_HOME"
fi
