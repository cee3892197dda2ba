#!/usr/bin/env bash
# Split-K sweep (issue 11, part 3): the wgmma kernel at 1 to 8 blocks per tile, and the dispatch
# (auto), over the default models and qwen3-1.7b (a shape outside the defaults), graph mode.
# Run on the GPU machine from the repository root after ../shared/tools/gpu-stage:
#   OUT=dir bash bench/sweeps/split-k.sh        (one JSON per setting in $OUT)
# KERNEL=NAME (a --kernel policy; default wgmma) and SPLITS="1 2 ..." narrow it; AUTO=0 skips
# the dispatch's own run. Measurement-only kernels need a build with --features tile-sweep.
set -euo pipefail
bin=${BIN:-.gpu/bin/fused-qkv}
out=${OUT:-bench/results/split-k}
mkdir -p "$out"
models=(--model qwen3-0.6b --model qwen2.5-0.5b --model qwen3-8b --model qwen3-32b --model qwen3-1.7b)
tokens=${TOKENS:-16,32,64,128,256,512}
kernel=${KERNEL:-wgmma}
if [ "${AUTO:-1}" = 1 ]; then
  "$bin" bench "${models[@]}" --tokens "$tokens" --json "$out/auto.json" >"$out/auto.txt" 2>&1
fi
for s in ${SPLITS:-1 2 3 4 6 8}; do
  "$bin" bench "${models[@]}" --tokens "$tokens" --kernel "$kernel" --split-k "$s" --json "$out/$kernel-x$s.json" \
    >"$out/$kernel-x$s.txt" 2>&1
done
