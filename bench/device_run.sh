#!/usr/bin/env bash
# All model benchmarks on one CUDA device, SmolLM2-135M and Llama-3.2-1B shapes (random weights),
# most important first; each bench has its own time limit and the summary is rewritten after each,
# so a run cut at the 600 s call limit still returns what it measured. Prints one table last.
# Needs torch and transformers only (the GPU image): tests/unit/test_boundaries.py checks the imports.
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

# Top-k at the size: 32k tokens x 65,536 codes: exact, chunked, bf16-coarse + fp32 re-rank, and
# the grouped search (P of 256 groups), each checked against exact.
TOPK="--tokens 32768 --codes 65536 --chunk-codes 16384 --repeats 3"
[ "${DEVICE_RUN_SMOKE:-0}" = 1 ] && TOPK="--tokens 512 --codes 4096 --chunk-codes 1024 --repeats 1"
bench topk-32k-65k 100 bench/bench_topk.py $TOPK --candidates 32 --probes 8 16

# SmolLM2-135M shape (issue acceptance 1-4): exact search at C = 16,384 and 65,536, grouped at 65,536.
S="--shape smollm2-135m"
G="--n-codes 65536 --search grouped --search-probes 8"
L="--shape llama-1b"
if [ "${DEVICE_RUN_SMOKE:-0}" = 1 ]; then  # the whole script in a minute on a CPU: small shapes
  S="--shape small --repeats 1 --warmup 1" G="--n-codes 4096 --search grouped --search-probes 8" L="$S"
fi
bench training-smollm2 100 bench/bench_training.py --repeats 5 $S --peak-tflops 989
bench training-smollm2-grouped 70 bench/bench_training.py --repeats 5 $S $G --peak-tflops 989
bench mining-smollm2 50 bench/bench_mining.py $S --n-codes 16384
bench mining-smollm2-grouped 50 bench/bench_mining.py $S $G
bench generation-smollm2 60 bench/bench_generation.py --repeats 3 --warmup 1 $S --n-codes 16384 --new-tokens 64
bench generation-smollm2-grouped 60 bench/bench_generation.py --repeats 3 --warmup 1 $S $G --new-tokens 64
bench request-smollm2 60 bench/bench_request.py $S

# Llama-3.2-1B shape (acceptance 2: MFU at 1B)
bench training-1b 100 bench/bench_training.py --repeats 5 $L --n-codes 16384 --peak-tflops 989

# The pursuit bottleneck (bottleneck.combine=pursuit: k sequential scans of the codebook) at the default
# C and k, SmolLM2 shape: what its quality costs in step time
P="--n-codes 4096 --combine pursuit"
[ "${DEVICE_RUN_SMOKE:-0}" = 1 ] && P="--n-codes 1024 --combine pursuit"
bench training-smollm2-pursuit 60 bench/bench_training.py --repeats 5 $S $P --peak-tflops 989

echo "=== summary" | tee -a "$LOG"
python3 bench/summarize.py "$JSON" --out "$OUT/summary.md" 2>&1 | tee -a "$LOG"
