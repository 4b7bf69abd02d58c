"""Finite-time Lyapunov exponents: how fast nearby trajectories separate.

Two estimators of the largest exponent λ₁ over [t0, t_end]:
- ``ftle``: the tangent flow dv/dt = J(u) v integrated with u (JVPs, no Jacobian formed);
- ``ftle_two_trajectories``: a reference and a perturbed trajectory, a finite-difference check.
Both renormalize the separation every ``renormalize_every`` time units (Benettin et al.), so it
never overflows nor leaves the linear regime, and report the running exponent
λ(t) = (1/(t − t0)) Σ log(growth) at each renormalization. Each sample of the batch has its own
separation; results are batch-means, and "per_sample" holds the final exponent of each sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

import solvers

from .autodiff import jvp

Field = Callable[[Any, torch.Tensor], torch.Tensor]


def _segment_ends(t0: float, t_end: float, every: float) -> list[float]:
    if not math.isfinite(every) or every <= 0:
        raise ValueError(f"renormalize_every must be a positive time, got {every!r}")
    if not t_end > t0:
        raise ValueError(f"t_end={t_end} must exceed t0={t0}")
    count = max(1, math.ceil((t_end - t0) / every - 1e-9))
    return [t0 + k * every for k in range(1, count)] + [t_end]


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def _as_sample_scale(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.ndim - 1)))


def _random_direction(u0: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(u0.shape, generator=generator, dtype=torch.float64).to(device=u0.device, dtype=u0.dtype)
    return v / _as_sample_scale(_per_sample_norm(v), v)


def _renormalized_run(
    pair_field: Field,
    pair: torch.Tensor,
    ends: list[float],
    t0: float,
    *,
    dt: float,
    method: str,
    renormalize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Any]:
    """Integrates the stacked pair segment by segment; ``renormalize`` returns (new pair, log growth (B,))."""
    batch = pair.shape[1]
    log_growth = torch.zeros(batch, dtype=torch.float64, device=pair.device)
    running = []
    start = t0
    for end in ends:
        with torch.no_grad():  # a measurement: no reverse graph through the system's parameters
            sol = solvers.solve(pair_field, pair, (start, end), method=method, dt=dt, blowup=None)
        pair = sol.u[-1].detach()
        if not sol.ok or not bool(torch.isfinite(pair).all()):
            break
        pair, growth = renormalize(pair)
        log_growth = log_growth + growth
        running.append(log_growth / (end - t0))
        start = end
    # A run that stopped early (non-finite state) leaves nan for the rest: an explosion is a finding.
    while len(running) < len(ends):
        running.append(torch.full((batch,), math.nan, dtype=torch.float64, device=pair.device))
    exponents = torch.stack(running)  # (K, B)
    return {
        "t": torch.tensor(ends, dtype=torch.float64),
        "ftle": exponents.mean(dim=1),
        "final": float(exponents[-1].mean()),
        "per_sample": exponents[-1],
    }


def ftle(
    system: Field,
    u0: torch.Tensor,
    t_end: float,
    *,
    dt: float,
    method: str = "rk4",
    renormalize_every: float = 1.0,
    seed: int = 0,
    t0: float = 0.0,
) -> dict[str, Any]:
    """Largest finite-time Lyapunov exponent of du/dt = system(t, u) from u0 over [t0, t_end].

    Integrates (u, v) with dv/dt = ∂f/∂u(t, u)·v (``torch.func.jvp``) by ``solvers.solve`` with
    ``method`` and step ``dt``, from a seeded random unit v per sample. Returns "t" (K,) the
    renormalization times, "ftle" (K,) the running exponent (batch-mean), "final" (float) its last
    value and "per_sample" (B,). Cost: one JVP per stage, about twice a plain run.
    """
    u0 = u0.detach()

    def pair_field(t: Any, pair: torch.Tensor) -> torch.Tensor:
        return torch.stack(jvp(system, t, pair[0], pair[1]))

    def renormalize(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        growth = _per_sample_norm(pair[1])
        tangent = pair[1] / _as_sample_scale(growth, pair[1])
        return torch.stack([pair[0], tangent]), growth.to(torch.float64).log()

    pair = torch.stack([u0, _random_direction(u0, seed)])
    ends = _segment_ends(float(t0), float(t_end), float(renormalize_every))
    return _renormalized_run(pair_field, pair, ends, float(t0), dt=dt, method=method, renormalize=renormalize)


def ftle_two_trajectories(
    system: Field,
    u0: torch.Tensor,
    t_end: float,
    *,
    dt: float,
    eps: float = 1e-6,
    method: str = "rk4",
    renormalize_every: float = 1.0,
    seed: int = 0,
    t0: float = 0.0,
) -> dict[str, Any]:
    """The exponent of ``ftle`` from a reference and a perturbed trajectory (finite differences).

    The perturbation has size eps·‖u_b‖ per sample (eps if u_b = 0), measured against the
    current state at each renormalization, so it stays far above rounding when u grows or
    shrinks. Same results as ``ftle``; agreement between the two checks the JVP path.
    """
    u0 = u0.detach()

    def size_of(u: torch.Tensor) -> torch.Tensor:
        norm = _per_sample_norm(u)
        return eps * torch.where(norm > 0, norm, 1.0)

    def pair_field(t: Any, pair: torch.Tensor) -> torch.Tensor:
        return torch.stack([system(t, pair[0]), system(t, pair[1])])

    # The separation each segment starts from, as stored (after rounding), not as intended.
    start_distance = []

    def renormalize(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reference, separation = pair[0], pair[1] - pair[0]
        distance = _per_sample_norm(separation)
        growth = distance / start_distance[-1]
        perturbed = reference + separation * _as_sample_scale(size_of(reference) / distance, separation)
        start_distance.append(_per_sample_norm(perturbed - reference))
        return torch.stack([reference, perturbed]), growth.to(torch.float64).log()

    perturbed = u0 + _random_direction(u0, seed) * _as_sample_scale(size_of(u0), u0)
    start_distance.append(_per_sample_norm(perturbed - u0))
    pair = torch.stack([u0, perturbed])
    ends = _segment_ends(float(t0), float(t_end), float(renormalize_every))
    return _renormalized_run(pair_field, pair, ends, float(t0), dt=dt, method=method, renormalize=renormalize)
