"""Experiments: a run spec, its arms (PDE and Transformer side by side), measurements and findings.

A run integrates one or more *arms*. Each arm is a configuration of the master PDE solved by a
solver, and the discrete Transformer built from the same weights (``Transformer.from_pde``),
so the continuous and the discrete views of one network are measured side by side. A run whose
configuration switches a stabilizer off also runs the standard configuration (pre-LN, residual)
with the same weights as a baseline, so every finding comes with its contrast.

Presets are shipped experiments (``PRESETS``): each sets a configuration and, after the run,
states its finding in numbers (``summary["findings"]``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch

import probes
import solvers

from .config import ConfigError, PDEConfig
from .model import MasterPDE
from .transformer import Transformer

# The runs' embeddings are larger than the LayerNorm scale (token norm ≈ 8√d): pre-LN updates
# then move the stream slowly (it keeps its input), while without LayerNorm the terms act on the
# full-size state and the norm grows exponentially — the contrast the default run is made to show.
RUN_EMBED_SCALE = 8.0

# -- the spec -------------------------------------------------------------------------------------


@dataclass
class RunSpec:
    """Everything a run needs besides the PDE configuration; round-trips through config.toml."""

    pde: PDEConfig = field(default_factory=lambda: PDEConfig(embed_scale=RUN_EMBED_SCALE))
    preset: str = "standard"
    solver: str = "rk4"
    dt: float | None = 0.05
    t_end: float = 8.0
    saves: int = 41
    layers: int = 16
    batch: int = 2
    rtol: float | None = None
    atol: float | None = None
    blowup: float = 1e6
    baseline: bool = True

    def __post_init__(self) -> None:
        if self.solver not in solvers.METHODS:
            raise ConfigError(f"solver={self.solver!r} is not one of {', '.join(solvers.METHODS)}")
        fixed = self.solver in solvers.FIXED_METHODS
        if fixed and not (self.dt is not None and math.isfinite(self.dt) and self.dt > 0):
            raise ConfigError(f"dt={self.dt!r} must be a positive number for the fixed-step solver {self.solver!r}")
        for name in ("t_end", "blowup"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a finite positive number")
        for name, minimum in (("saves", 2), ("layers", 1), ("batch", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value!r} must be a finite positive number")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset={self.preset!r} is not one of {', '.join(PRESETS)}")

    def to_tables(self) -> dict[str, dict[str, Any]]:
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "pde"}
        return {"run": run, "pde": self.pde.to_dict()}

    @classmethod
    def from_tables(cls, tables: dict[str, Any]) -> RunSpec:
        unknown = sorted(set(tables) - {"run", "pde"})
        if unknown:
            raise ConfigError(f"unknown table [{unknown[0]}] in the config; expected [run] and [pde]")
        run = dict(tables.get("run", {}))
        names = {f.name for f in fields(cls)} - {"pde"}
        bad = sorted(set(run) - names)
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [run]; expected one of {', '.join(sorted(names))}")
        return cls(pde=PDEConfig.from_dict(dict(tables.get("pde", {}))), **run)


# -- arms ---------------------------------------------------------------------------------------------


@dataclass
class Arm:
    """One configuration solved as a PDE (and, if ``transformer``, run as the matching Transformer)."""

    label: str
    cfg: PDEConfig
    solver: str
    dt: float | None
    transformer: bool = True
    t_eval: torch.Tensor | None = None  # default: spec.saves times evenly over [0, spec.t_end]


def describe(cfg: PDEConfig) -> str:
    """A short label for the stabilizer switches of a configuration."""
    parts = []
    if cfg.norm == "none":
        parts.append("no-layernorm")
    elif cfg.norm != "pre":
        parts.append(f"norm={cfg.norm}")
    if not cfg.residual:
        parts.append("no-residual")
    return ", ".join(parts) or "standard"


def _is_standard(cfg: PDEConfig) -> bool:
    return cfg.norm == "pre" and cfg.residual


def default_arms(spec: RunSpec) -> list[Arm]:
    arms = [Arm(describe(spec.pde), spec.pde, spec.solver, spec.dt)]
    if spec.baseline and not _is_standard(spec.pde):
        arms.append(Arm("standard", spec.pde.replace(norm="pre", residual=True), spec.solver, spec.dt))
    return arms


@dataclass
class ArmResult:
    """What one arm produced: the PDE solution and the Transformer's layer states."""

    arm: Arm
    model: MasterPDE
    solution: solvers.Solution
    layer_times: torch.Tensor | None = None
    layer_states: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _matching_model(cfg: PDEConfig) -> MasterPDE:
    return MasterPDE(Transformer.continuous_config(cfg))


