"""Measuring a trajectory: every per-time metric of a run, and the growth of the token norm.

A trajectory is the PDE's saved states or the Transformer's layer states, (T, B, N, d) at times
(T,). States past a blow-up are non-finite; their metrics are nan, never an error.
"""

from __future__ import annotations

import math

import torch

import probes

from ..model import MasterPDE

# The per-time metrics, in the column order of metrics.csv.
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


def growth(t: torch.Tensor, norms: torch.Tensor) -> tuple[float, float]:
    """(final / initial mean token norm, exponential growth rate over the finite part)."""
    finite = torch.isfinite(norms)
    if finite.sum() < 2:
        return math.nan, math.nan
    values, times = norms[finite], t[finite]
    return float(values[-1] / values[0]), probes.growth_rate(times, values)
