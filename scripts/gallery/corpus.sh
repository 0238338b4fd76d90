#!/usr/bin/env bash
# Trains the models of the block-detector gallery and computes their all-layer heatmaps, one
# experiment after another (each resumable: run it again to pick up where it stopped).
#   scripts/gallery/corpus.sh OUT        then   python scripts/block_gallery.py OUT --out docs/gallery
set -euo pipefail
out=${1:?usage: corpus.sh OUT}
here=$(dirname "$0")
ckatlas run "$here/fashion.toml" --out "$out/fashion" --quiet
ckatlas run demo --out "$out/digits" --quiet
ckatlas run "$here/vit.toml" --out "$out/vit" --quiet
python "$here/lm.py" "$out/lm/fortunes-12"
