#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one prepared run, for a session lent a GPU machine:
#
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=540)
#
# Needs only python with torch and numpy (the device machine has them; nothing is installed).
# Each step has its own time limit and log, so one failing step leaves the others' figures;
# logs and JSON reports go to $OUT (at most 8 files come back from a device run).
#   1. the paper preset, T1w and DWI: steps timed, iteration and subject times extrapolated
#   2. the T1w paper preset with one real N2A iteration, timed
#   3. the paper preset, T1w and DWI, with torch.compile
set -u
out=${OUT:-results/gpu_check}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$out/gpu.txt" 2>&1

step() {  # name, limit (s), arguments of bench_training.py
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$python" benchmarks/bench_training.py --device cuda --size paper \
    --json "$out/$name.json" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? at ${SECONDS} s" | tee -a "$out/gpu.txt"
}

step paper 150
step paper_iteration 150 --data-type t1w --measure-iteration
step paper_compile 200 --compile
