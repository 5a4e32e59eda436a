#!/usr/bin/env bash
# All model benchmarks on one CUDA device, SmolLM2-135M and Llama-3.2-1B shapes (random weights),
# in about 8 minutes; prints one table last. Needs torch and transformers only (the GPU image).
#
# From a session that is lent a device (device tool), in the repository root:
#   run(command="bash bench/device_run.sh", timeout_s=600)
# Results: $OUT/summary.md, $OUT/summary.json (every figure), $OUT/device_run.log (all output).
# Without $OUT (a plain machine) they go to bench/results/device/.
set -uo pipefail
export PYTHONUNBUFFERED=1 CODEUNLEARN_PROGRESS=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-bench/results/device}"
mkdir -p "$OUT"
JSON="$(mktemp -d)"  # one JSON per benchmark; only the summary goes to $OUT (few files come back)
LOG="$OUT/device_run.log"
: >"$LOG"

bench() {  # bench NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $*" | tee -a "$LOG"
  timeout "$limit" python3 "$@" --out "$JSON/$name.json" >>"$LOG" 2>&1
  local status=$?
  [ $status -ne 0 ] && echo "!!! $name exited $status (see device_run.log)" | tee -a "$LOG"
  tail -n 6 "$LOG" | grep -v '^wrote ' || true
  python3 bench/summarize.py "$JSON" --out "$OUT/summary.md" >/dev/null 2>&1  # kept current if cut short
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>&1 | tee -a "$LOG"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$LOG"

# Top-k at the size: 32k tokens x 65,536 codes, exact vs chunked vs bf16-coarse + fp32 re-rank.
bench topk-32k-65k 90 bench/bench_topk.py --tokens 32768 --codes 65536 --chunk-codes 16384 --candidates 32 64

S="--shape smollm2-135m"
bench training-smollm2 120 bench/bench_training.py $S --peak-tflops 989 --repeats 5
bench training-smollm2-coarse32 90 bench/bench_training.py $S --peak-tflops 989 --repeats 5 --n-codes 65536 --coarse-candidates 32
bench mining-smollm2 60 bench/bench_mining.py $S
bench mining-smollm2-coarse32 45 bench/bench_mining.py $S --n-codes 65536 --coarse-candidates 32
bench generation-smollm2 90 bench/bench_generation.py $S --new-tokens 64 --repeats 3 --warmup 1
bench request-smollm2 60 bench/bench_request.py $S

L="--shape llama-1b"
bench training-1b 120 bench/bench_training.py $L --peak-tflops 989 --repeats 5
bench mining-1b 45 bench/bench_mining.py $L
bench generation-1b 60 bench/bench_generation.py $L --new-tokens 64 --repeats 3 --warmup 1
bench request-1b 60 bench/bench_request.py $L

echo "=== summary" | tee -a "$LOG"
python3 bench/summarize.py "$JSON" --out "$OUT/summary.md" 2>&1 | tee -a "$LOG"