def run_arm(arm: Arm, spec: RunSpec, *, progress: bool = False) -> ArmResult:
    """Solves the arm's PDE and runs its Transformer with the same weights (no gradients)."""
    model = _matching_model(arm.cfg)
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
        )
    result = ArmResult(arm, model, sol)
    if arm.transformer and sol.status != solvers.Status.INTERRUPTED:
        # tangent has no discrete block: its discrete counterpart is post-LN with the same weights
        discrete = model if arm.cfg.norm != "tangent" else _matching_model(arm.cfg.replace(norm="post"))
        tf = Transformer.from_pde(discrete, layers=spec.layers, t_end=spec.t_end)
        with torch.no_grad():
            result.layer_states = tf(u0, return_all=True)
        result.layer_times = torch.linspace(0.0, spec.t_end, spec.layers + 1, dtype=torch.float64)
    return result


# -- measurements -------------------------------------------------------------------------------------

METRIC_COLUMNS = (
    "mean_token_norm",
    "max_abs",
    "relative_distance",
    "mean_cosine",
    "cka",
    "residual",
    "effective_rank",
    "mean_pairwise_cosine",
    "clusters",
    "energy",
    "norm_energy",
)


def measure(model: MasterPDE, t: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every per-time metric of a trajectory u (T, B, N, d) at times t (T,), as float64 (T,) tensors."""
    u = u.detach()
    finite = torch.isfinite(u.flatten(1)).all(dim=1)
    safe = torch.where(finite.view(-1, 1, 1, 1), u, torch.zeros_like(u))
    out: dict[str, torch.Tensor] = {}
    out.update(probes.norms(u))
    out.update(probes.drift(safe))
    out.update(probes.rank_collapse(safe))
    out["clusters"] = probes.cluster_count(safe).to(torch.float64)
    with torch.no_grad():
        energy = probes.energy(model, safe)
    out["energy"], out["norm_energy"] = energy["energy"], energy["norm_energy"]
    nan = torch.tensor(math.nan, dtype=torch.float64)
    return {k: torch.where(finite, v.to(torch.float64), nan) for k, v in out.items() if k in METRIC_COLUMNS}


def _growth(t: torch.Tensor, norms: torch.Tensor) -> tuple[float, float]:
    """(final / initial mean token norm, exponential growth rate over the finite part)."""
    finite = torch.isfinite(norms)
    if finite.sum() < 2:
        return math.nan, math.nan
    values, times = norms[finite], t[finite]
    return float(values[-1] / values[0]), probes.growth_rate(times, values)


def summarize_arm(result: ArmResult, spec: RunSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary of one arm, metric rows for the CSV)."""
    sol, model = result.solution, result.model
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "label": result.arm.label,
        "solver": result.arm.solver,
        "dt": result.arm.dt,
        "norm": result.arm.cfg.norm,
        "residual": result.arm.cfg.residual,
        "status": str(sol.status),
        "t_event": sol.t_event,
        "message": sol.message,
        "nfe": sol.stats.get("nfe"),
        "steps": sol.stats.get("steps"),
        "wall_time": sol.stats.get("wall_time"),
        "energy_is_exact": bool(model.energy_is_exact),
    }
    sources = [("pde", sol.t, sol.u)]
    if result.layer_states is not None:
        sources.append(("transformer", result.layer_times, result.layer_states))
    for source, t, u in sources:
        metrics = measure(model, t, u)
        for k, time_value in enumerate(t.tolist()):
            row = {"arm": result.arm.label, "source": source, "t": time_value}
            row.update({name: float(metrics[name][k]) for name in METRIC_COLUMNS})
            rows.append(row)
        growth, rate = _growth(t, metrics["mean_token_norm"])
        names = ("mean_cosine", "cka", "residual", "effective_rank", "mean_pairwise_cosine", "clusters")
        final = {f"final_{name}": float(metrics[name][-1]) for name in names}
        entry = {"norm_growth": growth, "growth_rate": rate, "initial_clusters": float(metrics["clusters"][0]), **final}
        if source == "pde":
            energy = metrics["energy"][torch.isfinite(metrics["energy"])]
            entry["energy_monotone_fraction"] = probes.monotone_fraction(energy) if len(energy) > 1 else math.nan
            summary.update(entry)
        else:
            over = (~(u.detach().flatten(1).abs().amax(dim=1) <= spec.blowup)).nonzero()
            entry["blowup_layer"] = int(over[0, 0]) if len(over) else None
            summary["transformer"] = entry
    if result.layer_states is not None and sol.status == solvers.Status.SUCCESS:
        pde_final, tf_final = sol.u[-1], result.layer_states[-1]
        gap = (tf_final - pde_final).flatten().norm() / pde_final.flatten().norm()
        summary["transformer"]["relative_gap_to_pde"] = float(gap)
    summary.update(result.extra)
    return summary, rows


