"""Token clustering over time (Geshkovski et al.): tokens merge into groups pointing the same way.

Two tokens are linked when their cosine exceeds a threshold; clusters are the connected
components of that graph. This forms N×N cosine matrices, one state at a time: for moderate N.
"""

from __future__ import annotations

import torch

from ._states import as_float64, unit_tokens


def pairwise_cosines(state: torch.Tensor) -> torch.Tensor:
    """cos(u_i, u_j) for a state (B, N, d): (B, N, N) float64 (a zero token has cosine 0 with all)."""
    if state.ndim != 3:
        raise ValueError(f"expected one state of shape (B, N, d), got {tuple(state.shape)}")
    unit = unit_tokens(state.detach().to(torch.float64))
    return unit @ unit.transpose(-1, -2)


def _component_count(adjacent: torch.Tensor) -> int:
    """Connected components of a symmetric (N, N) bool graph with self-loops.

    Min-label propagation with pointer jumping: each token's label is a token of its own
    component, and jumping to the label's label shortcuts chains (tokens along a smooth curve
    link only to neighbours) so the rounds grow like log N, not N.
    """
    n = adjacent.shape[0]
    labels = torch.arange(n, device=adjacent.device)
    sentinel = torch.full_like(labels, n)
    while True:
        new = torch.minimum(labels, torch.where(adjacent, labels.unsqueeze(0), sentinel.unsqueeze(0)).amin(dim=1))
        while True:
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, labels):
            return int(labels.unique().numel())
        labels = new


def cluster_count(u: torch.Tensor, threshold: float = 0.99) -> torch.Tensor:
    """Number of token clusters (components of the graph cos(u_i, u_j) > threshold), (T,) float64, batch-mean."""
    u = as_float64(u)
    counts = torch.empty(u.shape[:2], dtype=torch.float64)
    eye = torch.eye(u.shape[2], dtype=torch.bool, device=u.device)
    for k, state in enumerate(u):
        cosines = pairwise_cosines(state)
        for b in range(state.shape[0]):
            counts[k, b] = _component_count((cosines[b] > threshold) | eye)
    return counts.mean(dim=1).to(u.device)
