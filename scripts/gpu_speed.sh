#!/usr/bin/env bash
# The speed comparison against the baselines (issue #8) on one GPU with bf16, from a prepared asset
# cache: `python -m bench_baselines.speed` with `--device cuda --precision bf16`, then the report.
#
#   BENCH_CACHE_DIR=/path/to/prepared/cache scripts/gpu_speed.sh OUT_DIR [speed options] [-- bench run options]
#
# On a machine without registry access, install the project and the plugin without dependencies
# first (torch, transformers, accelerate, tabulate, pluggy already there):
#   pip install --no-deps --no-build-isolation -e . -e plugins/bench-baselines
set -euo pipefail
out=${1:?usage: scripts/gpu_speed.sh OUT_DIR [speed options] [-- bench run options]}
shift
: "${BENCH_CACHE_DIR:?set BENCH_CACHE_DIR to a prepared asset cache (bench assets pull)}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
speed_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do speed_args+=("$1"); shift; done
[ $# -gt 0 ] && shift
python -m bench_baselines.speed --out "$out" "${speed_args[@]}" -- --device cuda --precision bf16 "$@"
