"""Representational drift: how far the state has moved from a reference (by default u(0))."""

from __future__ import annotations

import torch

from ._states import as_float64, divide, over_batch, sample_norms, unit_tokens


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA between token matrices x (..., N, d) and y (..., N, d'), centred over tokens.

    CKA = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F) (Kornblith et al. 2019), invariant to orthogonal maps
    and isotropic scaling of either side's channels. Shape (...). nan when a side is
    token-uniform (its centred matrix is 0), where the similarity is undefined.
    """
    x = x - x.mean(dim=-2, keepdim=True)
    y = y - y.mean(dim=-2, keepdim=True)
    tokens, features = x.shape[-2], max(x.shape[-1], y.shape[-1])
    if tokens < features:  # the same number in the N×N Gram space, cheaper when N < d
        kx, ky = x @ x.transpose(-1, -2), y @ y.transpose(-1, -2)
        cross = (kx * ky).sum(dim=(-1, -2))
        return divide(cross, kx.flatten(-2).norm(dim=-1) * ky.flatten(-2).norm(dim=-1))
    cross = (y.transpose(-1, -2) @ x).pow(2).sum(dim=(-1, -2))
    gx = (x.transpose(-1, -2) @ x).flatten(-2).norm(dim=-1)
    gy = (y.transpose(-1, -2) @ y).flatten(-2).norm(dim=-1)
    return divide(cross, gx * gy)


def drift(
    u: torch.Tensor, reference: torch.Tensor | None = None, *, reduce: str | None = "mean"
) -> dict[str, torch.Tensor]:
    """Distance of each saved state of u (T, B, N, d) to ``reference`` (B, N, d), default u[0].

    Each (T,) float64, per sample then batch-mean ((T, B) per sample with ``reduce=None``):
    "relative_distance" ‖u(t) − ref‖_F / ‖ref‖_F; "mean_cosine" the mean over tokens of
    cos(u_i(t), ref_i) (a zero token counts as cosine 0); "cka" linear CKA (``linear_cka``)
    between the token matrices of u(t) and ref.
    """
    u = as_float64(u)
    ref = u[0] if reference is None else reference.detach().to(device=u.device, dtype=torch.float64)
    if ref.shape != u.shape[1:]:
        raise ValueError(f"reference of shape {tuple(ref.shape)} does not match states of shape {tuple(u.shape[1:])}")
    distance = divide(sample_norms(u - ref, 2), sample_norms(ref).unsqueeze(0))
    cosine = (unit_tokens(u) * unit_tokens(ref)).sum(dim=-1)
    return {
        "relative_distance": over_batch(distance, reduce),
        "mean_cosine": over_batch(cosine.mean(dim=2), reduce),
        "cka": over_batch(linear_cka(u, ref.expand_as(u)), reduce),
    }
