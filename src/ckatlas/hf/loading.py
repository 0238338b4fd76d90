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
        UserInputError: no such folder, no config.json or one that names no model type,
            weights that do not load (truncated, foreign), an unknown architecture, or
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
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except (ValueError, OSError, KeyError) as exc:  # "Unrecognized model ...", unreadable JSON
        raise UserInputError(f"{path}/config.json is not a Hugging Face model config ({_first_line(exc)}); expected "
                             "a folder written by save_pretrained, whose config.json names a model_type") from None
    names = list(getattr(config, "architectures", None) or [])
    cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
    if cls is None:
        if names:
            raise UserInputError(f"{path}: transformers {transformers.__version__} has no model class {names[0]!r}")
        cls = transformers.AutoModel
    try:
        model = cls.from_pretrained(path, local_files_only=True).eval()
    except Exception as exc:  # truncated or foreign weights: safetensors, torch and transformers each raise their own
        raise UserInputError(f"{path}: its weights do not load ({type(exc).__name__}: {_first_line(exc)}); expected "
                             "the model.safetensors (or pytorch_model.bin) that save_pretrained wrote, whole") from None
    tokenizer = None
    if any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as exc:  # a broken tokenizer file
            raise UserInputError(f"{path}: its tokenizer does not load ({type(exc).__name__}: {_first_line(exc)})") \
                from None
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


__all__ = ["load_model"]
