#!/usr/bin/env bash
# The GPU suite on the device tool's machine: installs .device_bundle/ (weights, images, wheels,
# made here by `python3 benchmarks/gpu_bundle.py`), runs benchmarks/gpu_suite.sh and packs the
# results into one archive in $OUT, the folder whose files come back.
#
# Synopsis (the device tool's `run`, from the repository root; ~9 minutes with the start):
#   command: bash benchmarks/gpu_device.sh      carry: [".device_bundle"]     timeout_s: 590
#   command: NETS=starry_lite STEPS_SCALE=7 bash benchmarks/gpu_device.sh zoo   (the style zoo's
#            retraining, benchmarks/train_zoo_gpu.sh, stopped after ZOO_LIMIT=540 s; a stopped
#            run's latest checkpoints are exported all the same)
# Here, to try the same path on the CPU without ../shared (toy sizes, ~90 s):
#   SMOKE=1 OUT=/tmp/gpu_back bash benchmarks/gpu_device.sh
#
# Back in $OUT: gpu_results.tgz (every JSON and log of the suite), and beside it summary.json,
# gpu_report.json and report.log (each goal beside its number), env.txt (nvidia-smi, pip list).
# Unpack with `tar xzf gpu_results.tgz -C benchmarks/results/` (it holds gpu/). The zoo mode
# brings back zoo_results.tgz: checkpoints/ as exported there, and each run's logs and config.

set -u
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUNDLE="${BUNDLE:-$REPO/.device_bundle}"
DEST="${OUT:-$REPO/benchmarks/results}"
RESULTS="${RESULTS:-/tmp/nst_gpu/gpu}"
PYTHON="${PYTHON:-python3}"
MODE="${1:-suite}"

if [[ ! -f "$BUNDLE/MANIFEST.json" ]]; then
  echo "error: $BUNDLE is missing: run python3 benchmarks/gpu_bundle.py (and carry it)" >&2
  exit 2
fi
# Wheels of what the GPU image lacks, installed beside (not over) its own packages.
WHEELS=("$BUNDLE"/wheels/*.whl)
if [[ -f "${WHEELS[0]}" ]]; then
  SITE="$(mktemp -d)"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "${WHEELS[@]}" || { echo "error: could not install $BUNDLE/wheels" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export NST_JAX_CACHE="$BUNDLE/cache" NST_JAX_VGG_WEIGHTS="$BUNDLE/cache/vgg19_conv.npz"
export NST_JAX_DATA="$BUNDLE/data" PYTHONUNBUFFERED=1

rm -rf "$RESULTS" && mkdir -p "$RESULTS" "$DEST"
{ nvidia-smi 2>&1; "$PYTHON" -m pip list 2>/dev/null; } > "$RESULTS/env.txt"
if [[ "$MODE" == zoo ]]; then
  WORK="$(dirname "$RESULTS")/zoo_runs"
  (cd "$REPO" && WORKDIR="$WORK" timeout --kill-after=10 "${ZOO_LIMIT:-540}" \
    bash benchmarks/train_zoo_gpu.sh) > "$RESULTS/zoo.log" 2>&1
  code=$?
  if [[ $code -eq 124 || $code -eq 137 ]]; then  # stopped: export what the checkpoints hold
    (cd "$REPO" && WORKDIR="$WORK" EXPORT_ONLY=1 timeout 60 bash benchmarks/train_zoo_gpu.sh) \
      >> "$RESULTS/zoo.log" 2>&1
  fi
  tail -n 20 "$RESULTS/zoo.log"
  (cd "$WORK" 2>/dev/null && find . -maxdepth 2 \( -name losses.csv -o -name config.json \
    -o -name '*.hours' \) -print0 | tar czf "$RESULTS/zoo_runs.tgz" --null -T -)
  tar czf "$DEST/zoo_results.tgz" -C "$REPO" checkpoints -C "$RESULTS" zoo.log zoo_runs.tgz env.txt
  echo "results: $DEST/zoo_results.tgz (zoo exit $code; 124: stopped at ZOO_LIMIT)"
  exit $code
elif [[ "$MODE" != suite ]]; then
  echo "error: unknown mode $MODE (suite or zoo)" >&2
  exit 2
fi
OUT="$RESULTS" PYTHON="$PYTHON" bash "$REPO/benchmarks/gpu_suite.sh"
code=$?
tar czf "$DEST/gpu_results.tgz" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
for f in summary.json gpu_report.json report.log env.txt; do
  [[ -f "$RESULTS/$f" ]] && cp "$RESULTS/$f" "$DEST/"
done
echo "results: $DEST/gpu_results.tgz (suite exit $code)"
exit $code
