#!/usr/bin/env bash
# Trains the models of the block-detector gallery (docs/gallery) and computes their all-layer heatmaps, one
# experiment after another (each resumable: run it again to pick up where it stopped). They are the studies'
# own experiments, in the paper's regime (every model but the narrowest fits its training set), and the
# gallery draws one seed of each:
#   scripts/gallery/corpus.sh OUT        then the block_gallery.py command of docs/gallery/README.md
set -euo pipefail
out=${1:?usage: corpus.sh OUT}
here=$(dirname "$0")
ckatlas run fashion-dynamics --out "$out/fashion-dynamics-200" --seed-offset 200 --jobs 2 --quiet  # ResNet-8/14/20, widths 1/2-4
ckatlas run vit-study --out "$out/vit-study" --jobs 2 --quiet                                       # ViT-2/4/8, widths 1/2-2
ckatlas run demo --out "$out/digits" --quiet                                                       # ResNet-14/20/26 on digits
python "$here/lm.py" "$out/lm/fortunes-12"                                                          # a 12-layer LM on fortunes
