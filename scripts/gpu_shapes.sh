#!/usr/bin/env bash
# What a strategy costs at the sizes users care about, on one GPU: shape-only runs (--weights random,
# bf16) of the SmolLM2-135M, Llama-1B and Llama-8B shapes, each planned first (bench plan) and then
# run for a few steps: MFU against the datasheet peak, tokens/s, peak memory, energy (NVML). No
# download and no asset: shapes ship with finetune-bench, batches are synthetic.
#
#   scripts/gpu_shapes.sh OUT_DIR              # on a machine with one CUDA GPU (about 6 minutes on an H200)
#   GPU_SHAPES_SMOKE=1 scripts/gpu_shapes.sh OUT_DIR   # the same sequence on the CPU with tiny sizes (a test)
#
# OUT_DIR gets summary.md (every table), plans.json, each case's NAME.results.json and top operators (no
# traces: they are large) and log.txt, each case's as soon as it ends. Each case runs on when another fails; its exit code is logged.
set -uo pipefail
out=${1:?usage: scripts/gpu_shapes.sh OUT_DIR}
mkdir -p "$out"
log="$out/log.txt"
work=${GPU_SHAPES_WORK:-$(mktemp -d)}
mkdir -p "$work"
export BENCH_PROGRESS=0 PYTHONUNBUFFERED=1 TORCH_CPP_LOG_LEVEL=ERROR
bench=(python -m bench -p no:baselines)
root=$(cd "$(dirname "$0")/.." && pwd)
if ! python -c "import bench.api, strategies.sft, bench_lora.plugin" 2>/dev/null; then  # not installed (a bare GPU box)
    export PYTHONPATH="$root:$root/plugins/bench-lora/src${PYTHONPATH:+:$PYTHONPATH}"
    export BENCH_PLUGINS=strategies.sft,strategies.all_layers,strategies.last_layers,bench_lora.plugin
fi

if [ "${GPU_SHAPES_SMOKE:-0}" = 1 ]; then  # the CPU stand-in: tiny sizes, same commands
    device=(--device cpu --precision fp32)
    small=shape:smollm2-135m; lm=shape:smollm2-135m; big=shape:smollm2-135m
    seq=32; batch=2; steps=4; bigbatch=2
else
    device=(--device cuda --precision bf16)
    small=shape:smollm2-135m; lm=shape:llama-1b; big=shape:llama-8b
    seq=2048; batch=8; steps=12; bigbatch=4
fi
common=("${device[@]}" --weights random --seq-len "$seq" --attn-implementation sdpa -q)

{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv 2>/dev/null || echo "no nvidia-smi"
    python - <<'EOF'
import platform, torch, transformers
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
} 2>&1 | tee "$log"

run_case() {  # name, then bench arguments
    local name=$1; shift
    local started=$SECONDS
    echo "== $name: ${*}" | tee -a "$log"
    timeout "${GPU_SHAPES_CASE_TIMEOUT:-420}" "${bench[@]}" "$@" >> "$log" 2>&1
    local code=$?
    echo "== $name: exit $code after $((SECONDS - started)) s" | tee -a "$log"
    keep_case "$name"
}

keep_case() {  # each case's results and report go to OUT as soon as it ends, so a cut-short script keeps them
    local name=$1 folder="$work/$1"
    [ -f "$folder/results.json" ] || return 0
    cp "$folder/results.json" "$out/$name.results.json"
    for ops in "$folder"/runs/*/profile/top_ops.json; do
        [ -f "$ops" ] && cp "$ops" "$out/$name.$(basename "$(dirname "$(dirname "$ops")")").top_ops.json"
    done
    { echo "## $name"; "${bench[@]}" report "$folder" --format markdown; } >> "$out/summary.md" 2>> "$log"
}

# 1. Plans: what each case needs, and whether it fits (exact parameter, gradient and optimizer bytes).
plans=()
plan_case() {  # name, model, batch, strategies...
    local name=$1 model=$2 b=$3; shift 3
    local strategies=(); for s in "$@"; do strategies+=(-s "$s"); done
    "${bench[@]}" plan "${strategies[@]}" --model "$model" "${common[@]}" --batch-size "$b" --max-steps "$steps" \
        --plan-format json > "$out/plan-$name.json" 2>> "$log"
    echo "== plan $name: exit $?" | tee -a "$log"
    plans+=("$out/plan-$name.json")
}
plan_case small "$small" "$batch" sft all-layers
plan_case 1b "$lm" "$batch" sft all-layers
plan_case 8b "$big" "$bigbatch" lora-sft lora sft all-layers

# 2. Runs. Full fine-tuning of the 8B shape runs only if its plan fits (bench run refuses otherwise).
run_case small run -s sft -s all-layers --model "$small" "${common[@]}" --batch-size "$batch" --max-steps "$steps" \
    --out "$work/small"
run_case 1b run -s sft -s all-layers --model "$lm" "${common[@]}" --batch-size "$batch" --max-steps "$steps" \
    --out "$work/1b"
run_case 8b-lora run -s lora-sft -s lora --model "$big" "${common[@]}" --batch-size "$bigbatch" \
    --max-steps "$steps" --out "$work/8b-lora"
run_case 8b-full run -s sft --model "$big" "${common[@]}" --batch-size "$bigbatch" --max-steps "$steps" \
    --out "$work/8b-full"

# 3. The plans in one file (each case's results, top operators and report are in OUT already).
python - "$out" "${plans[@]}" <<'EOF' 2>&1 | tee -a "$log"
import json, sys
from pathlib import Path
out, plans = Path(sys.argv[1]), sys.argv[2:]
merged = []
for p in plans:
    try:
        merged += json.loads(Path(p).read_text())
    except (OSError, ValueError) as exc:
        merged.append({"file": p, "error": str(exc)})
(out / "plans.json").write_text(json.dumps(merged, indent=1))
print("kept", len(merged), "plans and", len(list(out.glob("*.results.json"))), "results files")
EOF
echo "done in $SECONDS s" | tee -a "$log"
