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

from .arms import ArmResult
from .measure import METRIC_COLUMNS, growth, measure
from .spec import RunSpec

# The metrics whose value at the final time the summary states as final_<name>.
FINAL_METRICS = ("mean_cosine", "cka", "residual", "effective_rank", "mean_pairwise_cosine", "clusters")


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
        "energy_is_exact": bool(model.energy_is_exact),
    }
    sources = [("pde", sol.t, sol.u)]
    if result.layer_states is not None:
        sources.append(("transformer", result.layer_times, result.layer_states))
    for source, t, u in sources:
        metrics = measure(model, t, u)
        for k, time_value in enumerate(t.tolist()):
            row = {"arm": arm.label, "source": source, "t": time_value}
            row.update({name: float(metrics[name][k]) for name in METRIC_COLUMNS})
            rows.append(row)
        norm_growth, rate = growth(t, metrics["mean_token_norm"])
        final = {f"final_{name}": float(metrics[name][-1]) for name in FINAL_METRICS}
        entry = {
            "norm_growth": norm_growth,
            "growth_rate": rate,
            "initial_clusters": float(metrics["clusters"][0]),
            **final,
        }
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
