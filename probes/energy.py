"""Energy along a trajectory: E(t) and its parts, dE/dt against −‖du/dt‖², and monotonicity.

The system is duck-typed: ``energy(u) -> (B,)``, optionally ``energy_parts(u) -> {name: (B,)}``,
``norm_energy(u) -> (B,)`` and ``energy_is_exact`` (True when E is a Lyapunov function, i.e. the
field is −∇E or a projected −∇E, so that dE/dt = −‖f‖² ≤ 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ._states import as_trajectory

MONOTONE_RTOL = 1e-12


def _batch_mean(values: torch.Tensor) -> torch.Tensor:
    return values.detach().to(torch.float64).mean()


def energy(system: Any, u: torch.Tensor, t: torch.Tensor | Sequence[float] | None = None) -> dict[str, Any]:
    """Energies of each saved state of u (T, B, N, d), batch-mean, each (T,) float64.

    "energy": ``system.energy`` (or the sum of ``energy_parts`` if only those exist; nan if the
    system has neither); "energy/<name>" for each of ``system.energy_parts``; "norm_energy":
    ``system.norm_energy`` if present, else ½‖u‖²; "exact": ``system.energy_is_exact`` (False
    if absent). ``t``, if given, is passed through as "t" (float64) for convenience. States are
    handed to the system in their own dtype.
    """
    u = as_trajectory(u)
    has_energy, has_parts = hasattr(system, "energy"), hasattr(system, "energy_parts")
    totals: list[torch.Tensor] = []
    parts: dict[str, list[torch.Tensor]] = {}
    norm: list[torch.Tensor] = []
    with torch.no_grad():
        for state in u:  # one state at a time: energies may build (B, H, N, N) kernels
            state_parts = system.energy_parts(state) if has_parts else {}
            for name, value in state_parts.items():
                parts.setdefault(name, []).append(_batch_mean(value))
            if has_energy:
                totals.append(_batch_mean(system.energy(state)))
            elif state_parts:
                totals.append(sum(_batch_mean(v) for v in state_parts.values()))
            if hasattr(system, "norm_energy"):
                norm.append(_batch_mean(system.norm_energy(state)))
            else:
                norm.append(_batch_mean(0.5 * state.to(torch.float64).flatten(1).pow(2).sum(dim=1)))
    nan = torch.full((u.shape[0],), math.nan, dtype=torch.float64, device=u.device)
    out: dict[str, Any] = {"energy": torch.stack(totals) if totals else nan}
    out.update({f"energy/{name}": torch.stack(values) for name, values in parts.items()})
    out["norm_energy"] = torch.stack(norm)
    out["exact"] = bool(getattr(system, "energy_is_exact", False))
    if t is not None:
        out["t"] = torch.as_tensor(t, dtype=torch.float64).detach()
    return out


def energy_rate_check(
    system: Callable[[Any, torch.Tensor], torch.Tensor],
    u: torch.Tensor,
    t: torch.Tensor | Sequence[float] | None = None,
) -> dict[str, torch.Tensor]:
    """At each saved state, dE/dt = ⟨∇E(u), f(t, u)⟩ (autograd) next to −‖f(t, u)‖², batch-mean.

    Returns "dE_dt" and "minus_velocity_sq", each (T,) float64. They agree for an exact gradient
    flow f = −∇E, and for a projected one f = −P∇E with P an orthogonal projection. ``t`` gives
    the time of each saved state (default 0: an autonomous field).
    """
    u = as_trajectory(u)
    times = [0.0] * u.shape[0] if t is None else [float(x) for x in torch.as_tensor(t).flatten()]
    if len(times) != u.shape[0]:
        raise ValueError(f"{len(times)} times for {u.shape[0]} saved states")
    rates, minus = [], []
    for time, state in zip(times, u):
        x = state.clone().requires_grad_(True)
        with torch.enable_grad():
            total = system.energy(x).sum()  # samples are independent: the sum's gradient is per-sample ∇E
            grad = torch.autograd.grad(total, x)[0] if total.requires_grad else torch.zeros_like(x)
        with torch.no_grad():
            velocity = system(time, state)
        rates.append(_batch_mean((grad.detach() * velocity).flatten(1).sum(dim=1)))
        minus.append(_batch_mean(-velocity.pow(2).flatten(1).sum(dim=1)))
    return {"dE_dt": torch.stack(rates), "minus_velocity_sq": torch.stack(minus)}


def monotone_fraction(values: torch.Tensor | Sequence[float]) -> float:
    """Share of consecutive pairs with values[k+1] ≤ values[k] (up to a relative 1e-12); nan if < 2 values.

    A non-finite value makes its steps count as not monotone.
    """
    v = torch.as_tensor(values, dtype=torch.float64).detach().flatten().cpu()
    if v.numel() < 2:
        return math.nan
    before, after = v[:-1], v[1:]
    tolerance = MONOTONE_RTOL * torch.maximum(before.abs(), after.abs())
    return float((after - before <= tolerance).to(torch.float64).mean())
