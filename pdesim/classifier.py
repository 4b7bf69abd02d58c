"""A sequence classifier around the discrete Transformer: embed, run the blocks, pool, classify.

    ids (B, n) ─ token + position embedding ─ [CLS] ─ blocks (pdesim.Transformer) ─ LN_f (pre-LN)
        ─ pool (mean over valid tokens, or the CLS token) ─ linear head ─ logits (B, classes)

The blocks are a ``pdesim.Transformer`` built from a ``MasterPDE``, so every switch of the PDE
(norm, residual, diffusion, ...) and every PDE Diffusion Layer position applies unchanged.
By default each layer has its own weights and h = 1 (an ordinary Transformer); pass
``per_layer=False`` and ``t_end`` for the weight-tied, time-stepped variant.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import solvers

from .config import ConfigError, PDEConfig
from .model import IN_BLOCK_POSITIONS, MasterPDE, sinusoidal_positions
from .transformer import Transformer, layer_seed, make_inserts

POOLINGS = ("mean", "cls")


class Classifier(nn.Module):
    """Logits for token sequences; ``cfg.tokens`` is the sequence length the blocks see (CLS included)."""

    def __init__(
        self,
        cfg: PDEConfig,
        *,
        vocab_size: int,
        num_classes: int,
        layers: int,
        t_end: float | None = None,
        pooling: str = "mean",
        pad_id: int | None = 0,
        per_layer: bool = True,
        order: str = "lie",
        diffusion_at: Iterable[str] = (),
        diffusion_scales: tuple[int, ...] = (1,),
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling={pooling!r} is not one of 'mean', 'cls'")
        for name, value in (("vocab_size", vocab_size), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be an integer >= 1")
        self.cfg, self.pooling, self.pad_id = cfg, pooling, pad_id
        self.max_len = cfg.tokens - (1 if pooling == "cls" else 0)
        if self.max_len < 1:
            raise ConfigError(f"tokens={cfg.tokens} leaves no room for a sequence next to the CLS token")
        if not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"layers={layers!r} must be an integer >= 1")
        block_cfg = Transformer.continuous_config(cfg)
        diffusion_at = tuple(diffusion_at)
        in_block = [p for p in diffusion_at if p in IN_BLOCK_POSITIONS]
        outer = [p for p in diffusion_at if p not in IN_BLOCK_POSITIONS]
        if per_layer:
            # Every layer its own weights, drawn from its own seed as in an ordinary Transformer,
            # and its own in-block diffusion layers.
            pdes = [MasterPDE(block_cfg.replace(seed=layer_seed(cfg.seed, index))) for index in range(layers)]
            for pde in pdes:
                try:
                    pde.add_inserts(make_inserts(cfg, in_block, diffusion_scales))
                except ValueError as err:
                    raise ConfigError(str(err)) from None
            block_inserts = make_inserts(cfg, outer, diffusion_scales)
        else:
            pdes = [MasterPDE(block_cfg)] * layers
            block_inserts = make_inserts(cfg, diffusion_at, diffusion_scales)
        self.blocks = Transformer(
            pdes, float(layers) if t_end is None else t_end, order=order, inserts=block_inserts
        )
        factory = {"device": cfg.device, "dtype": cfg.torch_dtype}
        with torch.random.fork_rng(devices=[]):  # seeded, and the global RNG is left alone
            torch.manual_seed(cfg.seed)
            self.embed = nn.Embedding(vocab_size, cfg.dim, **factory)
            self.head = nn.Linear(cfg.dim, num_classes, **factory)
        self.position = nn.Parameter(sinusoidal_positions(self.max_len, cfg.dim).to(**factory))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim, **factory)) if pooling == "cls" else None
        self.ln_f = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps, **factory) if cfg.norm == "pre" else nn.Identity()

    def save(self, directory: str | Path) -> Path:
        """Writes this model to ``directory`` (model.toml + model.safetensors); ``pdesim.load`` reads it back."""
        from .persist import save  # persist imports this module

        return save(self, directory)

    def valid_mask(self, ids: torch.Tensor) -> torch.Tensor | None:
        """(B, n) bool mask of real tokens (ids != pad_id), or None without a pad id."""
        return None if self.pad_id is None else ids != self.pad_id

    def embed_tokens(self, ids: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The initial condition u(x, 0) of the blocks and its mask (CLS prepended when pooling='cls')."""
        if ids.ndim != 2 or ids.shape[1] != self.max_len:
            raise ValueError(f"expected token ids of shape (batch, {self.max_len}), got {tuple(ids.shape)}")
        u = self.embed(ids) + self.position
        if self.cls is not None:
            u = torch.cat([self.cls.expand(ids.shape[0], -1, -1), u], dim=1)
            if mask is not None:
                mask = torch.cat([mask.new_ones(ids.shape[0], 1), mask], dim=1)
        return u, mask

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, return_states: bool = False):
        """Logits (B, classes); with ``return_states`` also every layer's state (L + 1, B, N, d)."""
        mask = self.valid_mask(ids) if mask is None else mask
        u, mask = self.embed_tokens(ids, mask)
        states = self.blocks(u, mask, return_all=True)
        logits = self.head(self._pool(self.ln_f(states[-1]), mask))
        return (logits, states) if return_states else logits

    def _pool(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, d): the CLS token, or the mean over valid tokens."""
        if self.pooling == "cls":
            return x[:, 0]
        if mask is None:
            return x.mean(dim=1)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class PDEClassifier(Classifier):
    """The classifier with its blocks replaced by integrating the master PDE from 0 to ``t_end``.

    Diffusion layers at in-block positions are part of the PDE's field; ``after_embedding`` and
    ``before_head`` act on the initial and the final state. ``between_layers`` has no meaning
    without layers and is refused. ``compile=True`` solves with ``solvers.solve(compile=True)``
    (one compiled step per state shape and grad mode; the seconds spent in ``compile_time``).
    """

    def __init__(
        self,
        cfg: PDEConfig,
        *,
        t_end: float,
        solver: str,
        dt: float,
        adjoint: bool,
        compile: bool = False,
        **kwargs: Any,
    ):
        if "between_layers" in tuple(kwargs.get("diffusion_at", ())):
            raise ConfigError("diffusion position 'between_layers' needs layers; the PDE model has none")
        super().__init__(cfg, t_end=t_end, per_layer=False, **kwargs)
        self.t_end, self.solver, self.dt, self.adjoint, self.compile = t_end, solver, dt, adjoint, compile
        self.last_status = solvers.Status.SUCCESS
        self.compile_time: float | None = None  # seconds spent compiling the solver's step (None: never compiled)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, return_states: bool = False):
        mask = self.valid_mask(ids) if mask is None else mask
        u, mask = self.embed_tokens(ids, mask)
        u = self.blocks.outer_insert("after_embedding", u, mask)
        pde = self.blocks.pdes[0]
        fixed = self.solver in solvers.FIXED_METHODS
        # kept set (not a context): a recomputing backward pass must see the same mask
        pde.set_padding_mask(mask)
        sol = solvers.solve(
            pde,
            u,
            (0.0, self.t_end),
            method=self.solver,
            dt=self.dt if fixed else None,
            adjoint=self.adjoint,
            project=pde.projection if fixed else None,
            blowup=None,
            compile=self.compile,
        )
        self.last_status = sol.status
        if sol.stats.get("compiled"):
            self.compile_time = (self.compile_time or 0.0) + sol.stats["compile_time"]
        x = self.ln_f(self.blocks.outer_insert("before_head", sol.u[-1], mask))
        logits = self.head(self._pool(x, mask))
        return (logits, sol.u) if return_states else logits
