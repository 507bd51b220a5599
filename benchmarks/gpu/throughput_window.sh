#!/usr/bin/env bash
# The training-throughput benchmark (benchmarks/gpu_throughput.py) on one lent GPU, first thing
# in a window: steps/s and runs/hour of l2, ffg and mnf trained eager, packed (4 processes),
# vectorized (4 models as one), grouped (l2) and compiled / CUDA-graphed, side by side.
#
# Usage, from the repository root on the GPU machine (no data needed: random batches):
#   bash benchmarks/gpu/throughput_window.sh [BUDGET_S]
# BUDGET_S (default 120): no cell starts after it; the benchmark is stopped 60 s later whatever
# it is doing (a long compile), keeping every cell it finished (the files are rewritten after
# each). Sizing, from the paper suite's H200 step times (eager l2 ~2.6 ms, ffg ~4.6 ms, mnf
# ~26 ms a step): 3 x 100 timed + 10 warm-up steps make an eager cell 1-8 s, a packed cell
# ~10-30 s with its process start-up, so eager/vectorized/grouped/packed take about 1.5 min;
# the graphed and compiled cells come last (graphed first: CUDA graphs are the likelier win for
# launch-bound MNF), and those past the budget are listed as not measured: compiling took 4-40 s
# for l2, 129 s for ffg and 514 s for mnf on the loaded 2-core CPU, unknown on the card (16
# cores compile in parallel); give a longer window a larger BUDGET_S to reach them all.
# Total: at most BUDGET_S + 60 s plus start-up, about 3 minutes. Override with METHODS, MODES, STEPS, WARMUP, REPEATS, K, PACKED,
# THREADS; DEVICE=cpu (with STEPS=2 REPEATS=1 THREADS=1) is a CPU rehearsal. Packed processes
# share the GPU by time-slicing unless a CUDA MPS daemon already runs (paper_window.sh starts
# one; run this script first); the report says which.
# MNF graphed first (issue 19, part 2: is MNF still 6x FFG per step once its launches are one
# CUDA graph?), then the eager cells with their kernel ops per step; at most 6 minutes (MNF's
# compile time on the card is unknown: 514 s on the loaded 2-core CPU, l2/ffg 8-10 s there):
#   METHODS="mnf ffg" MODES="graphed eager" bash benchmarks/gpu/throughput_window.sh 300
# Cells run mode by mode in the order given, so mnf/graphed is the first cell; the graphed
# and compiled modes train through uqbench.compiling.CompiledLoss, what `uqbench run --compile`
# uses (inductor's fallback_random: eager's random draws). Then one real run the same way:
#   uqbench run --suite paper --tasks mnist --methods mnf --seeds 0 --device cuda \
#     --compile reduce-overhead --set mnist.train.epochs=1 --out .gpu-out/compiled
# Results: .gpu-out/throughput/gpu_throughput.{json,md} and log.txt, copied to $OUT when set.
set -uo pipefail
budget=${1:-120}
device=${DEVICE:-cuda}
methods=${METHODS:-"l2 ffg mnf"}
modes=${MODES:-"eager vectorized seeds grouped packed graphed compiled"}
root=$PWD
work=$root/.gpu-out/throughput
export UQBENCH_CACHE_DIR=${UQBENCH_CACHE_DIR:-$root/.cache/gpu} PYTHONUNBUFFERED=1
mkdir -p "$work"
t0=$(date +%s)

if ! python3 -c "import uqbench" 2>/dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || python3 -m pip install -q --no-deps --no-build-isolation --no-index . || exit 1
fi
if [ "$device" != cpu ]; then
  echo "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
fi
# $methods and $modes are word-split on purpose: each name is its own argument.
# shellcheck disable=SC2086
timeout -k 10 $((budget + 60)) python3 -m uqbench.benchmarks.gpu_throughput \
  --device "$device" --methods $methods --modes $modes \
  --steps "${STEPS:-100}" --warmup "${WARMUP:-10}" --repeats "${REPEATS:-3}" \
  --k "${K:-4}" --packed "${PACKED:-4}" ${THREADS:+--threads "$THREADS"} \
  --budget-s "$budget" --out "$work" 2>&1 | tee "$work/log.txt"
echo "exit ${PIPESTATUS[0]}; total: $(( $(date +%s) - t0 )) s" | tee -a "$work/log.txt"
cat "$work/gpu_throughput.md" 2>/dev/null
if [ -n "${OUT:-}" ]; then
  cp "$work"/gpu_throughput.json "$work"/gpu_throughput.md "$work"/log.txt "$OUT"/ 2>/dev/null
  if [ "$device" != cpu ]; then nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true; fi
fi
