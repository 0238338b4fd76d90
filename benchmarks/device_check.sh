#!/usr/bin/env bash
# The GPU check (issue 22 §5, issue 31 §4): what needs a CUDA device, in at most 10 minutes on one GPU.
#   1. the tests that need CUDA: heatmaps on the GPU equal the CPU's (1e-4), a bfloat16 training
#      epoch learns and records its dynamics, layer removal equals the CPU's, MinibatchCKA on CUDA;
#   2. one training epoch of the largest model of each paper-* preset on synthetic data of its
#      dataset's shape, timed, and each preset's GPU hours estimated from it;
#   3. ResNet-20 training at widths 1 and 4 in float32, bfloat16 and channels_last (images/s), and
#      each similarity measure's all-layer heatmap against linear CKA's (wall seconds).
# Record what it prints, with the GPU's name, in BENCHMARKS.md ("GPU check").
#
#   benchmarks/device_check.sh                 # from the repository root or anywhere
#   PYTHON=python3 benchmarks/device_check.sh  # another interpreter (default: .venv's, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"  # works without installing ckatlas
export MPLBACKEND=Agg
"$PYTHON" - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit(f"device_check: no CUDA device visible to torch {torch.__version__}; nothing to check")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
started=$(date +%s)
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider -m "slow or not slow" tests/test_cuda.py \
    "tests/test_cka.py::test_cuda_matches_cpu"
echo "tests: $(( $(date +%s) - started )) s"
timeout 240 "$PYTHON" benchmarks/bench_gpu_presets.py --device cuda --examples 10000  # the rate, not a whole epoch
# 3. training by precision and layout (float32, bfloat16 autocast, channels_last) and each measure's cost
timeout 120 "$PYTHON" benchmarks/bench_train_modes.py --device cuda --quick --rounds 2 --steps 3
timeout 120 "$PYTHON" benchmarks/bench_measures.py --device cuda --examples 1024
echo "device_check: done in $(( $(date +%s) - started )) s"
