"""The language model of the block-detector gallery: a 12-layer Llama-style LM trained here on Debian's
fortunes (`ckatlas.hf.tiny_lm`), 300 steps. Usage: python scripts/gallery/lm.py OUT_FOLDER"""

import sys
from pathlib import Path

from ckatlas.hf.tiny_lm import TinyLMConfig, fortunes_text, train_tiny_lm

out = Path(sys.argv[1])
if not (out / "config.json").is_file():
    print(train_tiny_lm(fortunes_text(), out, TinyLMConfig(layers=12, width=128, steps=300), quiet=True))
