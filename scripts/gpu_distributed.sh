#!/usr/bin/env bash
# torch.distributed on GPUs: the nccl path, DDP against FSDP, scaling against one process, and faults.
# Shape-only runs (--weights random, bf16: no asset or download needed), each a `bench run --nproc-per-node N`.
#
#   scripts/gpu_distributed.sh OUT_DIR [N]             # N processes, one GPU each (default: every GPU)
#   scripts/gpu_distributed.sh OUT_DIR 1               # one GPU: proves the nccl path with one rank
#   GPU_DIST_SMOKE=1 scripts/gpu_distributed.sh OUT_DIR   # the same sequence on the CPU: gloo, 2 ranks, small
#
# Cases (each runs on when another fails; its exit code is logged):
#   1. classify  all-layers and last-layers of the MiniLM shape, DDP; with N > 1 after a one-process run of
#                each (the report's speed-up and scaling efficiency)
#   2. sft-ddp / sft-fsdp  full sft of the Llama-1B shape at 1,024 tokens, DDP then FSDP (per-rank parameter,
#                gradient and optimizer bytes: FSDP holds 1/N of them; peak GPU memory per rank)
#   3. lora-8b   lora-sft of the Llama-8B shape under FSDP (the frozen base sharded too)
#   4. fault     all-layers where rank 0 raises after 3 training steps: its row fails naming rank 0; with N > 1
#                last-layers where the last rank hangs (nccl timeout 60 s); then lora, which passes
# OUT_DIR gets summary.md (every report, the Distributed runs table among them), results.tar.gz (results and
# per-rank top operators; no traces) and log.txt.
set -uo pipefail
out=${1:?usage: scripts/gpu_distributed.sh OUT_DIR [NPROC]}
mkdir -p "$out"
log="$out/log.txt"
work=${GPU_DIST_WORK:-$(mktemp -d)}
mkdir -p "$work"
export BENCH_PROGRESS=0 PYTHONUNBUFFERED=1 TORCH_CPP_LOG_LEVEL=ERROR
root=$(cd "$(dirname "$0")/.." && pwd)
bench=(python -m bench -p no:baselines)
if ! python -c "import bench.api, strategies.sft, bench_lora.plugin" 2>/dev/null; then  # not installed (a bare GPU box)
    export PYTHONPATH="$root:$root/plugins/bench-lora/src${PYTHONPATH:+:$PYTHONPATH}"
    export BENCH_PLUGINS=strategies.sft,strategies.all_layers,strategies.last_layers,bench_lora.plugin
fi

if [ "${GPU_DIST_SMOKE:-0}" = 1 ]; then  # the CPU stand-in: gloo, 2 ranks, small sizes, same commands
    nproc=${2:-2}
    device=(--device cpu --precision fp32)
    enc=shape:minilm-l6; lm=shape:smollm2-135m; big=shape:smollm2-135m
    seq=32; batch=4; steps=6; encbatch=4; encseq=32; encsteps=6
    case_timeout=${GPU_DIST_CASE_TIMEOUT:-1500}  # a shared 2-core CPU under load: the classify case took > 540 s
else
    nproc=${2:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
    device=(--device cuda --precision bf16)
    enc=shape:minilm-l6; lm=shape:llama-1b; big=shape:llama-8b
    seq=1024; batch=8; steps=12; encbatch=32; encseq=128; encsteps=60
    case_timeout=${GPU_DIST_CASE_TIMEOUT:-540}
fi
[ "$nproc" -ge 1 ] || { echo "no GPU found; pass N, or GPU_DIST_SMOKE=1 for the CPU" | tee -a "$log"; exit 2; }
common=("${device[@]}" --weights random --attn-implementation sdpa --nproc-per-node "$nproc" --dist-timeout 60 -q)

{
    date -u
    echo "processes per node: $nproc"
    nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv 2>/dev/null || echo "no nvidia-smi"
    nvidia-smi topo -m 2>/dev/null || true
    python - <<'EOF'
import platform, torch, torch.distributed as dist, transformers
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else "-",
      "gloo", dist.is_gloo_available(), "gpus", torch.cuda.device_count())
EOF
} 2>&1 | tee "$log"

run_case() {  # name, expected exit code, then bench arguments
    local name=$1 expected=$2; shift 2
    local started=$SECONDS
    echo "== $name: ${*}" | tee -a "$log"
    timeout "$case_timeout" "${bench[@]}" "$@" >> "$log" 2>&1
    local code=$?
    local verdict=ok; [ "$code" = "$expected" ] || verdict="UNEXPECTED (wanted $expected)"
    echo "== $name: exit $code after $((SECONDS - started)) s: $verdict" | tee -a "$log"
}

# 1. Classification, DDP, after the one-process reference when N > 1.
run_case classify 0 run -s all-layers -s last-layers --model "$enc" "${common[@]}" --parallel ddp \
    --batch-size $((encbatch * nproc)) --seq-len "$encseq" --max-steps "$encsteps" --out "$work/classify"
# 2. Full sft: DDP against FSDP, same global batch (the memory FSDP saves per rank).
for mode in ddp fsdp; do
    run_case "sft-$mode" 0 run -s sft --model "$lm" "${common[@]}" --parallel "$mode" --no-scaling-reference \
        --batch-size $((batch * nproc)) --seq-len "$seq" --max-steps "$steps" --out "$work/sft-$mode"
done
# 3. LoRA on the largest shape under FSDP.
run_case lora-8b 0 run -s lora-sft --model "$big" "${common[@]}" --parallel fsdp --no-scaling-reference \
    --batch-size $((4 * nproc)) --seq-len "$seq" --max-steps "$steps" --out "$work/lora-8b"
# 4. Faults: a raising rank fails its row (and the next strategy runs); with N > 1 a hanging rank too.
fault="all-layers:0:raise:3"
[ "$nproc" -gt 1 ] && fault="$fault,last-layers:$((nproc - 1)):hang:2"
BENCH_TEST_FAIL=$fault run_case fault 1 run -s all-layers -s last-layers -s lora --model "$enc" \
    "${common[@]}" --no-scaling-reference --batch-size $((encbatch * nproc)) --seq-len "$encseq" --max-steps 8 \
    --plugins-dir "$root/tests/plugins_dist" --out "$work/fault"

# Everything into OUT.
for folder in "$work"/*/; do
    [ -f "$folder/results.json" ] || continue
    echo "## $(basename "$folder")" >> "$out/summary.md"
    "${bench[@]}" report "$folder" --format markdown >> "$out/summary.md" 2>> "$log"
done
echo "## sft: DDP against FSDP" >> "$out/summary.md"
"${bench[@]}" report "$work/sft-ddp" "$work/sft-fsdp" --format markdown >> "$out/summary.md" 2>> "$log"
(cd "$work" && tar czf "$out/results.tar.gz" */results.json */runs/*/profile/top_ops*.json 2>/dev/null)
echo "done in $SECONDS s" | tee -a "$log"
