"""The second difference u_{i+δ} − 2u_i + u_{i−δ} along one axis, on the whole grid or on segments of it.

This is the one place that knows the boundary rules of a 1-D grid. A boundary condition extends
the field beyond the ends of its segment:

- ``neumann``: even reflection about −½ and n − ½ (ghost u_{−j} = u_{j−1}), period 2n;
- ``periodic``: wrap-around, period n;
- ``dirichlet``: odd reflection about −1 and n, where the field is zero, period 2n + 2.

``second_difference(u, δ, bc)`` applies the stencil on the whole axis with slices (no gather, and
the result keeps the input's memory layout, so later adds stay contiguous). With ``segments``
(``Segments.of_mask``), every maximal run of valid points is its own grid with the boundary rule
at its first and last valid point, and a point reads only points of its own run: a right-padded
sequence behaves exactly like the unpadded shorter one, and documents packed between padding never
mix. The operation order is the same in both paths (ahead + behind − 2u), so they agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOUNDARY_CONDITIONS = ("neumann", "periodic", "dirichlet")


def reflect_index(j: torch.Tensor, n: torch.Tensor | int, bc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Where local index ``j`` lands on a grid of ``n`` points under ``bc``, and with which sign.

    The sign is 1 inside and on even mirrors, −1 on odd (Dirichlet) mirrors and 0 on a Dirichlet
    wall. ``j`` and ``n`` broadcast; ``n`` must be at least 1.
    """
    if bc == "periodic":
        index = torch.remainder(j, n)
        return index, torch.ones_like(index)
    if bc == "neumann":
        m = torch.remainder(j, 2 * n)
        return torch.where(m < n, m, 2 * n - 1 - m), torch.ones_like(m)
    m = torch.remainder(j + 1, 2 * n + 2) - 1
    inside = (m >= 0) & (m < n)
    mirrored = m > n
    index = torch.where(inside, m, torch.where(mirrored, 2 * n - m, torch.zeros_like(m)))
    return index, inside.long() - mirrored.long()


@dataclass(frozen=True)
class Segments:
    """For each point of a grid axis: its position, and the first index and length of its run of valid points.

    ``valid`` is the (..., N) bool mask the runs came from. Points outside every run (padding) get
    the bounds of an enclosing stretch, which keeps their (discarded) neighbour indices in range.
    """

    position: torch.Tensor
    start: torch.Tensor
    length: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def of_mask(cls, valid: torch.Tensor) -> Segments:
        """The runs of True along the last axis of a bool mask (..., N)."""
        if valid.dtype != torch.bool:
            raise ValueError(f"a segment mask must be a bool tensor, got {valid.dtype}")
        n = valid.shape[-1]
        position = torch.arange(n, device=valid.device).expand(valid.shape)
        outside = torch.zeros_like(valid[..., :1])
        previous_valid = torch.cat([outside, valid[..., :-1]], dim=-1)
        next_valid = torch.cat([valid[..., 1:], outside], dim=-1)
        # A running max over run starts (and a reversed running min over run ends) gives every
        # valid point the bounds of its own run.
        start = torch.where(valid & ~previous_valid, position, 0).cummax(dim=-1).values
        end = torch.where(valid & ~next_valid, position, n - 1).flip(-1).cummin(dim=-1).values.flip(-1)
        return cls(position, start, end - start + 1, valid)

    def neighbour(self, offset: int, bc: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(index, sign) of the point ``offset`` away from each point, by ``bc`` inside its run."""
        local, sign = reflect_index(self.position - self.start + offset, self.length, bc)
        return self.start + local, sign

    def take(self, u: torch.Tensor, index: torch.Tensor, sign: torch.Tensor | None = None) -> torch.Tensor:
        """sign ⊙ u at ``index`` along the axis before the last (u is (..., N, d), index (..., N))."""
        picked = u.gather(-2, index.unsqueeze(-1).expand(u.shape))
        return picked if sign is None else picked * sign.unsqueeze(-1).to(u.dtype)


def _ghosts(y: torch.Tensor, d: int, bc: str, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The δ ghost points on each side of the axis ``dim`` of y, by the boundary rule."""
    n = y.shape[dim]
    if bc == "periodic":
        return y.narrow(dim, n - d, d), y.narrow(dim, 0, d)
    if bc == "neumann":
        if d == 1:  # a one-point ghost needs no flip (a copy kernel each)
            return y.narrow(dim, 0, 1), y.narrow(dim, n - 1, 1)
        return y.narrow(dim, 0, d).flip(dim), y.narrow(dim, n - d, d).flip(dim)
    zero = torch.zeros_like(y.narrow(dim, 0, 1))
    left = torch.cat([-y.narrow(dim, 0, d - 1).flip(dim), zero], dim=dim)
    right = torch.cat([zero, -y.narrow(dim, n - d + 1, d - 1).flip(dim)], dim=dim)
    return left, right


def second_difference(
    u: torch.Tensor, dilation: int, bc: str, *, dim: int = -2, segments: Segments | None = None
) -> torch.Tensor:
    """u_{i+δ} + u_{i−δ} − 2u_i along ``dim`` (unscaled), on the whole axis or on each run of ``segments``.

    With ``segments`` the axis must be the one before the last (token axis of (..., N, d)); the
    value at points outside every run is unspecified (callers keep or zero it).
    """
    if segments is not None:
        if dim not in (-2, u.ndim - 2):
            raise ValueError("a segmented second difference runs along the axis before the last")
        signed = bc == "dirichlet"  # the other rules only move points: skip a multiply by ones
        (ahead, ahead_sign), (behind, behind_sign) = segments.neighbour(dilation, bc), segments.neighbour(-dilation, bc)
        ahead = segments.take(u, ahead, ahead_sign if signed else None)
        behind = segments.take(u, behind, behind_sign if signed else None)
        return (ahead + behind).add_(u, alpha=-2.0)
    n, d = u.shape[dim], dilation
    if d > n:  # the ghosts wrap around the extension more than once: index it instead of slicing
        position = torch.arange(n, device=u.device)
        (ahead, ahead_sign), (behind, behind_sign) = (reflect_index(position + s, n, bc) for s in (d, -d))
        shape = [1] * u.ndim
        shape[dim] = n
        return (
            u.index_select(dim, ahead) * ahead_sign.to(u.dtype).view(shape)
            + u.index_select(dim, behind) * behind_sign.to(u.dtype).view(shape)
            - 2.0 * u
        )
    left, right = _ghosts(u, d, bc, dim)
    extended = torch.cat([left, u, right], dim=dim)
    # (a + b) + (−2)·u equals (a + b) − 2u exactly (scaling by 2 is exact), in one kernel fewer
    return (extended.narrow(dim, 2 * d, n) + extended.narrow(dim, 0, n)).add_(u, alpha=-2.0)
