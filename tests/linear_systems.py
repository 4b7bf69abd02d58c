"""Linear test problems with exact solutions via the matrix exponential (shared by solver tests)."""

from __future__ import annotations

import math

import torch


class MatrixField:
    """du/dt = u Aᵀ (A acts on the last axis); its exact flow is u e^{dt A}ᵀ."""

    def __init__(self, A: torch.Tensor):
        self.A = A

    def __call__(self, t, u: torch.Tensor) -> torch.Tensor:
        return u @ self.A.T

    def flow(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        return u @ torch.linalg.matrix_exp(dt * self.A).T

    def exact(self, u0: torch.Tensor, t: float) -> torch.Tensor:
        return self.flow(u0, t)


def random_matrix(n: int, seed: int, *, shift: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, n, generator=g, dtype=torch.float64) / math.sqrt(n) + shift * torch.eye(
        n, dtype=torch.float64
    )


def fitted_order(steps: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(step)."""
    x = torch.tensor(steps, dtype=torch.float64).log()
    y = torch.tensor(errors, dtype=torch.float64).log()
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())