# -- presets --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """A shipped experiment: config changes, optional custom arms, and how to state the finding."""

    description: str
    pde: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    arms: Callable[[RunSpec], list[Arm]] | None = None
    finding: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    after: Callable[[RunSpec, list[ArmResult]], None] | None = None


def _explosion_finding(arms: dict[str, Any]) -> dict[str, Any]:
    variant, standard = arms["no-layernorm"], arms["standard"]
    return {
        "no_layernorm_growth": variant["norm_growth"],
        "no_layernorm_rate": variant["growth_rate"],
        "no_layernorm_status": variant["status"],
        "no_layernorm_t_event": variant["t_event"],
        "standard_growth": standard["norm_growth"],
        "standard_rate": standard["growth_rate"],
        "growth_ratio": variant["norm_growth"] / standard["norm_growth"],
    }


def _drift_finding(arms: dict[str, Any]) -> dict[str, Any]:
    variant, standard = arms["no-residual"], arms["standard"]
    return {
        "no_residual_final_cosine": variant["final_mean_cosine"],
        "standard_final_cosine": standard["final_mean_cosine"],
        "no_residual_final_cka": variant["final_cka"],
        "standard_final_cka": standard["final_cka"],
        "no_residual_final_residual": variant["final_residual"],
        "standard_final_residual": standard["final_residual"],
    }


def _energy_finding(arms: dict[str, Any]) -> dict[str, Any]:
    arm = next(iter(arms.values()))
    return {
        "energy_is_exact": arm["energy_is_exact"],
        "energy_monotone_fraction": arm["energy_monotone_fraction"],
        "max_relative_rate_error": arm.get("max_relative_rate_error"),
    }


