"""Shape and dtype conventions shared by the probes: trajectories, batch means, float64 results."""

from __future__ import annotations

import math

import torch


def as_trajectory(u: torch.Tensor) -> torch.Tensor:
    """u as a (T, B, N, d) trajectory, detached; a single (B, N, d) state becomes T = 1."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor of states, got {type(u).__name__}")
    if u.ndim == 3:
        u = u.unsqueeze(0)
    if u.ndim != 4:
        raise ValueError(f"expected states of shape (T, B, N, d) or (B, N, d), got {tuple(u.shape)}")
    return u.detach()


def as_float64(u: torch.Tensor) -> torch.Tensor:
    """A detached float64 trajectory (T, B, N, d) for measurements, on the input's device."""
    return as_trajectory(u).to(torch.float64)


def over_batch(x: torch.Tensor, reduce: str | None) -> torch.Tensor:
    """A per-time, per-sample value (T, B) reduced over the batch: "mean" gives (T,), None keeps (T, B)."""
    if reduce == "mean":
        return x.mean(dim=1)
    if reduce is None:
        return x
    raise ValueError(f"reduce={reduce!r} is not one of 'mean', None")


def sample_norms(x: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
    """Frobenius norm of each sample: every axis after the first ``batch_dims`` is reduced."""
    return x.flatten(batch_dims).norm(dim=batch_dims)


def divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, nan where the denominator is 0 (a 0/0 ratio is undefined, not 0)."""
    return torch.where(denominator != 0, numerator / torch.where(denominator != 0, denominator, 1.0), math.nan)


def unit_tokens(u: torch.Tensor) -> torch.Tensor:
    """Each token divided by its norm; a zero token stays zero, so its cosine with anything is 0."""
    norms = u.norm(dim=-1, keepdim=True)
    return u / torch.where(norms > 0, norms, 1.0)


def log_slope(x: torch.Tensor, values: torch.Tensor) -> float:
    """Least-squares slope of log(values) against x; nan unless ≥ 2 finite positive values and spread in x."""
    x = torch.as_tensor(x, dtype=torch.float64).detach().flatten().cpu()
    y = torch.as_tensor(values, dtype=torch.float64).detach().flatten().cpu()
    if x.numel() != y.numel():
        raise ValueError(f"{x.numel()} abscissae but {y.numel()} values")
    if y.numel() < 2 or not bool(torch.isfinite(x).all()) or not bool((torch.isfinite(y) & (y > 0)).all()):
        return math.nan
    x = x - x.mean()
    spread = float((x * x).sum())
    if spread == 0.0:
        return math.nan
    y = y.log()
    return float((x * (y - y.mean())).sum()) / spread
