"""Measurements over trajectories of any system du/dt = f(t, u) (DESIGN §7).

Duck-typed: a "system" is anything callable as ``system(t, u)``, optionally with
``energy(u)``, ``energy_parts(u)``, ``norm_energy(u)`` and ``energy_is_exact``; nothing here
imports pdesim. States are (T, B, N, d) trajectories (saved times, batch, tokens, channels) or
(B, N, d) single states; per-time results are float64 (T,) tensors averaged over the batch.
``probes.plots`` (imported on first use) draws the results as PNG files.
"""

from __future__ import annotations

import importlib
from typing import Any

from .attention import attention_entropy, attention_entropy_of
from .autodiff import dense_jacobian, forward_mode_safe, jvp
from .clustering import cluster_count, pairwise_cosines
from .consistency import commutator, consistency
from .drift import drift, linear_cka
from .energy import energy, energy_rate_check, monotone_fraction
from .lyapunov import ftle, ftle_two_trajectories, lyapunov_spectrum
from .norms import growth_rate, norms
from .rank import composite_norm, effective_rank, mean_pairwise_cosine, rank_collapse
from .spectrum import (
    jacobian_spectrum,
    laplacian_formula,
    laplacian_spectrum,
    max_stable_dt,
    stability_function,
    step_is_stable,
    transfer_function,
)

__all__ = [
    "attention_entropy", "attention_entropy_of", "cluster_count", "commutator", "composite_norm", "consistency",
    "dense_jacobian", "drift", "effective_rank", "energy", "energy_rate_check", "forward_mode_safe", "ftle",
    "ftle_two_trajectories", "growth_rate", "jacobian_spectrum", "jvp", "laplacian_formula", "laplacian_spectrum",
    "linear_cka", "lyapunov_spectrum", "max_stable_dt", "mean_pairwise_cosine", "monotone_fraction", "norms",
    "pairwise_cosines", "plots", "rank_collapse", "stability_function", "step_is_stable", "transfer_function",
]


def __getattr__(name: str) -> Any:
    # matplotlib is imported only by code that draws.
    if name == "plots":
        return importlib.import_module(".plots", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