def _energy_after(spec: RunSpec, results: list[ArmResult]) -> None:
    result = results[0]
    check = probes.energy_rate_check(result.model, result.solution.u[:: max(1, spec.saves // 8)])
    minus = check["minus_velocity_sq"]
    # relative to the largest rate of the run: near equilibrium both sides vanish together
    error = (check["dE_dt"] - minus).abs() / minus.abs().max().clamp_min(1e-300)
    result.extra["max_relative_rate_error"] = float(error.max())


def _cluster_finding(arms: dict[str, Any]) -> dict[str, Any]:
    arm = next(iter(arms.values()))
    return {
        "initial_clusters": arm["initial_clusters"],
        "final_clusters": arm["final_clusters"],
        "final_mean_pairwise_cosine": arm["final_mean_pairwise_cosine"],
    }


def _rank_finding(arms: dict[str, Any]) -> dict[str, Any]:
    variant = next(iter(arms.values()))
    return {
        "pde_final_residual": variant["final_residual"],
        "transformer_final_residual": variant["transformer"]["final_residual"],
        "standard_final_residual": arms["standard"]["final_residual"],
    }


CONSISTENCY_LAYERS = (4, 8, 16, 32)


def _consistency_after(spec: RunSpec, results: list[ArmResult]) -> None:
    result = results[0]
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
    return dict(next(iter(arms.values())).get("consistency", {}))


CFL_TAUS = (0.45, 0.55)


def _cfl_arms(spec: RunSpec) -> list[Arm]:
    """Forward Euler just below and above τ = ½, and etd1 far beyond; saved at every step so the
    fixed-step driver takes exactly the step asked for (it never stretches a step over a save)."""
    cfg = spec.pde
    coefficient = max(max(row) for row in cfg.diffusion_table())
    arms = []
    for solver, tau in [("euler", t) for t in CFL_TAUS] + [("etd1", 10.0)]:
        dt = tau * cfg.spacing**2 / coefficient
        steps = max(1, round(spec.t_end / dt))
        t_eval = dt * torch.arange(steps + 1, dtype=torch.float64)
        arms.append(Arm(f"{solver} tau={tau:g}", cfg, solver, dt, transformer=False, t_eval=t_eval))
    return arms


def _cfl_finding(arms: dict[str, Any]) -> dict[str, Any]:
    return {label: {"norm_growth": arm["norm_growth"], "status": arm["status"]} for label, arm in arms.items()}


PRESETS: dict[str, Preset] = {
    "standard": Preset("pre-LN with residual connections: the stable reference"),
    "explosion": Preset(
        "no LayerNorm: the norm grows exponentially next to the stable standard run",
        pde={"norm": "none"},
        run={"t_end": 16.0, "saves": 65, "layers": 32},
        finding=_explosion_finding,
    ),
    "drift": Preset(
        "no residual connection: du/dt = G(u) - k u forgets the input (cosine and CKA to u(0) fall)",
        pde={"residual": False},
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
        finding=_energy_finding,
        after=_energy_after,
    ),
    "cluster": Preset(
        "tokens on the LayerNorm sphere cluster under attention (tangent flow, attention only)",
        pde={"norm": "tangent", "reaction": False, "diffusion": 0.0, "temperature": 1.0, "dtype": "float64"},
        run={"t_end": 20.0, "dt": 0.05, "baseline": False},
        finding=_cluster_finding,
    ),
    "rank-collapse": Preset(
        "pure attention without residual loses rank layer by layer",
        pde={"residual": False, "reaction": False, "diffusion": 0.0, "norm": "none", "embed_scale": 1.0},
        run={"t_end": 8.0, "layers": 8},
        finding=_rank_finding,
    ),
    "consistency": Preset(
        "the L-layer Transformer converges to the PDE solution at first order in h = T/L",
        pde={"dtype": "float64"},
        run={"t_end": 1.0, "dt": 0.005, "baseline": False},
        finding=_consistency_finding,
        after=_consistency_after,
    ),
    "cfl": Preset(
        "diffusion alone: forward Euler is stable for tau <= 1/2 and grows beyond; etd1 is stable at tau = 10",
        pde={"attention": False, "reaction": False, "diffusion": 1.0, "positional": False, "dtype": "float64"},
        run={"t_end": 40.0, "baseline": False},
        arms=_cfl_arms,
        finding=_cfl_finding,
    ),
}


def preset_spec(name: str, **run_changes: Any) -> RunSpec:
    """The RunSpec of a preset, with run-level changes applied."""
    if name not in PRESETS:
        raise ConfigError(f"preset={name!r} is not one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    base = RunSpec(preset=name)
    return replace(base, pde=base.pde.replace(**preset.pde), **{**preset.run, **run_changes})


# -- the run ----------------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    spec: RunSpec
    results: list[ArmResult]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    interrupted: bool = False


def run(spec: RunSpec, *, progress: bool = False) -> RunOutcome:
    """Runs every arm of the spec and summarizes; Ctrl-C keeps the arms finished so far."""
    preset = PRESETS[spec.preset]
    arms = preset.arms(spec) if preset.arms else default_arms(spec)
    results: list[ArmResult] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for arm in arms:
            result = run_arm(arm, spec, progress=progress)
            results.append(result)
            if result.solution.status == solvers.Status.INTERRUPTED:
                interrupted = True
                break
        if preset.after and not interrupted and results:
            preset.after(spec, results)
    except KeyboardInterrupt:
        interrupted = True
    arm_summaries, rows = {}, []
    for result in results:
        arm_summary, arm_rows = summarize_arm(result, spec)
        arm_summaries[result.arm.label] = arm_summary
        rows.extend(arm_rows)
    summary: dict[str, Any] = {
        "preset": spec.preset,
        "description": preset.description,
        "interrupted": interrupted,
        "wall_time": time.perf_counter() - start,
        "arms": arm_summaries,
    }
    if preset.finding and not interrupted and len(results) == len(arms):
        summary["findings"] = preset.finding(arm_summaries)
    return RunOutcome(spec, results, summary, rows, interrupted)


def spec_dict(spec: RunSpec) -> dict[str, Any]:
    """The spec as plain values (for JSON)."""
    out = asdict(spec)
    out["pde"] = spec.pde.to_dict()
    return out
