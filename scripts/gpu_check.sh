#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU: `scripts/gpu_check.sh` from the repository's root.
#
# 1. the gpu extra (CuPy), installed unless CuPy already imports;
# 2. the CuPy variants of the op tests and of the CUDA shared-memory tests (they must match NumPy);
# 3. python -m benchmarks.preprocess --short (NumPy and CuPy side by side);
# 4. a round trip of device inputs to Triton through CUDA shared memory, where a Triton built with GPU
#    support runs here (the triton extra's binary);
# then one summary. About 3-8 minutes. Without a GPU it says so and exits 0: nothing to check.
# PYTHON picks the interpreter (default: .venv/bin/python if there, else python3).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no GPU here (nvidia-smi finds no NVIDIA device); nothing to check."
  exit 0
fi

PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
declare -A RESULT
started=$(date +%s)

step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, records pass or fail
  local name=$1; shift
  echo "== $name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then RESULT[$name]=pass; else RESULT[$name]="FAIL (see $OUT/$name.log)"; fi
  tail -n 5 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/gpu: /'

if "$PYTHON" -c "import cupy" >/dev/null 2>&1; then
  RESULT[install]="CuPy already importable: $("$PYTHON" -c 'import cupy; print(cupy.__version__)')"
else
  step install "$PYTHON" -m pip install -q -e ".[gpu]"
fi

if ! "$PYTHON" -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" >/dev/null 2>&1; then
  echo "gpu_check: CuPy cannot use the GPU:"
  "$PYTHON" -c "import cupy; cupy.cuda.runtime.getDeviceCount()" 2>&1 | tail -n 3
  exit 1
fi

step ops "$PYTHON" -m pytest -q -p no:cacheprovider -k cupy \
  tests/proxy/test_ops.py tests/proxy/test_image_ops.py tests/proxy/test_cuda_shared_memory.py
step preprocess "$PYTHON" -m benchmarks.preprocess --short --out "$OUT"

if "$PYTHON" -c "import pytriton" >/dev/null 2>&1; then
  step cuda_shm "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration/test_shared_memory.py -k cuda
else
  RESULT[cuda_shm]="skipped: no tritonserver here (pip install -e '.[triton]' brings one)"
fi

echo
echo "gpu_check summary ($(($(date +%s) - started)) s, logs in $OUT):"
status=0
for name in install ops preprocess cuda_shm; do
  [ -n "${RESULT[$name]:-}" ] || continue
  echo "  $name: ${RESULT[$name]}"
  case ${RESULT[$name]} in FAIL*) status=1 ;; esac
done
grep -hE "x_numpy|speed-up|CuPy" "$OUT"/preprocess*.md 2>/dev/null | head -n 12
exit $status
