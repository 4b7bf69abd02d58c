"""The discrete Transformer that shares its weights with a ``MasterPDE`` (DESIGN §4).

One block is one time step h = T/L of the master PDE, taken by operator splitting: each
sub-layer (diffusion, attention, FFN, and the ``relax`` stabilizer) advances the state by one
explicit step of its own term. With forward Euler sub-steps the blocks read

    pre:   u ← u + h·Att(LN₁u);      u ← u + h·Rea(LN₂u)
    post:  u ← LN₁(u + h·Att(u));    u ← LN₂(u + h·Rea(u))
    none:  u ← u + h·Att(u);         u ← u + h·Rea(u)

and h = 1 is the textbook Transformer. Without residual connections every attention/FFN update
u + h·X becomes (1 − h)·u + h·X (h = 1 gives u ← X): that is the Euler step of X(u) − u, so a
block with k such sub-layers is consistent with du/dt = Φ(u) − k·u, i.e. a MasterPDE with
``decay = k`` (``Transformer.continuous_config`` builds it). The diffusion and relax sub-steps
are PDE terms, not residual branches, and keep the form u + h·X.

Orders: ``lie`` runs [diffusion, attention, FFN] in sequence (first order in h); ``strang``
runs the Macaron layout ½FFN, ½diffusion, attention, ½diffusion, ½FFN, which is second order
when the sub-steps are (``substep="midpoint"``, "heun" or "rk4"; Euler sub-steps keep order 1).

The PDE Diffusion Layer (``PDEDiffusion``) can be inserted at seven named positions:

- ``after_embedding``: on the input, once, before the first block;
- ``before_norm``: on the stream entering every LayerNorm of a block (pre: LN₁(P u), LN₂(P u);
  post: LN(P(u + h·X))), so both branches see a smoothed input;
- ``before_attention``: on the attention input only, after LN₁ in pre-LN: Att(P(LN₁u));
- ``after_attention``: on the attention output: u + h·P(Att(·));
- ``after_ffn``: on the FFN output: u + h·P(Rea(·));
- ``between_layers``: on the stream between consecutive blocks (L − 1 times);
- ``before_head``: on the output of the last block (the classifier's pre-head state).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

import solvers
from solvers.steppers import explicit_rk

from .config import ConfigError, PDEConfig
from .diffusion_layer import PDEDiffusion
from .model import MasterPDE

POSITIONS = (
    "after_embedding",
    "before_attention",
    "after_attention",
    "after_ffn",
    "between_layers",
    "before_norm",
    "before_head",
)
ORDERS = ("lie", "strang")
DISCRETE_NORMS = ("pre", "post", "none", "relax")

Branch = Callable[[torch.Tensor], torch.Tensor]


def _identity(u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return u


class Block(nn.Module):
    """One layer: a step of size h through the sub-layers of one ``MasterPDE``'s terms."""

    def __init__(self, pde: MasterPDE, h: float, *, order: str, substep: str, inserts: Mapping[str, nn.Module]):
        super().__init__()
        cfg = pde.cfg
        self.h, self.order, self.norm, self.residual = float(h), order, cfg.norm, cfg.residual
        self.attention, self.reaction = pde.attention, pde.reaction  # shared modules: tied weights
        self.ln1, self.ln2, self.diffusion = pde.ln1, pde.ln2, pde.diffusion
        self.use_attention, self.use_reaction = cfg.attention, cfg.reaction
        self.use_diffusion, self.relax_kappa = cfg.has_diffusion, cfg.relax_kappa
        self.inserts = nn.ModuleDict({k: v for k, v in inserts.items() if k in _IN_BLOCK})
        self._step = explicit_rk(lambda t, u: self._velocity(u), substep).step
        self._velocity: Branch = _identity  # set per sub-step: the sub-field being stepped
        self._mask: torch.Tensor | None = None

    def _insert(self, name: str, u: torch.Tensor) -> torch.Tensor:
        layer = self.inserts[name] if name in self.inserts else None
        return u if layer is None else layer(u, self._mask)

    # -- branches (X of "u + h·X") -------------------------------------------------------------
    def _norm_input(self, ln: nn.Module, u: torch.Tensor) -> torch.Tensor:
        return ln(self._insert("before_norm", u)) if self.norm == "pre" else u

    def _attention_branch(self, u: torch.Tensor) -> torch.Tensor:
        x = self._insert("before_attention", self._norm_input(self.ln1, u))
        return self._insert("after_attention", self.attention(x, self._mask))

    def _ffn_branch(self, u: torch.Tensor) -> torch.Tensor:
        return self._insert("after_ffn", self.reaction(self._norm_input(self.ln2, u)))

    def _diffusion_branch(self, u: torch.Tensor) -> torch.Tensor:
        return self.diffusion(u, self._mask)

    def _relax_branch(self, u: torch.Tensor) -> torch.Tensor:
        return -self.relax_kappa * (u - self.ln1(u))

    # -- sub-steps -------------------------------------------------------------------------------
    def _advance(self, branch: Branch, u: torch.Tensor, dt: float, *, residual_branch: bool) -> torch.Tensor:
        if residual_branch and not self.residual:
            self._velocity = lambda v: branch(v) - v  # (1 − h)u + hX for an Euler sub-step
        else:
            self._velocity = branch
        out = self._step(0.0, u, dt)
        if self._mask is not None:
            out = torch.where(self._mask.unsqueeze(-1), out, u)
        return out

    def _post_norm(self, ln: nn.Module, u: torch.Tensor) -> torch.Tensor:
        if self.norm != "post":
            return u
        normed = ln(self._insert("before_norm", u))
        return normed if self._mask is None else torch.where(self._mask.unsqueeze(-1), normed, u)

    def _attention_step(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        if not self.use_attention:
            return u
        return self._post_norm(self.ln1, self._advance(self._attention_branch, u, dt, residual_branch=True))

    def _ffn_step(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        if not self.use_reaction:
            return u
        return self._post_norm(self.ln2, self._advance(self._ffn_branch, u, dt, residual_branch=True))

    def _diffusion_step(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        u = self._advance(self._diffusion_branch, u, dt, residual_branch=False) if self.use_diffusion else u
        if self.norm == "relax":
            u = self._advance(self._relax_branch, u, dt, residual_branch=False)
        return u

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self._mask, h = mask, self.h
        if self.order == "lie":
            u = self._diffusion_step(u, h)
            u = self._attention_step(u, h)
            return self._ffn_step(u, h)
        u = self._ffn_step(u, h / 2)
        u = self._diffusion_step(u, h / 2)
        u = self._attention_step(u, h)
        u = self._diffusion_step(u, h / 2)
        return self._ffn_step(u, h / 2)


_IN_BLOCK = ("before_attention", "after_attention", "after_ffn", "before_norm")


class Transformer(nn.Module):
    """L blocks of step h = T/L over the terms of a MasterPDE: its discrete counterpart.

    Build it with ``Transformer.from_pde``. ``forward(u, mask=None, return_all=False)`` maps
    states (B, N, d) to states (B, N, d), or to every layer's state (L + 1, B, N, d).
    """

    def __init__(
        self,
        pdes: list[MasterPDE],
        t_end: float,
        *,
        order: str = "lie",
        substep: str = "euler",
        inserts: Mapping[str, nn.Module] | None = None,
    ):
        super().__init__()
        if order not in ORDERS:
            raise ConfigError(f"order={order!r} is not one of 'lie', 'strang'")
        if not t_end > 0:
            raise ConfigError(f"t_end={t_end!r} must be a positive number")
        cfg = pdes[0].cfg
        if cfg.norm not in DISCRETE_NORMS:
            raise ConfigError(
                f"norm={cfg.norm!r} has no discrete block; use one of {', '.join(DISCRETE_NORMS)} "
                "('post' is the discrete counterpart of 'tangent')"
            )
        inserts = dict(inserts or {})
        unknown = sorted(set(inserts) - set(POSITIONS))
        if unknown:
            raise ConfigError(f"unknown diffusion position {unknown[0]!r}; choose from {', '.join(POSITIONS)}")
        if "before_norm" in inserts and cfg.norm not in ("pre", "post"):
            raise ConfigError(f"diffusion position 'before_norm' needs a LayerNorm; norm={cfg.norm!r} has none")
        self.layers, self.t_end, self.order, self.substep = len(pdes), float(t_end), order, substep
        self.h = self.t_end / self.layers
        self.pdes = nn.ModuleList(_unique(pdes))
        self._pde_sequence = list(pdes)
        self.inserts = nn.ModuleDict({k: v for k, v in inserts.items() if k not in _IN_BLOCK})
        self.blocks = nn.ModuleList(Block(pde, self.h, order=order, substep=substep, inserts=inserts) for pde in pdes)

    @classmethod
    def from_pde(
        cls,
        model: MasterPDE,
        layers: int,
        t_end: float,
        *,
        order: str = "lie",
        substep: str = "euler",
        per_layer: bool = False,
        diffusion_at: Iterable[str] | Mapping[str, nn.Module] = (),
        diffusion_scales: tuple[int, ...] = (1,),
    ) -> Transformer:
        """L = ``layers`` blocks of step h = t_end / L sharing ``model``'s very modules.

        ``per_layer=True`` gives each block its own copy of the weights (piecewise-constant θ(t));
        its continuous counterpart is ``transformer.continuous()``. ``diffusion_at`` names the
        positions that get a PDE Diffusion Layer (or maps names to ready layers).
        """
        if not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"layers={layers!r} must be an integer >= 1")
        cfg = model.cfg
        expected = cls.continuous_config(cfg).decay
        if not cfg.residual and cfg.decay != expected:
            raise ConfigError(
                f"residual=False: these blocks are Euler steps of du/dt = Φ(u) − {expected:g}·u, but the model has "
                f"decay={cfg.decay:g}; build it from Transformer.continuous_config(cfg) to pair them"
            )
        pdes = [copy.deepcopy(model) for _ in range(layers)] if per_layer else [model] * layers
        inserts = make_inserts(cfg, diffusion_at, diffusion_scales)
        return cls(pdes, t_end, order=order, substep=substep, inserts=inserts)

    @staticmethod
    def continuous_config(cfg: PDEConfig) -> PDEConfig:
        """The PDE whose solution these blocks converge to: without residual, decay = #residual sub-layers."""
        if cfg.residual:
            return cfg
        return cfg.replace(decay=float(int(cfg.attention) + int(cfg.reaction)))

    def _outer(self, name: str, u: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.inserts[name](u, mask) if name in self.inserts else u

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, return_all: bool = False) -> torch.Tensor:
        u = self._outer("after_embedding", u, mask)
        states = [u]
        for index, block in enumerate(self.blocks):
            if index > 0:
                u = self._outer("between_layers", u, mask)
            u = block(u, mask)
            states.append(u)
        states[-1] = self._outer("before_head", u, mask)
        return torch.stack(states) if return_all else states[-1]

    def continuous(self) -> MasterPDE | LayeredPDE:
        """The PDE with the same weights: the MasterPDE itself when tied, else θ(t) piecewise constant."""
        if len(self.pdes) == 1:
            return self.pdes[0]
        return LayeredPDE(self._pde_sequence, self.t_end)


def make_inserts(
    cfg: PDEConfig, diffusion_at: Iterable[str] | Mapping[str, nn.Module], scales: tuple[int, ...] = (1,)
) -> dict[str, nn.Module]:
    """One PDE Diffusion Layer per named position (or the given layers), on the config's device/dtype."""
    if isinstance(diffusion_at, Mapping):
        return dict(diffusion_at)
    inserts = {name: PDEDiffusion(cfg.dim, scales=scales) for name in diffusion_at}
    for layer in inserts.values():
        layer.to(device=cfg.device, dtype=cfg.torch_dtype)
    return inserts


def _unique(modules: list[nn.Module]) -> list[nn.Module]:
    seen: dict[int, nn.Module] = {}
    for module in modules:
        seen.setdefault(id(module), module)
    return list(seen.values())


class LayeredPDE(nn.Module):
    """du/dt = f_l(t, u) for t in the l-th of L equal intervals of [0, T]: piecewise-constant weights.

    ``forward(t, u)`` picks the interval of t (for solvers that stay inside one); ``solve``
    integrates interval by interval, so no step ever straddles a change of weights.
    """

    def __init__(self, pdes: list[MasterPDE], t_end: float):
        super().__init__()
        self.pdes = nn.ModuleList(_unique(pdes))
        self._sequence = pdes
        self.t_end = float(t_end)
        self.h = self.t_end / len(pdes)

    def forward(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        index = min(max(int(float(t) / self.h), 0), len(self._sequence) - 1)
        return self._sequence[index](t, u)

    def solve(
        self, u0: torch.Tensor, *, method: str = "rk4", dt: float | None = None, **kwargs: Any
    ) -> solvers.Solution:
        """Integrates [0, T] one weight interval at a time; saves the state at every interval end."""
        times, states, stats = [0.0], [u0], {"nfe": 0, "steps": 0}
        u, status, sol = u0, solvers.Status.SUCCESS, None
        for index, pde in enumerate(self._sequence):
            t0, t1 = index * self.h, (index + 1) * self.h
            sol = solvers.solve(pde, u, (t0, t1), method=method, dt=dt, project=pde.projection, **kwargs)
            stats["nfe"] += sol.stats["nfe"]
            stats["steps"] += sol.stats["steps"]
            u, status = sol.u[-1], sol.status
            times.append(float(sol.t[-1]))
            states.append(u)
            if not sol.ok:
                break
        return solvers.Solution(
            t=torch.tensor(times, dtype=torch.float64),
            u=torch.stack(states),
            status=status,
            stats=stats,
            t_event=None if sol is None else sol.t_event,
        )
