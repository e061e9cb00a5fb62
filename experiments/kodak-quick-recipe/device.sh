#!/bin/bash
# The decoder variants on a lent GPU machine (16 CPU cores and one GPU), in one go:
# whole images with the paper-grade preset on the GPU (GPU_SHARDS processes) and the
# quick protocol's crops on the CPU cores (CPU_SHARDS processes, one thread each).
#
#   bash experiments/kodak-quick-recipe/device.sh start   # first call: starts the shards, waits
#   bash experiments/kodak-quick-recipe/device.sh wait    # next call, while the machine is warm
#
# Runs from the repository root there, with Kodak images carried in .kodak/ and the wheels
# of constriction and pytorch-msssim in .whl/ (results/cuda-h200/README.md). The shards
# run in their own process session, so they outlive a call; the rows live outside the
# working tree, so a second call finds them. Each call waits at most WAIT_S seconds, then
# packs the rows and logs into $OUT/rows.tgz.
set -u
GPU_SHARDS=${GPU_SHARDS:-6}
CPU_SHARDS=${CPU_SHARDS:-10}
WAIT_S=${WAIT_S:-540}
RUN=/tmp/recipe-device
OUT=${OUT:-/tmp/recipe-device-out}
mkdir -p "$RUN/logs" "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
script="python3 experiments/kodak-quick-recipe/run.py .kodak -o $RUN"

if [ "${1:-}" = start ]; then
    { date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; nproc;
      grep -m1 'model name' /proc/cpuinfo; python3 -c 'import torch; print(torch.__version__)'; } \
        > "$RUN/machine.txt" 2>&1
    date +%s > "$RUN/start"
    for i in $(seq 1 "$GPU_SHARDS"); do
        setsid nohup $script --variants base,arch-a,arch-b --images kodim23,kodim07 \
            --lambdas 4e-3 --crop 0 --preset slow --device cuda --shard "$i/$GPU_SHARDS" \
            > "$RUN/logs/gpu$i.txt" 2>&1 &
    done
    for i in $(seq 1 "$CPU_SHARDS"); do
        setsid nohup $script --variants base,arch-a,arch-b,arch-c --lambdas 5e-4,4e-3 \
            --shard "$i/$CPU_SHARDS" > "$RUN/logs/cpu$i.txt" 2>&1 &
    done
fi

t0=$(date +%s)
while pgrep -f kodak-quick-recipe/run.py > /dev/null && [ $(( $(date +%s) - t0 )) -lt "$WAIT_S" ]; do
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$RUN/gpu_util.txt" 2>&1
    sleep 15
done
echo "elapsed since start: $(( $(date +%s) - $(cat "$RUN/start") )) s; rows: $(ls "$RUN/rows" | wc -l)"
pgrep -f kodak-quick-recipe/run.py | wc -l
tail -n 2 "$RUN"/logs/*.txt
tar czf "$OUT/rows.tgz" -C "$RUN" .
