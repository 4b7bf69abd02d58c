"""Size of the state over time: token norms, max |u|, and the exponential growth rate."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ._states import as_float64, log_slope, over_batch


def norms(u: torch.Tensor, *, reduce: str | None = "mean") -> dict[str, torch.Tensor]:
    """Per-time sizes of a trajectory u (T, B, N, d), each (T,) float64 (batch-mean), or (T, B) with ``reduce=None``.

    "mean_token_norm": mean over tokens of ‖u_i‖; "max_token_norm": the largest token norm;
    "max_abs": the largest |u| entry; each per sample, then reduced over the batch.
    Non-finite states give non-finite values (an explosion is a finding, not an error).
    """
    u = as_float64(u)
    token = u.norm(dim=-1)  # (T, B, N)
    return {
        "mean_token_norm": over_batch(token.mean(dim=2), reduce),
        "max_token_norm": over_batch(token.amax(dim=2), reduce),
        "max_abs": over_batch(u.abs().flatten(2).amax(dim=2), reduce),
    }


def growth_rate(t: torch.Tensor | Sequence[float], values: torch.Tensor | Sequence[float]) -> float:
    """Exponential rate r of values ≈ C e^{r t}: least-squares slope of log(values) against t.

    nan when a value is ≤ 0 or non-finite, or when there are fewer than two distinct times.
    """
    return log_slope(t, values)
