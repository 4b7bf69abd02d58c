"""Token clustering over time (Geshkovski et al.): tokens merge into groups pointing the same way.

Two tokens are linked when their cosine exceeds a threshold; clusters are the connected
components of that graph. This forms N×N cosine matrices, one state at a time: for moderate N.
"""

from __future__ import annotations

import torch

from ._states import as_float64, over_batch, unit_tokens


def pairwise_cosines(state: torch.Tensor) -> torch.Tensor:
    """cos(u_i, u_j) for a state (B, N, d): (B, N, N) float64 (a zero token has cosine 0 with all)."""
    if state.ndim != 3:
        raise ValueError(f"expected one state of shape (B, N, d), got {tuple(state.shape)}")
    unit = unit_tokens(state.detach().to(torch.float64))
    return unit @ unit.transpose(-1, -2)


def cluster_count(u: torch.Tensor, threshold: float = 0.99, *, reduce: str | None = "mean") -> torch.Tensor:
    """Number of token clusters (components of the graph cos(u_i, u_j) > threshold), (T,) float64, batch-mean.

    The components come from ``scipy.sparse.csgraph.connected_components``; ``reduce=None`` keeps
    one count per sample, (T, B).
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import connected_components

    u = as_float64(u)
    counts = torch.empty(u.shape[:2], dtype=torch.float64)
    for k, state in enumerate(u):
        linked = (pairwise_cosines(state) > threshold).cpu().numpy()
        for b in range(state.shape[0]):
            counts[k, b] = connected_components(csr_array(linked[b]), directed=False, return_labels=False)
    return over_batch(counts, reduce).to(u.device)
