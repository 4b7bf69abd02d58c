"""The hand-written limits that the benchmarks' ratios are taken against."""

from __future__ import annotations

from collections.abc import Callable

import torch


def hand_rk4(f: Callable[[float, torch.Tensor], torch.Tensor], u0: torch.Tensor, steps: int, dt: float) -> torch.Tensor:
    """Classic rk4 from u0 in a bare loop: the stage arithmetic as add-with-alpha, nothing else."""
    u = u0
    for i in range(steps):
        t = i * dt
        k1 = f(t, u)
        k2 = f(t + dt / 2, u.add(k1, alpha=dt / 2))
        k3 = f(t + dt / 2, u.add(k2, alpha=dt / 2))
        k4 = f(t + dt, u.add(k3, alpha=dt))
        u = u.add(k1, alpha=dt / 6).add(k2, alpha=dt / 3).add(k3, alpha=dt / 3).add(k4, alpha=dt / 6)
    return u
