"""Checkpoint tensors into pdesim modules: look-up by name, shape checks, and the per-layer MasterPDE.

A ``Checkpoint`` is the flat name → tensor dictionary of a safetensors file, read through the
prefix its model class added (``bert.``, ``albert.``, ``transformer.`` for the task heads' classes),
so an architecture module names tensors as the bare model does. Every copy checks the shape and
fails with one line naming the tensor: a checkpoint that does not fit its config is refused, never
half loaded. Tensors the import does not use (poolers, task heads, cached masks) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config import ConfigError, PDEConfig
from ..model import MasterPDE

# transformers' activation names → pdesim's. "gelu_new" and "gelu_pytorch_tanh" are both GELU's
# tanh approximation (the same formula, computed in a different order).
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                  "tanh": "tanh"}


class Checkpoint:
    """The tensors of one checkpoint, read by their bare-model names (a task head's prefix removed)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], probe: str, prefixes: tuple[str, ...], source: str):
        self.source = source
        for prefix in ("", *prefixes):
            if prefix + probe in tensors:
                self.prefix, self.tensors = prefix, tensors
                return
        raise ConfigError(f"{source}: the checkpoint has no tensor {probe!r}; it does not hold this architecture")

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The tensor ``name``, which must have ``shape``."""
        tensor = self.tensors.get(self.prefix + name)
        if tensor is None:
            raise ConfigError(f"{self.source}: the checkpoint lacks tensor {self.prefix + name!r}")
        if tuple(tensor.shape) != tuple(shape):
            raise ConfigError(
                f"{self.source}: tensor {self.prefix + name!r} has shape {tuple(tensor.shape)}, "
                f"but the config implies {tuple(shape)}"
            )
        return tensor

    def linear(self, name: str, out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in), bias (out,)) of the nn.Linear ``name``."""
        return self.take(f"{name}.weight", (out_features, in_features)), self.take(f"{name}.bias", (out_features,))

    def conv1d(self, name: str, out_features: int, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (out, in), bias (out,)) of GPT-2's Conv1D ``name``, which stores its weight as (in, out)."""
        weight = self.take(f"{name}.weight", (in_features, out_features))
        return weight.t(), self.take(f"{name}.bias", (out_features,))


def fill(parameter: torch.Tensor, value: torch.Tensor) -> None:
    """Copies a checkpoint tensor into a parameter, cast to the parameter's dtype and device."""
    with torch.no_grad():
        parameter.copy_(value.to(dtype=parameter.dtype, device=parameter.device))


def fill_linear(layer: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """``layer`` ← (weight (out, in), bias (out,)), nn.Linear's layout."""
    fill(layer.weight, weight)
    fill(layer.bias, bias)


def fill_layernorm(layer: nn.LayerNorm, checkpoint: Checkpoint, name: str, dim: int) -> None:
    """``layer`` ← the LayerNorm ``name`` (its ``.weight`` and ``.bias``)."""
    fill(layer.weight, checkpoint.take(f"{name}.weight", (dim,)))
    fill(layer.bias, checkpoint.take(f"{name}.bias", (dim,)))


def activation(config: Mapping[str, Any], key: str, source: str) -> str:
    """pdesim's name for the config's activation ``config[key]``, or a one-line refusal."""
    name = config.get(key)
    if name not in HF_ACTIVATIONS:
        raise ConfigError(
            f"{source}: {key}={name!r} is not supported; pdesim imports {', '.join(sorted(HF_ACTIVATIONS))}"
        )
    return HF_ACTIVATIONS[name]


def require(config: Mapping[str, Any], key: str, source: str) -> Any:
    """``config[key]``, which the architecture cannot do without."""
    if key not in config:
        raise ConfigError(f"{source}: config.json has no {key!r}")
    return config[key]


def layer_config(
    *,
    tokens: int,
    dim: int,
    heads: int,
    ffn_dim: int,
    activation: str,
    norm: str,
    ln_eps: float,
    causal: bool,
    dtype: torch.dtype,
    device: str,
    temperature: float | None = None,
) -> PDEConfig:
    """The PDEConfig of one imported layer: biased softmax attention, MLP reaction, no diffusion.

    ``tokens`` is the model's number of positions, the longest sequence it reads; without
    diffusion the field takes any shorter one. The seed only draws the placeholder weights that
    the checkpoint overwrites.
    """
    return PDEConfig(
        tokens=tokens, dim=dim, heads=heads, diffusion=0.0, norm=norm, residual=True, causal=causal,
        attention_bias=True, activation=activation, ffn_dim=ffn_dim, ln_eps=float(ln_eps), temperature=temperature,
        positional=False, learnable_diffusion=False, dtype=dtype, device=device,
    )


def fill_attention(pde: MasterPDE, query: tuple, key: tuple, value: tuple, output: tuple) -> None:
    """The attention of ``pde`` ← (weight, bias) pairs of W_Q, W_K, W_V and W_O in nn.Linear layout.

    pdesim stacks Q, K, V in one (3d, d) matrix, in that order, each split into heads by
    contiguous blocks of d/heads rows: the layout of BERT's, ALBERT's and GPT-2's projections.
    """
    fill_linear(
        pde.attention.qkv,
        torch.cat([query[0], key[0], value[0]]),
        torch.cat([query[1], key[1], value[1]]),
    )
    fill_linear(pde.attention.out, *output)
