#!/usr/bin/env bash
# Runs every GPU goal of the open issues on one accelerator (H100/H200) in under 10 minutes.
#
# Synopsis:
#   bash benchmarks/gpu_suite.sh                  # results in benchmarks/results/gpu/
#   DRY_RUN=1 bash benchmarks/gpu_suite.sh        # print the commands, run nothing
#   OUT=/tmp/gpu PYTHON=python3.11 bash benchmarks/gpu_suite.sh
#   SMOKE=1 bash benchmarks/gpu_suite.sh          # every step at toy sizes on the CPU (~90 s):
#                                                 # checks the scripts, measures nothing
# On the device tool's machine, which has neither ../shared nor a package registry, run it through
# benchmarks/gpu_device.sh (it installs .device_bundle/, made here by benchmarks/gpu_bundle.py).
#
# Steps (each under its own `timeout`; a failure is recorded and the suite goes on):
#   optimize    slow transfer, s/iteration at 512 and 1024 px, JAX only (optimize_bench.py)
#   slowmem     slow transfer, the largest 4:3 image whose compiled L-BFGS-B chunk fits the GPU's
#               memory (bisection over memory_analysis(), 512 px steps), then 3 iterations
#               there (slow_memory_bench.py --largest)
#   matting     matting Laplacian at 700 px: apply <= 5 ms (matting_bench.py)
#   inference   fast network latency and batched throughput at 256/512/1024 px, float32
#               (<= 3 ms per image and >= 1,000 images/s at 512 px), then bfloat16 at 512 px
#   train       fast training images/s at 256 px (>= 1,000), float32 and bfloat16 (train_bench.py)
#   photoreal   one whole default slow photoreal run at 512 px, 2 x 300 iterations (<= 15 s)
#   sr          x4 to 2048 px batched (<= 10 ms per image), float32 and bfloat16; SR training
#               patches/s at 288 px, fast and johnson presets (>= 500) (sr_speed_bench.py)
#   arbitrary   arbitrary style transfer (Ghiasi et al.), the transfer network at 512 / 1024 px,
#               host array in and out (<= 10 ms at 1024 px); ours alone, random weights of the
#               released shapes (arbitrary_bench.py)
#   video       fast video at 512 px with starry_lite: frames/s of the network plus the optical
#               flow (OpenCV DIS, on the host) and the consistency step (video_bench.py; needs
#               the `video` extra, PyAV and opencv-python-headless, on the GPU machine)
#   tile        fast stylization of a 7680x5120 photo (starry_lite): untiled and in 512 px
#               tiles with whole-image norm statistics, s/MP and max difference (tile_bench.py)
#   report      each goal beside its number (gpu_report.py; writes $OUT/gpu_report.json)
# The style zoo's retraining is its own script (benchmarks/train_zoo_gpu.sh, ~8 minutes).
# A summary (step, exit code, seconds) is printed and written to $OUT/summary.json. The timeouts
# (each + 5 s to kill) add up to 550 s: the suite ends within 9.5 minutes even if every step hangs.
# Then `report` (gpu_report.py) prints each goal beside its number and checks that every result
# came from the expected backend (gpu; cpu under SMOKE=1): a GPU run that fell back to the CPU
# fails there rather than recording CPU numbers as GPU ones.
# Not yet run on a GPU (none was lent when it was written): the timeouts are estimates.
#
# The weights and data are found as everywhere else ($NST_JAX_VGG_WEIGHTS, $NST_JAX_DATA, or
# ../shared beside the repository). PYTHONPATH starts with this checkout, so the nst_jax measured
# is the one beside this script even when another copy is installed.

set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/benchmarks/results/gpu}"
PYTHON="${PYTHON:-python3}"
DRY_RUN="${DRY_RUN:-0}"
SMOKE="${SMOKE:-0}"
# The backend every result must come from; optimize_bench's workers get it as JAX_PLATFORMS.
if [[ "$SMOKE" != 0 ]]; then BACKEND=cpu; else BACKEND="${BACKEND:-gpu}"; fi
if [[ "$BACKEND" == gpu ]]; then PLATFORM=cuda; else PLATFORM="$BACKEND"; fi
# Toy sizes on a 2-core CPU spend their time compiling: the GPU timeouts x4.
if [[ "$SMOKE" != 0 ]]; then TIMEOUT_SCALE=4; else TIMEOUT_SCALE=1; fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# optimize_bench keeps several JAX workers alive at once: none may grab 75% of the memory.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

NAMES=()
CODES=()
SECONDS_TAKEN=()

# step NAME TIMEOUT_S COMMAND...: runs one benchmark, logging to $OUT/NAME.log.
step() {
  local name="$1" limit="$(($2 * TIMEOUT_SCALE))"
  shift 2
  if [[ "$DRY_RUN" != 0 ]]; then
    printf 'timeout %s %s > %s 2>&1\n' "$limit" "$*" "$OUT/$name.log"
    return
  fi
  echo "== $name (timeout ${limit}s): $*"
  local start=$SECONDS
  (cd "$REPO" && timeout --kill-after=5 "$limit" "$@") > "$OUT/$name.log" 2>&1
  local code=$?
  NAMES+=("$name")
  CODES+=("$code")
  SECONDS_TAKEN+=("$((SECONDS - start))")
  if [[ $code -ne 0 ]]; then
    echo "   FAILED (exit $code; 124: timed out); last lines of $OUT/$name.log:"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   | /'
  fi
}

