"""``load_pretrained``: a transformers checkpoint (BERT, ALBERT, GPT-2) as a ``PretrainedModel``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..config import DTYPES, ConfigError
from . import albert, bert, gpt2
from .architecture import Imported
from .files import locate, read_config, read_tensors, read_tokenizer
from .imported import PretrainedModel

# config.json's model_type → the module that maps its tensors.
ARCHITECTURES: dict[str, Callable[..., Imported]] = {"bert": bert.build, "albert": albert.build, "gpt2": gpt2.build}


def load_pretrained(
    name_or_dir: str | Path, *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> PretrainedModel:
    """The checkpoint at ``name_or_dir`` (a local directory, or a hub name when online) as a PretrainedModel.

    Reads config.json and safetensors only; every problem (no directory, a pickle-only
    checkpoint, an unsupported architecture, tensors that do not fit the config) is a
    ``ConfigError`` with one line. ``dtype`` and ``device`` place every weight.
    """
    if dtype not in DTYPES.values():
        raise ConfigError(f"dtype={dtype} is not one of {', '.join(DTYPES)}")
    directory = locate(name_or_dir)
    config = read_config(directory)
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        architectures = config.get("architectures")
        raise ConfigError(
            f"{directory}: unsupported architecture model_type={model_type!r} (architectures={architectures}); "
            f"pdesim imports {', '.join(ARCHITECTURES)}"
        )
    source = str(name_or_dir)
    imported = ARCHITECTURES[model_type](config, read_tensors(directory), dtype=dtype, device=str(device),
                                         source=source)
    for module in (imported.embedding, imported.readout, *imported.layers):
        module.eval()
    return PretrainedModel(
        imported.architecture, imported.embedding, imported.layers, imported.readout,
        tokenizer=read_tokenizer(directory), config=config, source=source,
    )
