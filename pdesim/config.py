"""``PDEConfig``: every knob of the master PDE in one validated, serializable dataclass.

A config is checked completely when it is made (and again by ``replace``), so a bad value is a
``ConfigError`` with one line naming the field, the value and what is allowed, before any
tensor exists. Values are normalized on the way in (sequences become tuples, ``dtype`` becomes
its name) so that ``to_dict`` gives plain JSON/TOML values and ``from_dict(to_dict(c)) == c``.

The diffusion coefficient rule (``diffusion`` against ``diffusion_scales``):
- a number D: every channel at every scale has coefficient D;
- a flat sequence of ``dim`` numbers: per-channel coefficients, the same at every scale;
- a sequence of ``len(diffusion_scales)`` sequences: per scale; each inner sequence holds
  ``dim`` per-channel numbers or a single number for all channels, e.g. ``[[0.1], [0.02]]``.
A flat sequence is always per channel, so the two forms can never be confused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

BOUNDARY_CONDITIONS = ("neumann", "periodic", "dirichlet")
NORMS = ("pre", "post", "tangent", "relax", "none")
ATTENTION_KINDS = ("softmax", "symmetric")
ATTENTION_MATRICES = ("learned", "identity")
REACTION_KINDS = ("mlp", "gradient")
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "tanh")  # gelu_tanh: GELU's tanh approximation (GPT-2, ALBERT)
GRADIENT_ACTIVATIONS = ("tanh", "relu")  # the ones with a closed-form potential ψ, ψ' = σ
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the field and what is allowed."""


def _fail(message: str) -> None:
    raise ConfigError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- validators: the one place a field is checked (PDEConfig, RunSpec and TrainSpec use them) --------


def check_int(name: str, value: Any, minimum: int) -> int:
    """An integer (not a bool) >= minimum."""
    if not _is_int(value) or value < minimum:
        _fail(f"{name}={value!r} must be an integer >= {minimum}")
    return value


