#!/usr/bin/env bash
# Tile x split-K sweep (issue 11, parts 3 and 5): every shipped wgmma tile at 1 to 8 blocks per
# tile over the default models and qwen3-1.7b (a shape outside the defaults), graph mode; the
# measurements the wgmma cost model (host/src/gpu/dispatch.rs) is checked against.
# Run on the GPU machine from the repository root after ../shared/tools/gpu-stage:
#   OUT=dir bash bench/sweeps/tiles.sh        (one JSON per tile and split in $OUT)
# TILES="wgmma_m64_n128_s4 ...", SPLITS="1 2 ...", TOKENS=LIST and ITERS narrow it.
set -euo pipefail
bin=${BIN:-.gpu/bin/fused-qkv}
out=${OUT:-bench/results/tiles}
mkdir -p "$out"
models=(--model qwen3-0.6b --model qwen2.5-0.5b --model qwen3-8b --model qwen3-32b --model qwen3-1.7b)
tokens=${TOKENS:-64,96,128,192,256,384,512}
tiles=${TILES:-wgmma_m64_n128_s4 wgmma_tma_m128_n128_s4 wgmma_tma_m128_n128_s3 wgmma_tma_m128_n256_s4}
for tile in $tiles; do
  for s in ${SPLITS:-1 2 3 4 6 8}; do
    "$bin" bench "${models[@]}" --tokens "$tokens" --kernel "$tile" --split-k "$s" --iters "${ITERS:-50}" \
      --json "$out/$tile-x$s.json" >"$out/$tile-x$s.txt" 2>&1 || echo "failed: $tile x$s (see $out/$tile-x$s.txt)"
  done
done
