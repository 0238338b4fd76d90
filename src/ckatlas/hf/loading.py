"""A Hugging Face model (and its tokenizer) from a local folder, or by its hub name as ``from_pretrained``
takes it: from the local Hugging Face cache, or downloaded when the hub is reachable and ``HF_HUB_OFFLINE``
is not set (only the config, tokenizer and weight files). Tests and the demo download nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ckatlas.errors import UserInputError


#: What is fetched of a hub model: its config, tokenizer and safetensors weights (a .bin only when it has none).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_a_path(name: str) -> bool:
    """Whether `name` is meant as a folder (absolute, relative with ./ or ../, ~, or an existing path) rather
    than a hub name such as "gpt2" or "org/model"."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or Path(name).expanduser().exists()
            or name.count("/") > 1 or os.sep != "/" and os.sep in name)


def resolve_model(name_or_folder: str | os.PathLike) -> Path:
    """The local folder of a model: `name_or_folder` itself when it is a folder, else the snapshot of the hub
    model of that name in the Hugging Face cache (`HF_HUB_CACHE`), downloaded first when it is not cached,
    the hub is reachable and `HF_HUB_OFFLINE` is not set. One clear error otherwise."""
    name = str(name_or_folder)
    path = Path(name).expanduser()
    if path.is_dir() or looks_like_a_path(name) or not name:
        return path
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise UserInputError("Hugging Face models need transformers: pip install 'ckatlas[hf]'") from None
    cache = os.environ.get("HF_HUB_CACHE") or None
    offline = _truthy(os.environ.get("HF_HUB_OFFLINE")) or bool(huggingface_hub.constants.HF_HUB_OFFLINE)
    where = cache or huggingface_hub.constants.HF_HUB_CACHE
    try:
        return Path(huggingface_hub.snapshot_download(name, cache_dir=cache, local_files_only=True,
                                                      allow_patterns=HUB_FILES))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    if offline:
        raise UserInputError(f"{name!r} is no folder here and no model in the Hugging Face cache ({where}), and "
                             "HF_HUB_OFFLINE is set: give a model folder, or download it first (unset HF_HUB_OFFLINE)")
    try:
        folder = Path(huggingface_hub.snapshot_download(name, cache_dir=cache, allow_patterns=HUB_FILES))
        if not any(folder.glob("*.safetensors")):
            folder = Path(huggingface_hub.snapshot_download(name, cache_dir=cache, allow_patterns=["*.bin"]))
        return folder
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise UserInputError(f"{name!r} is no folder here and no model in the Hugging Face cache ({where}), and the "
                             f"hub did not give it ({type(exc).__name__}: {_first_line(exc)}); give a model folder, "
                             "or check the name and the network") from None


def load_model(folder: str | os.PathLike) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer or None) from a folder that ``save_pretrained`` wrote, or from a hub name
    ("gpt2", "org/model": the cached snapshot, or downloaded when allowed; `resolve_model`).

    The model class is the one the folder's config.json names (``architectures``), so a
    causal LM keeps its head, a classifier its classifier.

    Raises:
        UserInputError: no such folder or model, no config.json or one that names no model type,
            weights that do not load (truncated, foreign), an unknown architecture, or
            transformers not installed.
    """
    path = resolve_model(folder)
    if not path.is_dir():
        raise UserInputError(f"{path}: no such folder; expected a Hugging Face model folder (config.json, weights) "
                             "or a hub name such as gpt2")
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


__all__ = ["HUB_FILES", "load_model", "looks_like_a_path", "resolve_model"]