summary() {
  local i json="" failed=0
  echo
  echo "| step | exit | seconds |"
  echo "|---|---|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${CODES[$i]} | ${SECONDS_TAKEN[$i]} |"
    json+="${json:+, }{\"step\": \"${NAMES[$i]}\", \"exit\": ${CODES[$i]}, \"seconds\": ${SECONDS_TAKEN[$i]}}"
    [[ ${CODES[$i]} -ne 0 ]] && failed=$((failed + 1))
  done
  echo "[${json}]" > "$OUT/summary.json"
  echo "$failed of ${#NAMES[@]} steps failed; results and logs in $OUT"
  return $((failed > 0))
}

if [[ "$DRY_RUN" == 0 ]]; then
  mkdir -p "$OUT"
  "$PYTHON" -c 'import jax; print("devices:", jax.devices())' || echo "warning: JAX did not start"
fi
B="benchmarks"

if [[ "$SMOKE" == 0 ]]; then
  OPTIMIZE=(--sizes 512 1024 --chunk 10 10 --timed-chunks 10 5 --warmup-chunks 1)
  SLOWMEM=(--largest --resolution 512 --max-side 16384)
  MATTING=(--sizes 700 --repeats 5)
  INFER=(--sizes 256 512 1024 --batch 16 --repeats 10)
  INFER_BF16=(--sizes 512 --batch 64 --repeats 10)
  TRAIN=(--size 256 --batch 64 --steps 10)
  PHOTO=(--time-size 512 --time-iters 300)
  SR=()
  ARBITRARY=(--sizes 512 1024 --repeats 10)
  VIDEO=(--throughput-size 512 --throughput-frames 48)
  TILE=(--size 7680 --repeats 1 --models starry_lite --photo content/kodak/kodim23.jpg)
else  # toy sizes: the same code paths in seconds
  OPTIMIZE=(--sizes 64 --chunk 2 --timed-chunks 2 --warmup-chunks 1 --optimizers lbfgsb adam)
  SLOWMEM=(--largest --resolution 16 --max-side 128)
  MATTING=(--sizes 64 --repeats 2)
  INFER=(--sizes 64 --batch 2 --repeats 2)
  INFER_BF16=(--sizes 64 --batch 2 --repeats 2)
  TRAIN=(--size 64 --batch 2 --steps 2)
  PHOTO=(--time-size 64 --time-iters 5)
  SR=(--lr-size 16 --batch 2 --train-size 64 --train-batch 2 --repeats 2)
  ARBITRARY=(--sizes 64 --repeats 2 --warmup 1)
  VIDEO=(--throughput-size 64 --throughput-frames 4)
  TILE=(--size 256 --tile 128 --repeats 1 --models starry_lite --photo content/kodak/kodim23.jpg)
fi

step optimize 70 "$PYTHON" $B/optimize_bench.py "${OPTIMIZE[@]}" --no-torch --platform "$PLATFORM" \
  --out "$OUT/optimize_bench.json"
step slowmem 60 "$PYTHON" $B/slow_memory_bench.py "${SLOWMEM[@]}" --platform "$PLATFORM" \
  --out "$OUT/slow_memory.json"
step matting 30 "$PYTHON" $B/matting_bench.py "${MATTING[@]}" --out "$OUT/matting_bench.json"
step inference 45 "$PYTHON" $B/inference_bench.py "${INFER[@]}" --no-torch \
  --out "$OUT/inference_bench.json"
step inference_bf16 30 "$PYTHON" $B/inference_bench.py "${INFER_BF16[@]}" --no-torch --bf16 \
  --out "$OUT/inference_bench_bf16.json"
step train 50 "$PYTHON" $B/train_bench.py --preset thesis "${TRAIN[@]}" \
  --out "$OUT/train_bench.json"
step train_bf16 30 "$PYTHON" $B/train_bench.py --preset thesis "${TRAIN[@]}" --bf16 \
  --out "$OUT/train_bench_bf16.json"
step photoreal 40 "$PYTHON" $B/photo_eval.py --time-only "${PHOTO[@]}" --results "$OUT"
step sr 45 "$PYTHON" $B/sr_speed_bench.py "${SR[@]}" --bf16 --out "$OUT/sr_speed_bench.json"
step arbitrary 30 "$PYTHON" $B/arbitrary_bench.py "${ARBITRARY[@]}" --pairs 0 --no-ort \
  --random-weights --conv-impls xla --out "$OUT/arbitrary_bench.json"
step video 20 "$PYTHON" $B/video_bench.py --throughput-only --model starry_lite "${VIDEO[@]}" \
  --out "$OUT/video_bench.json"
step tile 30 "$PYTHON" $B/tile_bench.py --skip-big "${TILE[@]}" --out "$OUT/tile_bench.json"
step report 5 "$PYTHON" $B/gpu_report.py "$OUT" --backend "$BACKEND"

if [[ "$DRY_RUN" == 0 ]]; then
  summary
fi
