"""A Hugging Face model (and its tokenizer) from a local folder; nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ckatlas.errors import UserInputError


def load_model(folder: str | os.PathLike) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer or None) from a folder that ``save_pretrained`` wrote.

    The model class is the one the folder's config.json names (``architectures``), so a
    causal LM keeps its head, a classifier its classifier.

    Raises:
        UserInputError: no such folder, no config.json, an unknown architecture, or
            transformers not installed.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserInputError(f"{path}: no such folder; expected a Hugging Face model folder (config.json, weights)")
    if not (path / "config.json").is_file():
        raise UserInputError(f"{path} holds no config.json; expected a folder written by save_pretrained")
    try:
        import transformers
    except ImportError:
        raise UserInputError("Hugging Face models need transformers: pip install 'ckatlas[hf]'") from None
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    names = list(getattr(config, "architectures", None) or [])
    cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
    if cls is None:
        if names:
            raise UserInputError(f"{path}: transformers {transformers.__version__} has no model class {names[0]!r}")
        cls = transformers.AutoModel
    model = cls.from_pretrained(path, local_files_only=True).eval()
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


__all__ = ["load_model"]
