"""Arms: one configuration solved as a PDE and run as the Transformer with the same weights.

A run integrates one or more arms. Each arm has a *role*, what it is for in the run, and a
*label*, what it is called on screen. Presets and their findings look arms up by role; labels
are only displayed, so a flag that changes a label (``--norm none`` makes "no-layernorm") can
never break a preset. The roles of the ordinary run:

- ``MAIN``: the configuration the run asks for;
- ``STANDARD``: the standard configuration (pre-LN, residual) with the same weights, run beside
  a main arm that switches a stabilizer off, so every finding comes with its contrast.

A preset with arms of its own names their roles itself (the cfl preset's ``euler_below``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

import solvers

from ..config import PDEConfig
from ..model import MasterPDE
from ..transformer import Transformer
from .measure import Lyapunov, flow_lyapunov, map_lyapunov
from .spec import RunSpec

MAIN = "main"
STANDARD = "standard"


@dataclass
class Arm:
    """One configuration solved as a PDE (and, if ``transformer``, run as the matching Transformer)."""

    role: str
    label: str
    cfg: PDEConfig
    solver: str
    dt: float | None
    transformer: bool = True
    t_eval: torch.Tensor | None = None  # default: spec.saves times evenly over [0, spec.t_end]


def describe(cfg: PDEConfig) -> str:
    """A short display label for the stabilizer switches of a configuration."""
    parts = []
    if cfg.norm == "none":
        parts.append("no-layernorm")
    elif cfg.norm == "tangent":  # what ran: the tangent flow, and post-LN as its network
        parts.append("tangent PDE / post-LN net")
    elif cfg.norm != "pre":
        parts.append(f"norm={cfg.norm}")
    if not cfg.residual:
        parts.append("no-residual")
    return ", ".join(parts) or "standard"


# What each LayerNorm mode is called when it ran, in the PDE and in the Transformer.
NORM_NAMES = {"pre": "pre-LN", "post": "post-LN", "none": "no LayerNorm", "relax": "relaxed LN", "tangent": "tangent"}


def discrete_norm(cfg: PDEConfig) -> str:
    """The LayerNorm mode of the Transformer an arm runs: tangent has no discrete block, its network is post-LN."""
    return "post" if cfg.norm == "tangent" else cfg.norm


def source_labels(cfg: PDEConfig) -> dict[str, str]:
    """What ran in each source of an arm, e.g. {"pde": "PDE tangent", "transformer": "Transformer post-LN"}."""
    residual = "" if cfg.residual else ", no residual"
    return {
        "pde": f"PDE {NORM_NAMES[cfg.norm]}{residual}",
        "transformer": f"Transformer {NORM_NAMES[discrete_norm(cfg)]}{residual}",
    }


def pairing_note(cfg: PDEConfig) -> str | None:
    """How the Transformer relates to the PDE when they run different LayerNorm modes (None when the same)."""
    if cfg.norm != "tangent":
        return None
    return (
        "the Transformer is post-LN, whose continuum limit (h = T/L -> 0) is the tangent flow du/dt = P_u F(u): "
        "the PDE arm is that limit, not the same LayerNorm"
    )


def normalized_no_residual_warning(cfg: PDEConfig) -> str | None:
    """Why 'drift without residual' is absent from a normalised mode (tangent, post), or None."""
    if cfg.residual or cfg.norm not in ("tangent", "post"):
        return None
    return (
        f"no residual under norm={cfg.norm}: the decay -k*u is radial, so LayerNorm removes it "
        "(tangent: the projection drops it; post-LN: no residual at step h is the residual network at step "
        "h/(1-h)); drift without residual exists here only at h = 1 (use norm = pre, relax or none to see it)"
    )


def is_standard(cfg: PDEConfig) -> bool:
    """Both stabilizers on: pre-LN with residual connections."""
    return cfg.norm == "pre" and cfg.residual


def default_arms(spec: RunSpec) -> list[Arm]:
    """The main arm, and the standard one beside it when the main arm switches a stabilizer off."""
    arms = [Arm(MAIN, describe(spec.pde), spec.pde, spec.solver, spec.dt)]
    if spec.baseline and not is_standard(spec.pde):
        standard = spec.pde.replace(norm="pre", residual=True)
        arms.append(Arm(STANDARD, describe(standard), standard, spec.solver, spec.dt))
    return arms


def arm_settings(arms: list[Arm], spec: RunSpec) -> str:
    """What each arm integrates, one line each: its label, solver and step (not the run's defaults it
    may not use), its final time, and its Transformer's depth."""
    lines = []
    for arm in arms:
        fixed = arm.solver in solvers.FIXED_METHODS
        rtol = solvers.DEFAULT_RTOL if spec.rtol is None else spec.rtol
        atol = solvers.DEFAULT_ATOL if spec.atol is None else spec.atol
        step = f"dt={arm.dt:.4g}" if fixed and arm.dt is not None else f"adaptive (rtol={rtol:g}, atol={atol:g})"
        t_end = float(arm.t_eval[-1]) if arm.t_eval is not None else spec.t_end
        network = (
            f"; {source_labels(arm.cfg)['transformer']}, L={spec.layers} (h={spec.t_end / spec.layers:.4g})"
            if arm.transformer else "; no Transformer"
        )
        pde = source_labels(arm.cfg)["pde"]
        lines.append(f"arm {arm.label}: {pde} by {arm.solver}, {step}, T={t_end:.4g}{network}")
    return "\n".join(lines)


