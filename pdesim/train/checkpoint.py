"""Checkpoints: parameters and AdamW moments by parameter name, with the step, the spec and the history.

One safetensors file (no pickle) per checkpoint, written atomically:

    <name>                    each distinct parameter, under its name in ``named_parameters()``
                              (which lists a tied weight once, under its first name)
    optim.<name>.<key>        the optimizer's state of that parameter (AdamW: exp_avg, exp_avg_sq, step)
    metadata step             the optimizer steps taken
    metadata train_spec       the TrainSpec as JSON
    metadata history          the metric rows of every step taken, as JSON, so a resumed run's
                              metrics.csv and summary continue the whole run, wherever the file is
    metadata wall_time        seconds spent training up to this step

A checkpoint is untrusted input: ``read_checkpoint`` refuses, in one line, anything that is not a
regular safetensors file written by ``pdesim train`` (a directory, an empty or truncated file, a
pickle renamed .safetensors, no or malformed metadata, a step outside 0..steps), a spec that
shapes the network differently from the run's (naming the first field of ``MODEL_FIELDS`` that
differs), and tensors that are missing, extra, shaped or typed unlike the model's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..config import ConfigError
from .spec import MODEL_FIELDS, TrainSpec

OPTIM = "optim"
# The optimizer's step counter stays where torch keeps it (on the CPU unless capturable); moments follow the weights.
_HOST_STATE = ("step",)
_OPTIMIZER_KEYS = ("exp_avg", "exp_avg_sq", "step")


@dataclass
class Checkpoint:
    """A checkpoint read and checked, not yet applied to a model."""

    path: Path
    step: int
    spec: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    spec: TrainSpec,
    history: list[dict[str, Any]] | None = None,
    wall_time: float = 0.0,
) -> None:
    """Writes weights, optimizer state, the step, the spec and the rows so far into one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        tensors[name] = param.detach().contiguous()
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"{OPTIM}.{name}.{key}"] = torch.as_tensor(value).detach().contiguous()
    metadata = {
        "step": str(step),
        "train_spec": json.dumps(spec.to_table()),
        "history": json.dumps([row for row in history or [] if row["step"] <= step]),
        "wall_time": repr(float(wall_time)),
    }
    tmp = Path(path).with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def read_checkpoint(path: Path, spec: TrainSpec) -> Checkpoint:
    """Reads and checks a checkpoint for a run of ``spec``; every problem is one ConfigError line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise ConfigError(f"checkpoint {path} is empty")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"checkpoint {path} is not a readable safetensors file ({reason})") from None
    if "step" not in metadata or "train_spec" not in metadata:
        raise ConfigError(f"checkpoint {path} has no step and train spec; it was not written by pdesim train")
    try:
        step = int(metadata["step"])
        stored = json.loads(metadata["train_spec"])
        history = json.loads(metadata.get("history", "[]"))
        wall_time = float(metadata.get("wall_time", "0"))
    except ValueError:
        raise ConfigError(f"checkpoint {path} has malformed metadata (step, train_spec, history)") from None
    if not isinstance(stored, dict) or not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ConfigError(f"checkpoint {path} has malformed metadata (train_spec, history)")
    if step < 0:
        raise ConfigError(f"checkpoint {path} is at step {step}; a step count cannot be negative")
    if step >= spec.steps:
        raise ConfigError(
            f"checkpoint {path} is at step {step}, which leaves nothing to train for steps={spec.steps}; "
            "raise --steps to continue it"
        )
    _check_same_network(path, stored, spec)
    return Checkpoint(path, step, stored, tensors, [r for r in history if r.get("step", math.inf) <= step], wall_time)


def restore(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Copies the checkpoint's weights and optimizer state into ``model`` and ``optimizer``, by name."""
    path, tensors = checkpoint.path, checkpoint.tensors
    params = dict(model.named_parameters())
    stored = {key for key in tensors if not key.startswith(f"{OPTIM}.")}
    unmatched = sorted(stored ^ set(params))
    if unmatched:
        where = "the checkpoint" if unmatched[0] in params else "the model"
        raise ConfigError(f"checkpoint {path}: parameter {unmatched[0]!r} is missing from {where}")
    for name, param in params.items():
        if tensors[name].shape != param.shape or tensors[name].dtype != param.dtype:
            raise ConfigError(
                f"checkpoint {path}: parameter {name!r} is {tuple(tensors[name].shape)} {tensors[name].dtype}, "
                f"the model's is {tuple(param.shape)} {param.dtype}"
            )
    optimizer_state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(f"{OPTIM}."):
            name, state_key = key[len(OPTIM) + 1 :].rsplit(".", 1) if "." in key[len(OPTIM) + 1 :] else (key, "")
            param = params.get(name)
            if param is None or state_key not in _OPTIMIZER_KEYS:
                raise ConfigError(f"checkpoint {path}: optimizer state {key!r} belongs to no parameter of the model")
            if state_key != "step" and value.shape != param.shape:
                raise ConfigError(f"checkpoint {path}: optimizer state {key!r} does not match its parameter's shape")
            placed = value if state_key in _HOST_STATE else value.to(param.device)
            optimizer_state.setdefault(param, {})[state_key] = placed
    # a parameter that never had a gradient has no state; one that has some must have all of it
    full = set(_OPTIMIZER_KEYS)
    incomplete = [name for name, p in params.items() if set(optimizer_state.get(p, full)) != full]
    if incomplete:
        raise ConfigError(f"checkpoint {path}: the optimizer state of {incomplete[0]!r} is incomplete")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])
    for param, state in optimizer_state.items():
        optimizer.state[param] = state


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, spec: TrainSpec) -> int:
    """Restores weights and optimizer state by name; returns the number of steps already taken."""
    checkpoint = read_checkpoint(path, spec)
    restore(checkpoint, model, optimizer)
    return checkpoint.step


def _check_same_network(path: Path, stored: dict, spec: TrainSpec) -> None:
    ours = spec.to_table()
    for name in MODEL_FIELDS:
        if stored.get(name) != ours[name]:
            raise ConfigError(
                f"checkpoint {path} was trained with {name}={stored.get(name)!r} but this run has {name}={ours[name]!r}"
            )
