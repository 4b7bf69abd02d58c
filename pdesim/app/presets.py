"""Presets: shipped experiments, what each needs to mean what it says, and how each states its finding.

A preset sets a configuration (``pde`` and ``run`` changes over the default ``RunSpec``), may
bring arms of its own and a step to run after the arms, and states its finding in numbers from
the arm summaries, which it looks up by role (``pdesim.app.arms``), never by label.

Every flag overrides a preset, but a preset refuses a spec that would make its finding
meaningless, in one line: ``needs`` lists what its finding rests on (the explosion preset
switches LayerNorm off and nothing else; the cfl preset needs diffusion to have a CFL limit).
``check_preset`` applies them before a run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import probes
import solvers

from ..config import ConfigError, check_choice
from ..model import MasterPDE
from ..transformer import DISCRETE_NORMS, Transformer
from .arms import MAIN, STANDARD, Arm, ArmResult
from .spec import RunSpec


@dataclass(frozen=True)
class Need:
    """A condition a preset's finding rests on; ``what`` completes "the <preset> preset needs ..."."""

    what: str
    holds: Callable[[RunSpec], bool]


@dataclass(frozen=True)
class Preset:
    """A shipped experiment: config changes, what it needs, optional custom arms, and its finding."""

    description: str
    pde: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    needs: tuple[Need, ...] = ()
    arms: Callable[[RunSpec], list[Arm]] | None = None
    finding: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    after: Callable[[RunSpec, list[ArmResult]], None] | None = None


def _result(results: list[ArmResult], role: str) -> ArmResult:
    return next(r for r in results if r.arm.role == role)


# -- what presets need ----------------------------------------------------------------------------

NEEDS_BASELINE = Need(
    "baseline = true (its finding is the contrast with the standard run)", lambda spec: spec.baseline
)


def _norm_is(*norms: str, why: str) -> Need:
    allowed = " or ".join(norms) if len(norms) <= 2 else f"one of {', '.join(norms)}"
    return Need(f"norm = {allowed} ({why})", lambda spec: spec.pde.norm in norms)


def _residual_is(value: bool, why: str) -> Need:
    return Need(f"residual = {str(value).lower()} ({why})", lambda spec: spec.pde.residual is value)


def _no_diffusion(why: str) -> Need:
    return Need(f"diffusion = 0 ({why})", lambda spec: not spec.pde.has_diffusion)


# -- findings and after-steps, by preset ----------------------------------------------------------


def _same(arm: dict[str, Any], *names: str) -> dict[str, Any]:
    """These values of one arm's summary, under their own names."""
    return {name: arm.get(name) for name in names}


def _contrast(arms: dict[str, Any], variant: str, **names: str) -> dict[str, Any]:
    """Each named summary value of the main arm (as <variant>_<key>) beside the standard arm's (standard_<key>)."""
    found = {}
    for key, name in names.items():
        found[f"{variant}_{key}"] = arms[MAIN][name]
        found[f"standard_{key}"] = arms[STANDARD][name]
    return found


def _explosion_finding(arms: dict[str, Any]) -> dict[str, Any]:
    variant, standard = arms[MAIN], arms[STANDARD]
    return {
        **_contrast(arms, "no_layernorm", growth="norm_growth", rate="growth_rate"),
        "no_layernorm_status": variant["status"],
        "no_layernorm_t_event": variant["t_event"],
        "growth_ratio": variant["norm_growth"] / standard["norm_growth"],
    }


def _drift_finding(arms: dict[str, Any]) -> dict[str, Any]:
    return _contrast(
        arms, "no_residual", final_cosine="final_mean_cosine", final_cka="final_cka", final_residual="final_residual"
    )


def _energy_finding(arms: dict[str, Any]) -> dict[str, Any]:
    return _same(arms[MAIN], "energy_is_exact", "energy_monotone_fraction", "max_relative_rate_error")


