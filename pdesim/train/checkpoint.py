"""Checkpoints: parameters and AdamW moments by parameter name, with the step and the spec they belong to.

One safetensors file (no pickle) per checkpoint, written atomically:

    <name>                    each distinct parameter, under its name in ``named_parameters()``
                              (which lists a tied weight once, under its first name)
    optim.<name>.<key>        the optimizer's state of that parameter (AdamW: exp_avg, exp_avg_sq, step)
    metadata step, train_spec the steps taken, and the TrainSpec as JSON

Loading matches tensors by name, not by position, and refuses, in one line, a checkpoint whose
spec shapes the network differently from the run's (naming the first field of
``MODEL_FIELDS`` that differs), or whose tensors do not fit the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..config import ConfigError
from .spec import MODEL_FIELDS, TrainSpec

OPTIM = "optim"
# The optimizer's step counter stays where torch keeps it (on the CPU unless capturable); moments follow the weights.
_HOST_STATE = ("step",)


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, spec: TrainSpec
) -> None:
    """Writes weights, optimizer state, the step and the spec into one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensors[name] = param.detach().contiguous()
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"{OPTIM}.{name}.{key}"] = torch.as_tensor(value).detach().contiguous()
    metadata = {"step": str(step), "train_spec": json.dumps(spec.to_table())}
    tmp = Path(path).with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, spec: TrainSpec) -> int:
    """Restores weights and optimizer state by name; returns the number of steps already taken."""
    path = Path(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "step" not in metadata or "train_spec" not in metadata:
            raise ConfigError(f"checkpoint {path} has no step and train spec; it was not written by pdesim train")
        _check_same_network(path, json.loads(metadata["train_spec"]), spec)
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    params = dict(model.named_parameters())
    stored = {key for key in tensors if not key.startswith(f"{OPTIM}.")}
    unmatched = sorted(stored ^ set(params))
    if unmatched:
        where = "the checkpoint" if unmatched[0] in params else "the model"
        raise ConfigError(f"checkpoint {path}: parameter {unmatched[0]!r} is missing from {where}")
    with torch.no_grad():
        for name, param in params.items():
            if tensors[name].shape != param.shape:
                raise ConfigError(
                    f"checkpoint {path}: parameter {name!r} has shape {tuple(tensors[name].shape)}, "
                    f"the model's has {tuple(param.shape)}"
                )
            param.copy_(tensors[name])
    for key, value in tensors.items():
        if key.startswith(f"{OPTIM}."):
            name, state_key = key[len(OPTIM) + 1 :].rsplit(".", 1)
            param = params.get(name)
            if param is None:
                raise ConfigError(f"checkpoint {path}: optimizer state {key!r} belongs to no parameter of the model")
            state = optimizer.state.setdefault(param, {})
            state[state_key] = value if state_key in _HOST_STATE else value.to(param.device)
    return int(metadata["step"])


def _check_same_network(path: Path, stored: dict, spec: TrainSpec) -> None:
    ours = spec.to_table()
    for name in MODEL_FIELDS:
        if stored.get(name) != ours[name]:
            raise ConfigError(
                f"checkpoint {path} was trained with {name}={stored.get(name)!r} but this run has {name}={ours[name]!r}"
            )
