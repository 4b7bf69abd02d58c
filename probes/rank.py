"""Rank collapse: distance of the token matrix to a token-uniform one, effective rank, token alignment."""

from __future__ import annotations

import torch

from ._states import as_float64, divide, over_batch, sample_norms, unit_tokens


def composite_norm(m: torch.Tensor) -> torch.Tensor:
    """√(‖m‖₁ ‖m‖∞) of Dong et al. 2021 for matrices m (..., N, d), shape (...).

    ‖m‖₁ is the largest column abs sum, ‖m‖∞ the largest row (token) abs sum.
    """
    column = m.abs().sum(dim=-2).amax(dim=-1)
    row = m.abs().sum(dim=-1).amax(dim=-1)
    return (column * row).sqrt()


def effective_rank(m: torch.Tensor) -> torch.Tensor:
    """exp of the Shannon entropy of σ/Σσ (Roy & Vetterli 2007) of matrices m (..., N, d), shape (...).

    Uncentred: a token-uniform nonzero matrix has effective rank 1. nan for a zero matrix.
    """
    s = torch.linalg.svdvals(m)
    p = divide(s, s.sum(dim=-1, keepdim=True))
    entropy = -torch.where(p > 0, p * p.log(), 0.0).sum(dim=-1)
    return torch.where(p.isnan().any(dim=-1), torch.nan, entropy.exp())


def mean_pairwise_cosine(u: torch.Tensor) -> torch.Tensor:
    """Mean over ordered pairs i ≠ j of cos(u_i, u_j) for states u (..., N, d), shape (...).

    O(N d): Σ_{i≠j} û_i·û_j = ‖Σ_i û_i‖² − Σ_i ‖û_i‖², without the N×N matrix. nan for N = 1.
    """
    tokens = u.shape[-2]
    if tokens < 2:
        return torch.full(u.shape[:-2], torch.nan, dtype=u.dtype, device=u.device)
    unit = unit_tokens(u)
    total = unit.sum(dim=-2).pow(2).sum(dim=-1) - unit.pow(2).sum(dim=(-1, -2))
    return total / (tokens * (tokens - 1))


def rank_collapse(u: torch.Tensor, *, reduce: str | None = "mean") -> dict[str, torch.Tensor]:
    """Collapse measures of a trajectory u (T, B, N, d), each (T,) float64, per sample then batch-mean.

    With ``reduce=None`` each is (T, B), one value per sample.

    "residual" ‖u − 1ūᵀ‖_F / ‖u‖_F with ū the token mean (0 when all tokens are equal);
    "residual_composite" the same ratio in ``composite_norm``; "effective_rank" of the uncentred
    token matrix; "mean_pairwise_cosine" between distinct tokens.
    """
    u = as_float64(u)
    centred = u - u.mean(dim=-2, keepdim=True)
    return {
        "residual": over_batch(divide(sample_norms(centred, 2), sample_norms(u, 2)), reduce),
        "residual_composite": over_batch(divide(composite_norm(centred), composite_norm(u)), reduce),
        "effective_rank": over_batch(effective_rank(u), reduce),
        "mean_pairwise_cosine": over_batch(mean_pairwise_cosine(u), reduce),
    }
