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
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import solvers
from solvers.steppers import explicit_rk

from .config import ConfigError, PDEConfig
from .diffusion_layer import PDEDiffusion
from .model import IN_BLOCK_POSITIONS, MasterPDE

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
# Sub-steps of one block as (sub-layer, fraction of h): Lie, and Strang's Macaron layout.
_LIE_STEPS = (("diffusion", 1.0), ("attention", 1.0), ("reaction", 1.0))
_STRANG_STEPS = (("reaction", 0.5), ("diffusion", 0.5), ("attention", 1.0), ("diffusion", 0.5), ("reaction", 0.5))


class Block(nn.Module):
    """One layer: a step of size h through the sub-layers of one ``MasterPDE``.

    The block holds a reference to its PDE (``block.pde``), not copies of its modules: what each
    sub-layer sees and returns is ``pde.branch`` / ``pde.normalize``, the same code the PDE's field
    sums, so the two cannot disagree. The block registers no parameters of its own; the
    ``Transformer`` registers each distinct PDE once.
    """

    def __init__(self, pde: MasterPDE, h: float, *, order: str, substep: str):
        super().__init__()
        self.__dict__["pde"] = pde  # a plain reference: registering it here would list tied weights twice
        self.h, self.order = float(h), order
        self._rk = explicit_rk(substep)

    # -- sub-steps -------------------------------------------------------------------------------
    def _advance(self, name: str, u: torch.Tensor, dt: float, mask: torch.Tensor | None) -> torch.Tensor:
        """One explicit sub-step of sub-layer ``name``; without residual, u + h·X becomes (1 − h)u + h·X."""
        pde = self.pde
        if name in ("attention", "reaction") and not pde.cfg.residual:
            velocity: Branch = lambda v: pde.branch(name, v, mask) - v  # noqa: E731
        else:
            velocity = lambda v: pde.branch(name, v, mask)  # noqa: E731
        out = self._rk.step(lambda t, v: velocity(v), 0.0, u, dt)
        return out if mask is None else torch.where(mask.unsqueeze(-1), out, u)

    def _residual_step(self, name: str, u: torch.Tensor, dt: float, mask: torch.Tensor | None) -> torch.Tensor:
        """The attention or FFN sub-layer, followed by its LayerNorm under post-LN."""
        cfg = self.pde.cfg
        if not (cfg.attention if name == "attention" else cfg.reaction):
            return u
        u = self._advance(name, u, dt, mask)
        if cfg.norm == "post":
            u = self.pde.normalize(self.pde.ln1 if name == "attention" else self.pde.ln2, u, mask)
        return u

    def _diffusion_step(self, u: torch.Tensor, dt: float, mask: torch.Tensor | None) -> torch.Tensor:
        cfg = self.pde.cfg
        if cfg.has_diffusion:
            u = self._advance("diffusion", u, dt, mask)
        if cfg.norm == "relax":
            u = self._advance("stabilizer", u, dt, mask)
        return u

    def forward(
        self, u: torch.Tensor, mask: torch.Tensor | None = None, record: list[torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The state after one layer; ``record``, when given, receives the state after each attention and FFN update."""
        h = self.h
        for name, dt in _LIE_STEPS if self.order == "lie" else _STRANG_STEPS:
            dt *= h
            if name == "diffusion":
                u = self._diffusion_step(u, dt, mask)
                continue
            u = self._residual_step(name, u, dt, mask)
            if record is not None and (self.pde.cfg.attention if name == "attention" else self.pde.cfg.reaction):
                record.append(u)
        return u

    def extra_repr(self) -> str:
        return f"h={self.h:g}, order={self.order!r}"


_OUTER = ("after_embedding", "between_layers", "before_head")


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
        inserts = _checked_positions(inserts or {})
        in_block = {k: v for k, v in inserts.items() if k in IN_BLOCK_POSITIONS}
        distinct = _unique(pdes)
        if in_block:
            if len(distinct) > 1:
                raise ConfigError(
                    "per-layer PDEs carry their own in-block diffusion layers (MasterPDE.add_inserts); "
                    f"pass only {', '.join(_OUTER)} here"
                )
            _add_inserts(distinct[0], in_block)
        self.layers, self.t_end, self.order, self.substep = len(pdes), float(t_end), order, substep
        self.h = self.t_end / self.layers
        self.pdes = nn.ModuleList(distinct)  # each distinct PDE once: tied weights have one name
        self._pde_sequence = list(pdes)
        self.inserts = nn.ModuleDict({k: v for k, v in inserts.items() if k in _OUTER})
        self.blocks = nn.ModuleList(Block(pde, self.h, order=order, substep=substep) for pde in pdes)

    @classmethod
    def from_pde(
        cls,
        model: MasterPDE,
        layers: int,
        t_end: float,
        *,
        order: str = "lie",
        substep: str = "euler",
        per_layer: bool | str = False,
        diffusion_at: Iterable[str] | Mapping[str, nn.Module] = (),
        diffusion_scales: tuple[int, ...] = (1,),
    ) -> Transformer:
        """L = ``layers`` blocks of step h = t_end / L sharing ``model``'s very modules.

        ``per_layer=True`` gives each block its own copy of the weights (piecewise-constant θ(t));
        ``per_layer="independent"`` gives each block independently initialised weights (layer l
        drawn from ``layer_seed(cfg.seed, l)``, as a freshly initialised deep network; layer 0 has
        the model's weights). The continuous counterpart is ``transformer.continuous()``. ``diffusion_at`` names the
        positions that get a PDE Diffusion Layer (or maps names to ready layers). In-block layers
        become part of the PDE (``model.inserts``, so its field includes them too); with
        ``per_layer`` every layer gets its own copy.
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
        inserts = _checked_positions(make_inserts(cfg, diffusion_at, diffusion_scales))
        in_block = {k: v for k, v in inserts.items() if k in IN_BLOCK_POSITIONS}
        outer = {k: v for k, v in inserts.items() if k in _OUTER}
        if not per_layer:
            _add_inserts(model, in_block)
            return cls([model] * layers, t_end, order=order, substep=substep, inserts=outer)
        if per_layer not in (True, "independent"):
            raise ConfigError(f"per_layer={per_layer!r} is not one of False, True, 'independent'")
        pdes = []
        for index in range(layers):
            if per_layer == "independent":
                layer = MasterPDE(cfg.replace(seed=layer_seed(cfg.seed, index)))
                layer.add_inserts(copy.deepcopy(dict(model.inserts)))
            else:
                layer = copy.deepcopy(model)
            _add_inserts(layer, copy.deepcopy(in_block))
            pdes.append(layer)
        return cls(pdes, t_end, order=order, substep=substep, inserts=outer)

    @staticmethod
    def continuous_config(cfg: PDEConfig) -> PDEConfig:
        """The PDE whose solution these blocks converge to: without residual, decay = #residual sub-layers."""
        if cfg.residual:
            return cfg
        return cfg.replace(decay=float(int(cfg.attention) + int(cfg.reaction)))

    def outer_insert(self, name: str, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The diffusion layer at block-level position ``name`` applied to u (u itself when there is none)."""
        return self.inserts[name](u, mask) if name in self.inserts else u

    def forward(
        self, u: torch.Tensor, mask: torch.Tensor | None = None, return_all: bool | str = False
    ) -> torch.Tensor:
        """The output state (B, N, d); ``return_all=True`` every layer's state (L + 1, B, N, d), and
        ``return_all="sublayers"`` the input and the state after every attention and FFN update
        (1 + L·k states, k = 2 for lie blocks with both sub-layers, 3 for strang's Macaron layout).
        """
        if return_all not in (True, False, "sublayers"):
            raise ConfigError(f"return_all={return_all!r} is not one of False, True, 'sublayers'")
        record: list[torch.Tensor] | None = [] if return_all == "sublayers" else None
        u = self.outer_insert("after_embedding", u, mask)
        states = [u]
        for index, block in enumerate(self.blocks):
            if index > 0:
                u = self.outer_insert("between_layers", u, mask)
            u = block(u, mask, record)
            states.append(u)
        states[-1] = self.outer_insert("before_head", u, mask)
        if record is not None:
            if record:
                record[-1] = states[-1]
            return torch.stack([states[0], *record])
        return torch.stack(states) if return_all else states[-1]

    def save(self, directory: str | Path) -> Path:
        """Writes this model to ``directory`` (model.toml + model.safetensors); ``pdesim.load`` reads it back."""
        from .persist import save  # persist imports this module

        return save(self, directory)

    def continuous(self) -> MasterPDE | LayeredPDE:
        """The PDE with the same weights: the MasterPDE itself when tied, else θ(t) piecewise constant."""
        if len(self.pdes) == 1:
            return self.pdes[0]
        return LayeredPDE(self._pde_sequence, self.t_end)


def layer_seed(seed: int, index: int) -> int:
    """The seed of layer ``index`` of a network whose layers are initialised independently."""
    return seed + 7919 * index


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


def _checked_positions(inserts: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    unknown = sorted(set(inserts) - set(POSITIONS))
    if unknown:
        raise ConfigError(f"unknown diffusion position {unknown[0]!r}; choose from {', '.join(POSITIONS)}")
    return dict(inserts)


def _add_inserts(pde: MasterPDE, inserts: Mapping[str, nn.Module]) -> None:
    try:
        pde.add_inserts(dict(inserts))
    except ValueError as err:
        raise ConfigError(str(err)) from None


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

    def save(self, directory: str | Path) -> Path:
        """Writes this model to ``directory`` (model.toml + model.safetensors); ``pdesim.load`` reads it back."""
        from .persist import save  # persist imports this module

        return save(self, directory)

    def forward(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        index = min(max(int(float(t) / self.h), 0), len(self._sequence) - 1)
        return self._sequence[index](t, u)

    def solve(
        self,
        u0: torch.Tensor,
        *,
        method: str = "rk4",
        dt: float | None = None,
        t_eval: Sequence[float] | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> solvers.Solution:
        """Integrates [0, T] one weight interval at a time, so no step straddles a change of weights.

        Saves at ``t_eval`` (times in [0, T]), or at 0 and every interval end when it is None. The
        Solution's stats add up the intervals' (nfe, steps, wall time; dt min/mean/max over all
        steps); status, message and t_event are those of the interval where the run ended.
        """
        if t_eval is None:
            wanted = [index * self.h for index in range(len(self._sequence) + 1)]
        else:
            wanted = [float(x) for x in (t_eval.tolist() if isinstance(t_eval, torch.Tensor) else t_eval)]
            if not wanted or any(b <= a for a, b in zip(wanted[:-1], wanted[1:])):
                raise solvers.SolverInputError("t_eval must be a non-empty, strictly increasing sequence of times")
            if wanted[0] < 0.0 or wanted[-1] > self.t_end * (1 + 1e-12):
                raise solvers.SolverInputError(f"t_eval must lie within [0, {self.t_end:g}]")
        # times within rounding of an interval end are that end (float32 t_eval, say)
        ends = [index * self.h for index in range(len(self._sequence) + 1)]
        tolerance = 1e-9 * max(1.0, self.t_end)
        wanted = [next((e for e in ends if abs(e - t) <= tolerance), t) for t in wanted]
        times: list[float] = [0.0] if wanted[0] == 0.0 else []
        states: list[torch.Tensor] = [u0] if wanted[0] == 0.0 else []
        u, sol, parts = u0, None, []
        for index, pde in enumerate(self._sequence):
            t0, t1 = ends[index], ends[index + 1]
            inside = [t for t in wanted if t0 < t <= t1]
            points = [t0] + [t for t in inside if t < t1] + [t1]
            sol = solvers.solve(pde, u, (t0, t1), method=method, dt=dt, t_eval=points, project=pde.projection, **kwargs)
            parts.append(sol)
            u = sol.u[-1]
            for t, state in zip(sol.t.tolist()[1:], sol.u[1:]):
                if t in inside:
                    times.append(t)
                    states.append(state)
            if not sol.ok:
                if not times or times[-1] != float(sol.t[-1]):  # a stopped run keeps where it stopped
                    times.append(float(sol.t[-1]))
                    states.append(u)
                break
        return solvers.Solution(
            t=torch.tensor(times, dtype=torch.float64),
            u=torch.stack(states),
            status=sol.status,
            stats=_summed_stats(parts),
            t_event=sol.t_event,
            message=sol.message,
        )


def _summed_stats(parts: list[solvers.Solution]) -> dict[str, Any]:
    """The statistics of consecutive solves as one run's."""
    total: dict[str, Any] = {"method": parts[-1].stats.get("method")}
    for key in ("nfe", "steps", "accepted", "rejected", "wall_time"):
        values = [p.stats.get(key) for p in parts]
        total[key] = sum(v for v in values if v is not None)
    steps = [p.stats.get("steps") or 0 for p in parts]
    means = [p.stats.get("dt_mean", math.nan) for p in parts]
    counted = [(n, m) for n, m in zip(steps, means) if n and math.isfinite(m)]
    finite = lambda key: [v for p in parts if math.isfinite(v := p.stats.get(key, math.nan))]  # noqa: E731
    total["dt_min"] = min(finite("dt_min"), default=math.nan)
    total["dt_max"] = max(finite("dt_max"), default=math.nan)
    total["dt_mean"] = sum(n * m for n, m in counted) / sum(n for n, _ in counted) if counted else math.nan
    return total
