#!/usr/bin/env bash
# GPU check: every built-in classification strategy (and sft when its model is in the cache) on one
# GPU, from a prepared asset cache, results and traces into one folder. Under 5 minutes on an H100.
#
#   BENCH_CACHE_DIR=/path/to/prepared/cache scripts/gpu_check.sh OUT_DIR [extra bench run options]
#
# Prepare the cache on a machine with registry access: `BENCH_CACHE_DIR=... bench assets pull`.
set -euo pipefail
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [bench run options]}
shift
: "${BENCH_CACHE_DIR:?set BENCH_CACHE_DIR to a prepared asset cache (bench assets pull)}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
strategies=(-s feature-extraction -s last-layers -s all-layers)
if [ "${GPU_CHECK_SFT:-1}" = 1 ]; then strategies+=(-s sft); fi
bench run --device cuda --precision bf16 --preset full --out "$out" "${strategies[@]}" "$@"
bench report "$out" --format markdown --output "$out/report.md"
echo "results: $out/results.json; traces: tensorboard --logdir $out/profile"