@dataclass
class ArmResult:
    """What one arm produced: the PDE solution and the Transformer's layer states."""

    arm: Arm
    model: MasterPDE
    solution: solvers.Solution
    layer_times: torch.Tensor | None = None
    layer_states: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    lyapunov: dict[str, Lyapunov] = field(default_factory=dict)  # by source: "pde", "transformer"


def matching_model(cfg: PDEConfig) -> MasterPDE:
    """The MasterPDE whose field the Transformer built from it is consistent with (decay = k without residual)."""
    return MasterPDE(Transformer.continuous_config(cfg))


def solve_arm(arm: Arm, spec: RunSpec, *, progress: bool = False) -> ArmResult:
    """The arm's PDE solved (no gradients): a result the run keeps even if what follows is interrupted."""
    model = matching_model(arm.cfg)
    u0 = model.initial_state(batch=spec.batch)
    fixed = arm.solver in solvers.FIXED_METHODS
    t_eval = arm.t_eval if arm.t_eval is not None else torch.linspace(0.0, spec.t_end, spec.saves).double()
    with torch.no_grad():
        sol = solvers.solve(
            model,
            u0,
            (0.0, float(t_eval[-1])),
            method=arm.solver,
            dt=arm.dt if fixed else None,
            t_eval=t_eval,
            rtol=None if fixed else spec.rtol,
            atol=None if fixed else spec.atol,
            project=model.projection if fixed else None,
            blowup=spec.blowup,
            callbacks=[solvers.Progress()] if progress else (),
            compile=spec.compile,
        )
    return ArmResult(arm, model, sol)


def complete_arm(result: ArmResult, spec: RunSpec) -> None:
    """Adds to a solved arm, in place, its flow's exponents, then its Transformer's states and exponents.

    Each part is stored whole once computed, so a Ctrl-C between parts leaves a result whose
    missing parts read as "not measured" in its summary.
    """
    arm, model, sol = result.arm, result.model, result.solution
    u0 = sol.u[0]
    fixed = arm.solver in solvers.FIXED_METHODS
    projected = (arm.solver, arm.dt) if fixed and model.projection is not None else None
    result.lyapunov["pde"] = flow_lyapunov(model, u0, sol.t, projected=projected)
    if arm.transformer:
        discrete = model if discrete_norm(arm.cfg) == arm.cfg.norm else matching_model(arm.cfg.replace(norm="post"))
        tf = Transformer.from_pde(discrete, layers=spec.layers, t_end=spec.t_end)
        with torch.no_grad():
            states = tf(u0, return_all=True)
        result.layer_times = torch.linspace(0.0, spec.t_end, spec.layers + 1, dtype=torch.float64)
        result.layer_states = states  # last: a result with layer_states has its times
        result.lyapunov["transformer"] = map_lyapunov(list(tf.blocks), u0, tf.h, stop=spec.blowup)
