"""Summarising an arm: statuses, growth, final metrics and the PDE–Transformer gap, plus its CSV rows.

The summary of an arm is what ``summary.json`` holds under ``arms[label]`` and what a preset's
finding reads (by the arm's ``role``); the rows are its lines of metrics.csv.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import probes
import solvers

from .arms import ArmResult, normalized_no_residual_warning, pairing_note, source_labels
from .measure import STATE_METRICS, growth, measure, unmeasured
from .spec import RunSpec

# The metrics whose value at the final time the summary states as final_<name>.
FINAL_METRICS = ("mean_cosine", "cka", "residual", "effective_rank", "mean_pairwise_cosine", "clusters")


# How each energy term reads in a functional's name (``MasterPDE.energy_parts`` keys).
ENERGY_TERMS = {
    "diffusion": "E_D", "attention": "E_A", "reaction": "ΣΨ", "residual": "½κ‖u‖²", "stabilizer": "E_stab",
}


def energy_functional(model: Any, u: torch.Tensor) -> str:
    """The name of the model's energy E as the sum of its terms, e.g. "E = E_D + E_A + ΣΨ"; "none" without one."""
    if not hasattr(model, "energy_parts"):
        return "none"
    with torch.no_grad():
        parts = model.energy_parts(u[:1])
    return "E = " + (" + ".join(ENERGY_TERMS.get(name, name) for name in parts) or "0")


NOT_MEASURED = "not measured for this arm (an interrupted run, or an imported model)"
# Below this distance to token-uniform (‖u − 1ūᵀ‖/‖u‖) the centred token matrix CKA compares is rounding.
CKA_RESIDUAL_FLOOR = 1e-5


def cka_note(cka: float, residual: float) -> str | None:
    """Why the final CKA to the input is not a similarity to read (None when it is)."""
    if math.isnan(residual):
        return "no CKA: the final state is not finite"
    if residual == 0.0 or math.isnan(cka):
        return "no CKA: the final state is token-uniform (its centred matrix is 0), where CKA is undefined"
    if residual < CKA_RESIDUAL_FLOOR:
        return (
            f"CKA is rounding: the final state is within {residual:.1e} of token-uniform, so the centred matrix "
            "it compares is noise; read the rank residual instead"
        )
    return None


def summarize_arm(result: ArmResult, spec: RunSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary of one arm, metric rows for the CSV)."""
    sol, model, arm = result.solution, result.model, result.arm
    rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {
        "role": arm.role,
        "label": arm.label,
        "solver": arm.solver,
        "dt": arm.dt,
        "norm": arm.cfg.norm,
        "residual": arm.cfg.residual,
        "status": str(sol.status),
        "t_event": sol.t_event,
        "message": sol.message,
        "nfe": sol.stats.get("nfe"),
        "steps": sol.stats.get("steps"),
        "wall_time": sol.stats.get("wall_time"),
        "compile_time": sol.stats.get("compile_time"),  # None unless the run compiled its step (--compile)
        "energy_is_exact": bool(model.energy_is_exact),
    }
    summary["blowup_threshold"] = spec.blowup
    summary["energy_functional"] = energy_functional(model, sol.u[0])
    labels = source_labels(arm.cfg)
    summary["sources"] = labels if result.layer_states is not None else {"pde": labels["pde"]}
    pairing = pairing_note(arm.cfg) if result.layer_states is not None else None
    if pairing:
        summary["pairing"] = pairing
    warning = normalized_no_residual_warning(arm.cfg)
    if warning:
        summary["warnings"] = [warning]
    sources = [("pde", sol.t, sol.u)]
    if result.layer_states is not None:
        sources.append(("transformer", result.layer_times, result.layer_states))
    for source, t, u in sources:
        metrics = measure(model, t, u)
        lyapunov = result.lyapunov.get(source) or unmeasured(NOT_MEASURED)
        metrics["lyapunov"] = lyapunov.at(t)
        for k, time_value in enumerate(t.tolist()):
            row = {"arm": arm.label, "source": source, "t": time_value}
            row.update({name: float(metrics[name][k]) for name in (*STATE_METRICS, "lyapunov")})
            rows.append(row)
        norm_growth, rate = growth(t, metrics["mean_token_norm"])
        final = {f"final_{name}": float(metrics[name][-1]) for name in FINAL_METRICS}
        entry = {
            "norm_growth": norm_growth,
            "growth_rate": rate,
            "initial_clusters": float(metrics["clusters"][0]),
            **final,
            **lyapunov.summary(),
        }
        why = cka_note(entry["final_cka"], entry["final_residual"])
        if why:
            entry["cka_note"] = why
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


def run_notes(summary: dict[str, Any]) -> list[str]:
    """The lines a run prints under its table: each arm's warnings, and how its Transformer pairs with its PDE."""
    lines = []
    for label, arm in summary.get("arms", {}).items():
        lines.extend(f"warning: {label}: {warning}" for warning in arm.get("warnings", ()))
        if arm.get("compile_time") is not None:
            lines.append(f"note: {label}: its step was compiled in {arm['compile_time']:.1f} s (once per shape)")
        if arm.get("pairing"):
            sources = arm.get("sources", {})
            lines.append(f"note: {label}: {sources.get('pde')} beside {sources.get('transformer')}: {arm['pairing']}")
        for source, entry in (("pde", arm), ("transformer", arm.get("transformer") or {})):
            if entry.get("cka_note"):
                lines.append(f"note: {label} ({source}): {entry['cka_note']}")
    return lines
