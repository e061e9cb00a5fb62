#!/usr/bin/env bash
# A GPU session's checks in one device call (experiments/gpu/README.md says how to call it):
# the CUDA tests, the batched-training benchmark, then the paper-grade protocol's 32
# encodes trained in batches, one lambda after another until the time given runs out.
#   bash experiments/gpu/session.sh [SECONDS_FOR_THE_ENCODES]   (default 300)
# Environment: DEVICE (cuda), PRESET (slow), ITERATIONS (the preset's), LAMBDAS, OUT, WHEELS.
set -uo pipefail
budget=${1:-300}
OUT=${OUT:-/tmp/coolchic-gpu}
DEVICE=${DEVICE:-cuda}
PRESET=${PRESET:-slow}
LAMBDAS=${LAMBDAS:-"0.0004 0.001 0.004 0.02"}
mkdir -p "$OUT"
start=$(date +%s)
WHEELS=${WHEELS:-.whl}  # carried wheels (constriction, pytorch-msssim) for the GPU image's Python
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
coolchic() { python3 -c 'from coolchic.cli import app; app()' "$@"; }
{
  date -u; uname -m; python3 -c 'import torch; print(torch.__version__, torch.cuda.is_available())'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  git log --oneline -1 2>/dev/null
} > "$OUT/machine.txt" 2>&1
if ! COOLCHIC_NATIVE= python3 -c 'import sys, coolchic.native_decoder as d; sys.exit(d.kernels() is None)' 2>/dev/null; then
  python3 setup.py -q build_ext --inplace > "$OUT/build.txt" 2>&1 || echo "native build failed: build.txt"
fi

if [ "$DEVICE" = cuda ]; then
  timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ > "$OUT/pytest-gpu.txt" 2>&1
  echo "gpu tests: exit $? ($(tail -1 "$OUT/pytest-gpu.txt"))"
  timeout 200 python3 benchmarks/batched.py --device cuda --steps 20 --warmup 3 > "$OUT/batched.txt" 2>&1
  echo "batched benchmark: exit $?"
fi

images=()
for n in 01 04 07 08 13 15 19 23; do images+=(".kodak/kodim$n.png"); done
work=$(mktemp -d)
for lmbda in $LAMBDAS; do
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -lt 30 ]; then echo "no time left for lambda $lmbda"; break; fi
  mkdir -p "$work/$lmbda"
  s=$(date +%s)
  timeout "$left" bash -c "$(declare -f coolchic); coolchic encode ${images[*]} --lmbda $lmbda \
    --preset $PRESET ${ITERATIONS:+--iterations $ITERATIONS} --device $DEVICE -o $work/$lmbda" \
    > "$work/$lmbda.log" 2>&1
  echo "lambda $lmbda: exit $?, $(( $(date +%s) - s )) s"
  grep "bytes" "$work/$lmbda.log" >> "$OUT/paper-grade.txt"
done
for lmbda in $LAMBDAS; do  # IMAGE@LAMBDA.bin, as results/paper-grade/bitstreams names them
  for f in "$work/$lmbda"/*.bin; do [ -e "$f" ] && cp "$f" "$work/$(basename "$f" .bin)@$lmbda.bin"; done
done
(cd "$work" && tar cf "$OUT/paper-grade.tar" ./*@*.bin ./*.log 2>/dev/null)
echo "total $(( $(date +%s) - start )) s"
