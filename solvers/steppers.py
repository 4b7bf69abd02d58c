"""One-step maps u(t) ↦ u(t + dt): explicit Runge–Kutta, splitting, IMEX and exponential.

A stepper is bound to its field and exposes ``step(t, u, dt)`` and ``order``; the fixed-grid
driver (``solvers.fixed``) owns time, saving, projection and stopping, so a stepper is only the
arithmetic of one step.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from .fields import ExactFlow, SemilinearField, SplitField, SubFlow
from .solution import SolverInputError
from .tableau import TABLEAUS, ButcherTableau


class Stepper(Protocol):
    order: int

    def step(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor: ...


class ExplicitRK:
    """Advances du/dt = f(t, u) by one step of an explicit Butcher tableau."""

    def __init__(self, f: Any, tableau: ButcherTableau):
        self.f = f
        self.tableau = tableau
        self.order = tableau.order
        # Precompute which stage couplings are non-zero so a step does no arithmetic on zeros.
        self._rows = [[(j, a) for j, a in enumerate(row[:i]) if a != 0.0] for i, row in enumerate(tableau.a)]
        self._weights = [(i, b) for i, b in enumerate(tableau.b) if b != 0.0]

    def step(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        tab = self.tableau
        ks: list[torch.Tensor] = []
        for i, row in enumerate(self._rows):
            stage = u
            for j, a in row:
                stage = stage.add(ks[j], alpha=dt * a)
            ks.append(self.f(t + tab.c[i] * dt, stage))
        out = u
        for i, b in self._weights:
            out = out.add(ks[i], alpha=dt * b)
        return out


def explicit_rk(f: Any, method: str) -> ExplicitRK:
    try:
        return ExplicitRK(f, TABLEAUS[method])
    except KeyError:
        raise SolverInputError(f"unknown explicit method {method!r}; choose one of {', '.join(TABLEAUS)}") from None


class _PartFlow:
    """Advances one part of a split field over dt: exactly, or by sub-stepping an RK method."""

    def __init__(self, part: Any, default_method: str):
        if isinstance(part, SubFlow):
            field, method, substeps = part.field, part.method, part.substeps
        else:
            field, substeps = part, 1
            method = "exact" if isinstance(part, ExactFlow) else default_method
        self.exact = method == "exact"
        self.field = field
        self.substeps = substeps
        self.rk = None if self.exact else explicit_rk(field, method)
        self.order = math.inf if self.exact else self.rk.order

    def advance(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        if self.exact:
            return self.field.flow(u, dt)
        h = dt / self.substeps
        for k in range(self.substeps):
            u = self.rk.step(t + k * h, u, h)
        return u


class Splitting:
    """Lie–Trotter (parts in order, order 1) or Strang (symmetric, order 2) composition."""

    def __init__(self, field: SplitField, scheme: str, default_method: str = "rk4"):
        if scheme not in ("lie", "strang"):
            raise SolverInputError(f"unknown splitting scheme {scheme!r}; choose lie or strang")
        self.flows = [_PartFlow(p, default_method) for p in field.parts.values()]
        self.scheme = scheme
        sub_order = min(fl.order for fl in self.flows)
        self.order = int(min(1 if scheme == "lie" else 2, sub_order))

    def step(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        if self.scheme == "lie" or len(self.flows) == 1:
            for flow in self.flows:
                u = flow.advance(t, u, dt)
            return u
        half = 0.5 * dt
        *outer, middle = self.flows
        for flow in outer:
            u = flow.advance(t, u, half)
        u = middle.advance(t, u, dt)
        for flow in reversed(outer):
            u = flow.advance(t + half, u, half)
        return u


def _series_threshold(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float64 else 1e-1


def phi1(z: torch.Tensor) -> torch.Tensor:
    """φ₁(z) = (e^z − 1)/z, with a Taylor series near 0 where the quotient cancels."""
    small = z.abs() < _series_threshold(z.dtype)
    safe = torch.where(small, torch.ones_like(z), z)
    series = 1 + z / 2 * (1 + z / 3 * (1 + z / 4))
    return torch.where(small, series, torch.expm1(safe) / safe)


def phi2(z: torch.Tensor) -> torch.Tensor:
    """φ₂(z) = (e^z − 1 − z)/z², with a Taylor series near 0."""
    small = z.abs() < _series_threshold(z.dtype)
    safe = torch.where(small, torch.ones_like(z), z)
    series = 0.5 + z / 6 * (1 + z / 4 * (1 + z / 5))
    return torch.where(small, series, (torch.expm1(safe) - safe) / safe**2)


class Semilinear:
    """du/dt = A u + N(t, u) with A diagonal in a known basis; A is treated exactly or implicitly.

    - ``imex-euler``: (I − dt A) u⁺ = u + dt N(u)  (order 1, unconditionally stable in A)
    - ``etd1``: exponential Euler, u⁺ = e^{dtA} u + dt φ₁(dtA) N(u)  (order 1, exact when N = 0)
    - ``etd-rk2``: Cox–Matthews ETD2RK, a predictor of etd1 and a φ₂ corrector  (order 2)
    """

    ORDERS = {"imex-euler": 1, "etd1": 1, "etd-rk2": 2}

    def __init__(self, field: SemilinearField, scheme: str):
        if scheme not in self.ORDERS:
            raise SolverInputError(f"unknown semilinear scheme {scheme!r}; choose one of {', '.join(self.ORDERS)}")
        self.A = field.linear
        self.N = field.nonlinear
        self.scheme = scheme
        self.order = self.ORDERS[scheme]

    def step(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        A, N = self.A, self.N
        z = dt * A.multiplier(u)
        n0 = N(t, u)
        if self.scheme == "imex-euler":
            return A.from_spectral(A.to_spectral(u.add(n0, alpha=dt)) / (1 - z))
        u_hat, n0_hat = A.to_spectral(u), A.to_spectral(n0)
        decay, p1 = torch.exp(z), phi1(z)
        a_hat = decay * u_hat + dt * p1 * n0_hat
        if self.scheme == "etd1":
            return A.from_spectral(a_hat)
        a = A.from_spectral(a_hat)
        correction = A.to_spectral(N(t + dt, a) - n0)
        return A.from_spectral(a_hat + dt * phi2(z) * correction)
