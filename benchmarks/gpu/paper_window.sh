#!/usr/bin/env bash
# The paper suite on one lent GPU in one short window: every (method, task, seed) run is its own
# `uqbench run` process, several packed onto the one GPU at once (LeNet-sized models leave it idle
# between kernel launches), under CUDA MPS where the machine has it.
#
# Usage, from the repository root on the GPU machine:
#   UQBENCH_GIT_COMMIT=<sha> bash benchmarks/gpu/paper_window.sh [SEEDS] [TASKS] [DEADLINE_S] [JOBS]
# defaults: "0 1 2", "mnist toy-cubic", 450 s, 16 processes; METHODS_MNIST / METHODS_CIFAR5 /
# METHODS_TOY (space-separated) choose the families per task. Runs left unfinished at the
# deadline keep their checkpoints; calling the script again on the same machine resumes them.
# Data: $UQBENCH_DATA_DIR, else what benchmarks/gpu/stage_data.sh staged in .cache/gpu-data (the
# script unpacks whatever .gpu-stage part this call carried; README there).
# Results: .gpu-out/paper/ (run files with their saved predictions, results.json, report) and,
# when $OUT is set, $OUT/runs-so-far.tar.gz, rewritten every 30 s with every finished run and
# the logs (a call cut short still brings back what finished), then $OUT/<suite>-runs.tar.gz with
# the merged results. The report is built last (it is slow; REPORT=0 skips it, to rebuild
# locally). SUITE=smoke DEVICE=cpu runs the same script as a CPU rehearsal. COMPILE=reduce-overhead
# trains every run through CUDA graphs (`uqbench run --compile`; results equal eager within float
# tolerance only; each process compiles its own graph first, on the machine's shared cores),
# default off.
set -uo pipefail
seeds=${1:-"0 1 2"}
tasks=${2:-"mnist toy-cubic"}
deadline=${3:-450}
jobs=${4:-16}
suite=${SUITE:-paper}
device=${DEVICE:-cuda}
compile=${COMPILE:-off}
methods_mnist=${METHODS_MNIST:-"mnf ffg fflu ensemble dropout l2"}   # longest first
methods_cifar5=${METHODS_CIFAR5:-"mnf ffg fflu ensemble dropout l2"}
methods_toy=${METHODS_TOY:-"mnf ffg fflu ensemble dropout l2 dropout-learned"}
root=$PWD
work=$root/.gpu-out
here=$(cd "$(dirname "$0")" && pwd)
export UQBENCH_CACHE_DIR=${UQBENCH_CACHE_DIR:-$root/.cache/gpu}
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
mkdir -p "$work/logs" "$work/parts"
t0=$(date +%s)

if [ -d .gpu-stage ]; then bash "$here/stage_data.sh" unpack || exit 2; fi
if [ -z "${UQBENCH_DATA_DIR:-}" ] && [ -d "$root/.cache/gpu-data" ]; then
  export UQBENCH_DATA_DIR=$root/.cache/gpu-data
fi
echo "data: ${UQBENCH_DATA_DIR:-(not set: the user cache)}"

if ! python3 -c "import uqbench" 2>/dev/null; then
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . \
    || python3 -m pip install -q --no-deps --no-build-isolation --no-index . || exit 1
fi
mps=off
if [ "$device" = cuda ] && command -v nvidia-cuda-mps-control >/dev/null; then
  if { nvidia-cuda-mps-control -d 2>/dev/null || pgrep -f nvidia-cuda-mps-control >/dev/null; } \
     && timeout 60 python3 -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
    mps=on
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
  fi
fi
echo "MPS: $mps; $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null)"

list=$work/jobs.txt
: >"$list"
for t in $tasks; do
  case $t in
    toy-cubic) ms=$methods_toy ;;
    cifar5) ms=$methods_cifar5 ;;
    *) ms=$methods_mnist ;;
  esac
  for m in $ms; do for s in $seeds; do echo "$m $t $s" >>"$list"; done; done
done
echo "$(wc -l <"$list") runs, $jobs at a time, deadline ${deadline}s"

if [ "$device" = cuda ]; then  # utilisation and memory every 5 s, as evidence for the packing
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 \
    >"$work/logs/gpu-util.csv" 2>/dev/null &
  smi=$!
fi
snapshot() {  # every finished run and the logs, replaced atomically
  [ -n "${OUT:-}" ] || return 0
  # tar exits 1 when a file changed while read (the GPU log grows): the archive is still good
  (cd "$work" && tar czf "$OUT/runs-so-far.tmp" --exclude='*.tmp' logs \
    $(ls -d parts/*/*/runs 2>/dev/null)); [ $? -le 1 ] \
    && mv "$OUT/runs-so-far.tmp" "$OUT/runs-so-far.tar.gz"
}
if [ -n "${OUT:-}" ]; then
  # stopped between snapshots only (the TERM waits for a tar under way to end)
  ( trap 'exit 0' TERM; while :; do sleep 30 & wait $!; snapshot; done ) & snapper=$!
fi
# One process per run, each with its own --out (no shared results.json to race on).
timeout "$deadline" xargs -P "$jobs" -L 1 sh -c '
  m=$0 t=$1 s=$2
  uqbench run --suite '"$suite"' --methods $m --tasks $t --seeds $s \
    --device '"$device"' --compile '"$compile"' --no-download --no-report --quiet --out '"$work"'/parts/$m-$t-$s \
    >'"$work"'/logs/$m-$t-$s.log 2>&1
  echo "$(date +%T) $m $t seed $s exit $?"' <"$list"
echo "packed phase: $(( $(date +%s) - t0 )) s"
[ -n "${smi:-}" ] && kill "$smi" 2>/dev/null
if [ -n "${snapper:-}" ]; then kill "$snapper" 2>/dev/null; wait "$snapper" 2>/dev/null; fi
snapshot

mkdir -p "$work/$suite/runs"
cp "$work"/parts/*/"$suite"/runs/* "$work/$suite/runs/" 2>/dev/null
python3 - "$work/$suite" "$suite" "$device" "$seeds" "$tasks" "$jobs" "$mps" <<'PY'
import sys
from pathlib import Path

import torch

from uqbench.environment import environment, resolve_device
from uqbench.runner import merge_results

out, suite, device, seeds, tasks, jobs, mps = sys.argv[1:]
cmd = (f"uqbench run --suite {suite} --tasks {tasks} --seeds {seeds} --device {device} "
       f"--no-download  # one process per run, {jobs} at a time on one device (MPS {mps}): "
       "benchmarks/gpu/paper_window.sh")
res = merge_results(Path(out), suite, cmd, environment(resolve_device(device)))
print(f"merged {len(res['runs'])} runs into {out}/results.json")
for r in res["runs"]:
    print(f"  {r['method']:16s} {r['task']:10s} seed {r['seed']}  train {r['train_seconds']:7.1f}s"
          f"  eval {r['eval_seconds']:6.1f}s  peak {r.get('peak_memory_mb', '?')} MB")
PY
if [ -n "${OUT:-}" ]; then
  tar czf "$OUT/$suite-runs.tar.gz" -C "$work" "$suite" logs jobs.txt
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi
echo "merged and packed: $(( $(date +%s) - t0 )) s"
if [ "${REPORT:-1}" != 0 ]; then
  uqbench report "$work/$suite" >/dev/null 2>&1 || echo "report failed (rebuild it locally)"
fi
echo "total: $(( $(date +%s) - t0 )) s"