def _energy_after(spec: RunSpec, results: list[ArmResult]) -> None:
    result = _result(results, MAIN)
    check = probes.energy_rate_check(result.model, result.solution.u[:: max(1, spec.saves // 8)])
    minus = check["minus_velocity_sq"]
    # relative to the largest rate of the run: near equilibrium both sides vanish together
    error = (check["dE_dt"] - minus).abs() / minus.abs().max().clamp_min(1e-300)
    result.extra["max_relative_rate_error"] = float(error.max())


def _cluster_finding(arms: dict[str, Any]) -> dict[str, Any]:
    return _same(arms[MAIN], "initial_clusters", "final_clusters", "final_mean_pairwise_cosine")


def _rank_finding(arms: dict[str, Any]) -> dict[str, Any]:
    variant = arms[MAIN]
    return {
        "pde_final_residual": variant["final_residual"],
        "transformer_final_residual": variant["transformer"]["final_residual"],
        "standard_final_residual": arms[STANDARD]["final_residual"],
    }


CONSISTENCY_LAYERS = (4, 8, 16, 32)


def _consistency_after(spec: RunSpec, results: list[ArmResult]) -> None:
    result = _result(results, MAIN)
    if result.solution.status != solvers.Status.SUCCESS:
        return
    u0, reference = result.solution.u[0], result.solution.u[-1]
    outputs = {}
    with torch.no_grad():
        for layers in CONSISTENCY_LAYERS:
            outputs[layers] = Transformer.from_pde(result.model, layers=layers, t_end=spec.t_end)(u0)
    found = probes.consistency(outputs, reference)
    result.extra["consistency"] = {
        "layers": list(CONSISTENCY_LAYERS),
        "errors": [float(e) for e in found["errors"]],
        "order": float(found["order"]),
        "ratios": [float(r) for r in found["ratios"]],
    }


def _consistency_finding(arms: dict[str, Any]) -> dict[str, Any]:
    # without a finished PDE run there is no reference to converge to: say why instead
    return dict(arms[MAIN].get("consistency") or {"pde_status": arms[MAIN]["status"]})


# (role, solver, τ): forward Euler just below and above τ = ½, and etd1 far beyond.
CFL_ARMS = (("euler_below", "euler", 0.45), ("euler_above", "euler", 0.55), ("etd1", "etd1", 10.0))
# The run fields the cfl preset's own arms decide (its solvers and their steps; no Transformer).
CFL_OWN_FIELDS = ("solver", "dt", "saves", "layers", "rtol", "atol")


def _cfl_arms(spec: RunSpec) -> list[Arm]:
    """Each arm saved at every step, so the fixed-step driver takes exactly the step asked for (it
    never stretches a step over a save)."""
    cfg = spec.pde
    coefficient = max(max(row) for row in cfg.diffusion_table())
    arms = []
    for role, solver, tau in CFL_ARMS:
        dt = tau * cfg.spacing**2 / coefficient
        steps = max(1, round(spec.t_end / dt))
        t_eval = dt * torch.arange(steps + 1, dtype=torch.float64)
        arms.append(Arm(role, f"{solver} tau={tau:g}", cfg, solver, dt, transformer=False, t_eval=t_eval))
    return arms


def _cfl_finding(arms: dict[str, Any]) -> dict[str, Any]:
    taus = {role: tau for role, _, tau in CFL_ARMS}
    return {
        role: {"tau": taus[role], "norm_growth": arm["norm_growth"], "status": arm["status"]}
        for role, arm in arms.items()
    }


def _unchanged(preset: str, names: tuple[str, ...]) -> Callable[[RunSpec], bool]:
    return lambda spec: all(getattr(spec, n) == getattr(preset_spec(preset), n) for n in names)


PRESETS: dict[str, Preset] = {
    "standard": Preset("pre-LN with residual connections: the stable reference"),
    "explosion": Preset(
        "no LayerNorm: the norm grows exponentially next to the stable standard run",
        pde={"norm": "none"},
        run={"t_end": 16.0, "saves": 65, "layers": 32},
        needs=(
            _norm_is("none", why="it shows what happens without LayerNorm"),
            _residual_is(True, why="it switches LayerNorm off alone"),
            NEEDS_BASELINE,
        ),
        finding=_explosion_finding,
    ),
    "drift": Preset(
        "no residual connection: du/dt = G(u) - k u forgets the input (cosine and CKA to u(0) fall)",
        pde={"residual": False},
        needs=(
            _residual_is(False, why="it shows what happens without residual connections"),
            _norm_is("pre", why="it switches the residual connection off alone"),
            NEEDS_BASELINE,
        ),
        finding=_drift_finding,
    ),
    "energy": Preset(
        "gradient flow on the LayerNorm sphere (symmetric attention, gradient reaction, diffusion, tangent "
        "projection): E(t) never increases and dE/dt = -|du/dt|^2",
        pde={
            "attention_kind": "symmetric",
            "reaction_kind": "gradient",
            "activation": "tanh",
            "norm": "tangent",
            "temperature": 0.02,
            "diffusion": 0.5,
            "embed_scale": 1.0,
            "dtype": "float64",
        },
        run={"baseline": False},
        needs=(
            Need(
                "an energy that is a Lyapunov function of the flow (norm = tangent or none)",
                lambda spec: MasterPDE(spec.pde).energy_is_exact,
            ),
        ),
        finding=_energy_finding,
        after=_energy_after,
    ),
    "cluster": Preset(
        "tokens on the LayerNorm sphere cluster under attention (tangent flow, attention only)",
        pde={"norm": "tangent", "reaction": False, "diffusion": 0.0, "temperature": 1.0, "dtype": "float64"},
        run={"t_end": 20.0, "dt": 0.05, "baseline": False},
        needs=(
            _norm_is("tangent", why="tokens on the LayerNorm sphere"),
            _no_diffusion("attention alone: diffusion would merge the tokens by itself"),
        ),
        finding=_cluster_finding,
    ),
    "rank-collapse": Preset(
        "pure attention without residual loses rank layer by layer",
        pde={"residual": False, "reaction": False, "diffusion": 0.0, "norm": "none", "embed_scale": 1.0},
        run={"t_end": 8.0, "layers": 8},
        needs=(
            _residual_is(False, why="it shows what attention does without residual connections"),
            _no_diffusion("pure attention: diffusion would make the tokens uniform by itself"),
            NEEDS_BASELINE,
        ),
        finding=_rank_finding,
    ),
    "consistency": Preset(
        "the L-layer Transformer converges to the PDE solution at first order in h = T/L",
        pde={"dtype": "float64"},
        run={"t_end": 1.0, "dt": 0.005, "baseline": False},
        needs=(_norm_is(*DISCRETE_NORMS, why="a norm the discrete Transformer has"),),
        finding=_consistency_finding,
        after=_consistency_after,
    ),
    "cfl": Preset(
        "diffusion alone: forward Euler is stable for tau <= 1/2 and grows beyond; etd1 is stable at tau = 10",
        pde={"attention": False, "reaction": False, "diffusion": 1.0, "positional": False, "dtype": "float64"},
        run={"t_end": 40.0, "baseline": False},
        needs=(
            Need("diffusion > 0 (its steps are set by the diffusion number)", lambda spec: spec.pde.has_diffusion),
            _norm_is("pre", "none", why="they leave diffusion alone; the other norms project or pull the state"),
            _residual_is(True, why="a decay term would move the stability limit"),
            Need(
                f"its own solvers and steps (euler at tau = 0.45 and 0.55, etd1 at tau = 10); "
                f"leave {', '.join(CFL_OWN_FIELDS)} at the preset's values",
                _unchanged("cfl", CFL_OWN_FIELDS),
            ),
        ),
        arms=_cfl_arms,
        finding=_cfl_finding,
    ),
}


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.3g}"
    return str(value)


def _percent(fraction: Any) -> str:
    return f"{100 * fraction:.3g}%" if isinstance(fraction, float) and fraction == fraction else "nan%"


def _explosion_sentence(f: dict[str, Any]) -> str:
    at = f" and stops at t = {_number(f['no_layernorm_t_event'])}" if f.get("no_layernorm_t_event") is not None else ""
    return (
        f"Without LayerNorm the token norm grows {_number(f['no_layernorm_growth'])}x (rate "
        f"{_number(f['no_layernorm_rate'])}/t, status {f['no_layernorm_status']}{at}); with it, "
        f"{_number(f['standard_growth'])}x: {_number(f['growth_ratio'])} times more growth."
    )


def _drift_sentence(f: dict[str, Any]) -> str:
    return (
        f"Without residual the final CKA to the input is {_number(f['no_residual_final_cka'])} (cosine "
        f"{_number(f['no_residual_final_cosine'])}); with it, {_number(f['standard_final_cka'])} (cosine "
        f"{_number(f['standard_final_cosine'])})."
    )


def _energy_sentence(f: dict[str, Any]) -> str:
    exact = "is" if f["energy_is_exact"] else "is not"
    return (
        f"E {exact} a Lyapunov function of this flow; it did not increase over "
        f"{_percent(f['energy_monotone_fraction'])} of the saved steps, and dE/dt matches -|du/dt|^2 to a "
        f"relative {_number(f.get('max_relative_rate_error'))}."
    )


def _cluster_sentence(f: dict[str, Any]) -> str:
    return (
        f"The tokens go from {_number(f['initial_clusters'])} to {_number(f['final_clusters'])} clusters; their mean "
        f"pairwise cosine ends at {_number(f['final_mean_pairwise_cosine'])}."
    )


def _rank_sentence(f: dict[str, Any]) -> str:
    return (
        f"Without residual the tokens' distance to token-uniform ends at {_number(f['pde_final_residual'])} (PDE) "
        f"and {_number(f['transformer_final_residual'])} (Transformer); with residual, "
        f"{_number(f['standard_final_residual'])}."
    )


def _consistency_sentence(f: dict[str, Any]) -> str:
    if "order" not in f:
        return f"No order: the PDE run ended with status {f.get('pde_status')}, so there is no reference solution."
    errors = ", ".join(f"L={n}: {_number(e)}" for n, e in zip(f["layers"], f["errors"]))
    return f"The Transformer converges to the PDE at order {_number(f['order'])} in h = T/L ({errors})."


def _cfl_sentence(f: dict[str, Any]) -> str:
    parts = [f"{role.split('_')[0]} at tau = {_number(v['tau'])}: norm x{_number(v['norm_growth'])} ({v['status']})"
             for role, v in f.items()]
    return "Diffusion alone: " + "; ".join(parts) + "."


SENTENCES: dict[str, Callable[[dict[str, Any]], str]] = {
    "explosion": _explosion_sentence,
    "drift": _drift_sentence,
    "energy": _energy_sentence,
    "cluster": _cluster_sentence,
    "rank-collapse": _rank_sentence,
    "consistency": _consistency_sentence,
    "cfl": _cfl_sentence,
}


def finding_sentence(preset: str, findings: dict[str, Any]) -> str:
    """The preset's finding as a sentence (its numbers in words), for the terminal and run.log."""
    try:
        return SENTENCES[preset](findings)
    except KeyError:
        return "; ".join(f"{key} = {_number(value)}" for key, value in findings.items()) + "."


def preset_spec(name: str, **run_changes: Any) -> RunSpec:
    """The RunSpec of a preset, with run-level changes applied."""
    check_choice("preset", name, tuple(PRESETS))
    preset = PRESETS[name]
    base = RunSpec(preset=name)
    return replace(base, pde=base.pde.replace(**preset.pde), **{**preset.run, **run_changes})


def check_preset(spec: RunSpec) -> Preset:
    """The spec's preset, if the spec keeps everything the preset needs; else a one-line ConfigError."""
    check_choice("preset", spec.preset, tuple(PRESETS))
    preset = PRESETS[spec.preset]
    for need in preset.needs:
        if not need.holds(spec):
            raise ConfigError(f"the {spec.preset} preset needs {need.what}")
    return preset
