"""Checkpoint tensors into pdesim modules: look-up by name, shape checks, and the per-layer MasterPDE.

A ``Checkpoint`` is the flat name → tensor dictionary of a safetensors file, read through the
prefix its model class added (``bert.``, ``albert.``, ``transformer.`` for the task heads' classes),
so an architecture module names tensors as the bare model does. Every copy checks the shape and
fails with one line naming the tensor: a checkpoint that does not fit its config is refused, never
half loaded. Tensors the import does not use (poolers, task heads, cached masks) are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class EmbeddingNames:
    """Where an architecture keeps its embedding tables; None where it has no such part."""

    word: str
    position: str
    token_type: str | None = None
    norm: str | None = None  # a LayerNorm: ``.weight`` and ``.bias``
    projection: str | None = None  # an nn.Linear to the hidden width (ALBERT)


@dataclass(frozen=True)
class LayerNames:
    """Where one layer's tensors sit, relative to the layer's prefix: the architectures differ only in these.

    ``attention`` names W_Q, W_K and W_V, or one fused (3d, d) projection (GPT-2's c_attn), which
    pdesim's own layout matches: Q, K, V stacked in that order. ``conv1d``: every weight is stored
    as (in, out), GPT-2's Conv1D layout, the transpose of nn.Linear's.
    """

    attention: tuple[str, ...]
    attention_output: str
    ln1: str
    ffn_in: str
    ffn_out: str
    ln2: str
    conv1d: bool = False


def fill_embedding(embedding: nn.Module, checkpoint: Checkpoint, names: EmbeddingNames) -> None:
    """``embedding`` (a TokenEmbedding) ← the tables ``names``, each of the shape its module was built with."""
    modules = {"word": embedding.word, "position": embedding.position, "token_type": embedding.token_type}
    for part, module in modules.items():
        if module is not None:
            name = getattr(names, part)
            fill(module.weight, checkpoint.take(name, tuple(module.weight.shape)))
    if embedding.norm is not None:
        fill_layernorm(embedding.norm, checkpoint, names.norm, embedding.norm.normalized_shape[0])
    if embedding.projection is not None:
        projection = embedding.projection
        fill_linear(projection, *checkpoint.linear(names.projection, projection.out_features, projection.in_features))


def fill_layer(pde: MasterPDE, checkpoint: Checkpoint, prefix: str, names: LayerNames) -> MasterPDE:
    """``pde`` ← the layer at ``prefix``: attention (Q, K, V, O with biases), LN₁, the MLP (W₁, W₂), LN₂."""
    dim, ffn = pde.cfg.dim, pde.cfg.hidden_dim
    read = checkpoint.conv1d if names.conv1d else checkpoint.linear
    if len(names.attention) == 1:
        qkv = read(f"{prefix}.{names.attention[0]}", 3 * dim, dim)
    else:
        parts = [read(f"{prefix}.{name}", dim, dim) for name in names.attention]
        qkv = torch.cat([weight for weight, _ in parts]), torch.cat([bias for _, bias in parts])
    fill_linear(pde.attention.qkv, *qkv)
    fill_linear(pde.attention.out, *read(f"{prefix}.{names.attention_output}", dim, dim))
    fill_layernorm(pde.ln1, checkpoint, f"{prefix}.{names.ln1}", dim)
    fill_linear(pde.reaction.w1, *read(f"{prefix}.{names.ffn_in}", ffn, dim))
    fill_linear(pde.reaction.w2, *read(f"{prefix}.{names.ffn_out}", dim, ffn))
    fill_layernorm(pde.ln2, checkpoint, f"{prefix}.{names.ln2}", dim)
    return pde