def check_number(name: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    """A finite number (not a bool, not a string) >= minimum (> minimum if ``strict``), as a float."""
    if not _is_number(value) or not math.isfinite(value) or value < minimum or (strict and value == minimum):
        _fail(f"{name}={value!r} must be a finite number {'>' if strict else '>='} {minimum:g}")
    return float(value)


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0, as a float."""
    return check_number(name, value, minimum=0.0, strict=True)


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """One of ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        _fail(f"{name}={value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A real bool: "yes", 1 or "true" are refused, so a config file cannot mean something by accident."""
    if not isinstance(value, bool):
        _fail(f"{name}={value!r} must be true or false")
    return value


def _diffusion_value(value: Any, *, scalar: bool = False) -> float:
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        if scalar:
            _fail(f"diffusion={value!r} must be a finite number >= 0")
        _fail(f"diffusion contains {value!r}; every diffusion coefficient must be a finite number >= 0")
    return float(value)


@dataclass
class PDEConfig:
    """The master PDE of DESIGN §2–3: grid, terms, stabilizers, initialization and placement.

    ``init_scale`` is the gain of every weight matrix: entries are drawn from
    N(0, init_scale² / fan_in) (biases start at zero, LayerNorms at the identity), so with
    init_scale = 1 each linear map roughly preserves a token's norm.
    ``embed_scale`` is the standard deviation of the Gaussian token embeddings of
    ``MasterPDE.initial_state`` (the positional signal keeps amplitude 1).
    ``temperature`` None means β = 1/sqrt(dim/heads); ``ffn_dim`` None means 4·dim.
    ``attention_matrix``: "learned", or "identity" — A = I for symmetric attention, and
    Q = K = V = W_O = I (frozen) for softmax attention, the particle models of the literature.
    ``dtype`` may be given as a torch.dtype and is stored by name.
    ``decay`` is the rate κ_r of the −κ_r·u term that replaces the identity path when
    ``residual=False`` (DESIGN §3 has κ_r = 1). A discrete block whose k sub-layers each drop
    their identity path, u ← (1 − h)u + hX, is consistent with κ_r = k: see
    ``Transformer.continuous_config``.
    ``attention_bias`` gives the softmax attention's Q, K, V and W_O biases (BERT, GPT-2; the toy has none).
    """

    tokens: int = 64
    dim: int = 32
    heads: int = 4
    diffusion: float | Sequence[float] | Sequence[Sequence[float]] = 0.1
    bc: str = "neumann"
    attention: bool = True
    reaction: bool = True
    norm: str = "pre"
    residual: bool = True
    seed: int = 0
    spacing: float = 1.0
    diffusion_scales: Sequence[int] = (1,)
    learnable_diffusion: bool = True
    attention_kind: str = "softmax"
    attention_matrix: str = "learned"
    temperature: float | None = None
    causal: bool = False
    attention_bias: bool = False
    reaction_kind: str = "mlp"
    activation: str = "gelu"
    ffn_dim: int | None = None
    relax_kappa: float = 1.0
    decay: float = 1.0
    ln_eps: float = 1e-5
    init_scale: float = 1.0
    positional: bool = True
    embed_scale: float = 1.0
    device: str = "cpu"
    dtype: str | torch.dtype = "float32"

    def __post_init__(self) -> None:
        check_int("tokens", self.tokens, 1)
        check_int("dim", self.dim, 1)
        check_int("heads", self.heads, 1)
        if self.dim % self.heads:
            _fail(f"dim={self.dim} is not divisible by heads={self.heads}")
        check_choice("bc", self.bc, BOUNDARY_CONDITIONS)
        check_choice("norm", self.norm, NORMS)
        check_choice("attention_kind", self.attention_kind, ATTENTION_KINDS)
        check_choice("attention_matrix", self.attention_matrix, ATTENTION_MATRICES)
        check_choice("reaction_kind", self.reaction_kind, REACTION_KINDS)
        check_choice("activation", self.activation, ACTIVATIONS)
        flags = ("attention", "reaction", "residual", "learnable_diffusion", "causal", "positional", "attention_bias")
        for flag in flags:
            check_bool(flag, getattr(self, flag))
        check_int("seed", self.seed, 0)
        self.spacing = check_positive("spacing", self.spacing)
        self.relax_kappa = check_number("relax_kappa", self.relax_kappa, minimum=0.0)
        self.decay = check_number("decay", self.decay, minimum=0.0)
        self.embed_scale = check_number("embed_scale", self.embed_scale, minimum=0.0)
        self.ln_eps = check_number("ln_eps", self.ln_eps, minimum=0.0)
        self.init_scale = check_number("init_scale", self.init_scale, minimum=0.0)
        if self.temperature is not None:
            self.temperature = check_positive("temperature", self.temperature)
        if self.ffn_dim is not None:
            check_int("ffn_dim", self.ffn_dim, 1)
        if self.reaction_kind == "gradient" and self.activation not in GRADIENT_ACTIVATIONS:
            _fail(
                f"activation={self.activation!r} has no closed-form potential for reaction_kind='gradient'; "
                f"use one of {', '.join(repr(a) for a in GRADIENT_ACTIVATIONS)}"
            )
        if self.causal and self.attention_kind == "symmetric":
            _fail("causal=True is not available with attention_kind='symmetric' (the USA flow is bidirectional)")
        self._normalize_scales()
        self._normalize_diffusion()
        self._normalize_placement()

    def _normalize_scales(self) -> None:
        scales = self.diffusion_scales
        if _is_int(scales) or isinstance(scales, str) or not isinstance(scales, Sequence) or not scales:
            _fail(f"diffusion_scales={scales!r} must be a non-empty sequence of integer dilations")
        limit = self.tokens + 1 if self.bc == "dirichlet" else self.tokens
        for s in scales:
            if not _is_int(s) or not 1 <= s <= limit:
                _fail(f"diffusion_scales contains {s!r}; each dilation must be an integer in 1..{limit} "
                      f"(tokens={self.tokens}, bc={self.bc!r})")
        self.diffusion_scales = tuple(scales)

    def _normalize_diffusion(self) -> None:
        value = self.diffusion
        if _is_number(value):
            self.diffusion = _diffusion_value(value, scalar=True)
            return
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            _fail(f"diffusion={value!r} must be a number, a sequence of dim={self.dim} numbers, "
                  f"or one sequence per scale")
        if all(_is_number(v) for v in value):
            if len(value) != self.dim:
                _fail(f"diffusion has {len(value)} entries but dim={self.dim}; a flat sequence is per channel "
                      f"(per scale, nest it: [[D_1], [D_2], ...])")
            self.diffusion = tuple(_diffusion_value(v) for v in value)
            return
        n_scales = len(self.diffusion_scales)
        if len(value) != n_scales:
            _fail(f"diffusion has {len(value)} per-scale entries but diffusion_scales={list(self.diffusion_scales)} "
                  f"has {n_scales}")
        rows = []
        for row in value:
            if isinstance(row, str) or not isinstance(row, Sequence) or len(row) not in (1, self.dim):
                _fail(f"diffusion per-scale entry {row!r} must be a sequence of 1 or dim={self.dim} numbers")
            rows.append(tuple(_diffusion_value(v) for v in row))
        self.diffusion = tuple(rows)

    def _normalize_placement(self) -> None:
        dtype = self.dtype
        if isinstance(dtype, torch.dtype):
            names = {v: k for k, v in DTYPES.items()}
            if dtype not in names:
                _fail(f"dtype={dtype} is not one of {', '.join(DTYPES)}")
            self.dtype = names[dtype]
        else:
            check_choice("dtype", dtype, tuple(DTYPES))
        device = self.device
        if isinstance(device, torch.device):
            device = str(device)
        try:
            torch.device(device)
        except (RuntimeError, TypeError):
            _fail(f"device={self.device!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1')")
        self.device = device

    # -- derived values ------------------------------------------------------------------------
    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def beta(self) -> float:
        """Attention temperature β (the SDPA scale)."""
        return self.temperature if self.temperature is not None else 1.0 / math.sqrt(self.head_dim)

    @property
    def hidden_dim(self) -> int:
        return self.ffn_dim if self.ffn_dim is not None else 4 * self.dim

    def diffusion_table(self) -> list[list[float]]:
        """The coefficient D_{s,c} of every scale s and channel c, by the rule in the module docstring."""
        n_scales, d = len(self.diffusion_scales), self.dim
        value = self.diffusion
        if isinstance(value, float):
            return [[value] * d for _ in range(n_scales)]
        if all(isinstance(v, float) for v in value):
            return [list(value) for _ in range(n_scales)]
        return [list(row) * d if len(row) == 1 else list(row) for row in value]

    @property
    def has_diffusion(self) -> bool:
        """False when every coefficient is exactly zero: the term is then skipped entirely."""
        return any(v != 0.0 for row in self.diffusion_table() for v in row)

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML values. Fields set to None (automatic defaults) are left out: TOML has no null."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PDEConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            _fail(f"unknown config key {unknown[0]!r}; known keys: {', '.join(known)}")
        return cls(**data)

    def replace(self, **changes: Any) -> PDEConfig:
        """A copy with ``changes`` applied, validated again."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            _fail(f"unknown config key {unknown[0]!r}; known keys: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)
