"""Finding and reading a transformers checkpoint: a local directory or a hub name, safetensors only.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``), and usually its tokenizer. Pickled checkpoints
(``pytorch_model.bin``) are refused: unpickling runs code from the file. A name that is not a
local path is fetched from the Hugging Face hub (``huggingface_hub``, part of ``pdesim[hf]``); on a
machine without a network, or with HF_HUB_OFFLINE=1 and nothing cached, that is a one-line error.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError

# A hub name is "name" or "owner/name"; anything else (absolute paths, ./x, a/b/c) is a local path.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
_PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
_FETCHED = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*", "vocab*", "merges.txt",
            "special_tokens_map.json", "spiece.model"]


def locate(name_or_dir: str | Path) -> Path:
    """The checkpoint directory of a local path or a hub name."""
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ConfigError(f"{name_or_dir}: not a directory; pass the checkpoint's directory")
    text = str(name_or_dir)
    if not _HUB_NAME.fullmatch(text) or ".." in text:
        raise ConfigError(f"{name_or_dir}: no such directory")
    return _fetch(text)


def _fetch(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConfigError(
            f"{name}: no such directory, and fetching it from the hub needs huggingface_hub (pip install 'pdesim[hf]')"
        ) from None
    try:
        return Path(snapshot_download(name, allow_patterns=_FETCHED))
    except Exception as error:  # the hub client raises many kinds; every one means "not available here"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{name}: no such directory, and it could not be fetched from the hub (offline?): {reason}"
        ) from None


def read_config(directory: Path) -> dict[str, Any]:
    """config.json as a dict."""
    path = directory / "config.json"
    if not path.is_file():
        raise ConfigError(f"{directory}: no config.json; not a transformers checkpoint directory")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: cannot be read as JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return config


def read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors file(s), by name, as stored (on the CPU)."""
    from safetensors.torch import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError) as error:
            raise ConfigError(f"{index}: not a safetensors index ({error})") from None
        files = [directory / shard for shard in sorted(set(weight_map.values()))]
    else:
        pickled = [name for name in _PICKLES if (directory / name).exists()]
        if pickled:
            raise ConfigError(
                f"{directory}: only {pickled[0]}, which pdesim does not read (a pickle can run code); "
                "convert it with save_pretrained(dir, safe_serialization=True)"
            )
        raise ConfigError(f"{directory}: no model.safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            tensors.update(load_file(str(file)))
        except Exception as error:  # safetensors raises its own error types for damaged files
            raise ConfigError(f"{file}: cannot be read as safetensors ({error})") from None
    return tensors


def read_tokenizer(directory: Path) -> Any:
    """transformers' tokenizer of the directory, or None (no tokenizer files, or no transformers)."""
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
    if not any((directory / name).is_file() for name in names):
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError):  # files for another tokenizer kind, or incomplete: ids still work
        return None
