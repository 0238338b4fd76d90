#!/usr/bin/env bash
# Why do wide ResNets fit Fashion-MNIST worse than narrow ones with ckatlas's recipe? ResNet-20 at
# widths 1 and 4 on 1/64 of the training set (940 images, 16x16), 30 epochs (240 steps), the default
# recipe and one change at a time. Each run's metrics.json holds its clean training accuracy (final: train_accuracy).
#   scripts/regime/fit.sh OUT      (resumable: finished runs are skipped)
set -euo pipefail
out=${1:?usage: fit.sh OUT}
common=(--arch resnet20 --dataset fashion-mnist --resize 16 --fraction 1/64 --epochs 30 --eval-every 0 --quiet)
run() {  # name, then extra options
  local name=$1; shift
  [ -f "$out/$name/model.safetensors" ] && return 0
  if [ -d "$out/$name" ]; then ckatlas train "${common[@]}" "$@" --out "$out/$name" --resume
  else ckatlas train "${common[@]}" "$@" --out "$out/$name"; fi
}
run w1 --width 1
run w4 --width 4
# run w4-lr0.4 --width 4 --lr 0.4   # tried: unstable (12.8% after 10 epochs), stopped
run w1-noaug --width 1 --no-augment
run w4-noaug --width 4 --no-augment
run w4-wd0 --width 4 --weight-decay 0
run w4-noaug-lr0.03 --width 4 --no-augment --lr 0.03
run w1-noaug-lr0.03 --width 1 --no-augment --lr 0.03
