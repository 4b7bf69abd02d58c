"""Discrete vs continuous: convergence order of the L-layer Transformer to the PDE, and commutators."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ._states import log_slope


def consistency(discrete_outputs: Mapping[int, torch.Tensor], reference: torch.Tensor) -> dict[str, Any]:
    """Error of each discrete output (keyed by layer count L) against the PDE ``reference`` at T.

    Returns, with layers in increasing order: "layers" (K,) int64; "errors" (K,) float64, the
    max-abs error max|u_L − u(T)|; "relative_errors" (K,) the relative Frobenius error
    ‖u_L − u(T)‖_F / ‖u(T)‖_F; "order" (float) the least-squares slope of log(error) against
    log(1/L) (1 for Lie–Trotter with Euler, 2 for Strang); "ratios" (list, K−1) the successive
    error ratios e(L_k)/e(L_{k+1}) (2^order when L doubles).
    """
    if not discrete_outputs:
        raise ValueError("consistency needs at least one discrete output")
    reference = reference.detach().to(torch.float64)
    layers = sorted(int(layer) for layer in discrete_outputs)
    errors, relative = [], []
    for layer in layers:
        diff = discrete_outputs[layer].detach().to(device=reference.device, dtype=torch.float64) - reference
        errors.append(diff.abs().max())
        relative.append(diff.norm() / reference.norm())
    errors_t = torch.stack(errors).cpu()
    inverse_layers = 1.0 / torch.tensor(layers, dtype=torch.float64)
    ratios = [float(a / b) if b != 0 else math.nan for a, b in zip(errors_t[:-1], errors_t[1:])]
    return {
        "layers": torch.tensor(layers, dtype=torch.int64),
        "errors": errors_t,
        "relative_errors": torch.stack(relative).cpu(),
        "order": log_slope(inverse_layers.log(), errors_t),
        "ratios": ratios,
    }


def commutator(
    smooth: Callable[[torch.Tensor], torch.Tensor],
    operator: Callable[[torch.Tensor], torch.Tensor],
    u: torch.Tensor,
) -> float:
    """‖smooth(operator(u)) − operator(smooth(u))‖_F / ‖operator(u)‖_F (nan if operator(u) = 0).

    E.g. diffusion smoothing P_τ against attention: 0 exactly when the two commute at u.
    """
    with torch.no_grad():
        applied = operator(u)
        gap = smooth(applied) - operator(smooth(u))
        scale = float(applied.to(torch.float64).norm())
    return float(gap.to(torch.float64).norm()) / scale if scale > 0 else math.nan
