"""Diagonalizable linear operators on a 1-D grid: the second difference and its eigenbasis.

``Laplacian1D`` applies (u_{i+δ} − 2u_i + u_{i−δ}) / (δh)² along one axis of a tensor with a
boundary condition (the stencil and its boundary rules live in ``solvers.stencil``), and knows
its eigen-decomposition: the orthonormal DCT-II basis for
``neumann`` (even reflection), the Fourier basis for ``periodic`` and the DST-I basis for
``dirichlet`` (odd reflection, i.e. zero just outside the sequence). The ghost cells of a
dilation δ > 1 follow the same reflection, so every dilation shares one eigenbasis and a sum of
scales stays diagonal. The transforms run through ``torch.fft`` in O(N log N).

``DiagonalLinear`` is Σ_s c_s ⊙ L_s (+ a constant shift) with coefficients that may be learnable
tensors; it gives the exact flow e^{Δt·A} and the spectral multipliers that the exponential and
IMEX integrators need. Nothing here knows what the axes mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .stencil import BOUNDARY_CONDITIONS, second_difference


def _move_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x if dim in (-1, x.ndim - 1) else x.movedim(dim, -1)


def _move_back(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x if dim in (-1, x.ndim - 1) else x.movedim(-1, dim)


def dct2(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DCT-II along ``dim`` (Makhoul's reordering + one complex FFT)."""
    y = _move_last(x, dim)
    n = y.shape[-1]
    v = torch.cat([y[..., ::2], y[..., 1::2].flip(-1)], dim=-1)
    spec = torch.fft.fft(v, dim=-1)
    k = torch.arange(n, device=x.device, dtype=y.dtype)
    twiddle = torch.polar(torch.ones_like(k), -math.pi * k / (2 * n))
    out = (spec * twiddle).real * math.sqrt(2.0 / n)
    out[..., 0] = out[..., 0] / math.sqrt(2.0)
    return _move_back(out, dim)


def idct2(c: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Inverse of ``dct2`` (the orthonormal DCT-III) along ``dim``."""
    y = _move_last(c, dim)
    n = y.shape[-1]
    scale = torch.full((n,), math.sqrt(n / 2.0), device=c.device, dtype=y.dtype)
    scale[0] = math.sqrt(n)
    coeff = y * scale  # unnormalized DCT-II coefficients X_k
    k = torch.arange(n, device=c.device, dtype=y.dtype)
    twiddle = torch.polar(torch.ones_like(k), math.pi * k / (2 * n))
    flipped = torch.cat([torch.zeros_like(coeff[..., :1]), coeff[..., 1:].flip(-1)], dim=-1)
    v = torch.fft.ifft(torch.complex(coeff, -flipped) * twiddle, dim=-1).real
    out = torch.empty_like(v)
    half = (n + 1) // 2
    out[..., ::2] = v[..., :half]
    out[..., 1::2] = v[..., half:].flip(-1)
    return _move_back(out, dim)


def dst1(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Orthonormal DST-I along ``dim``; it is its own inverse."""
    y = _move_last(x, dim)
    n = y.shape[-1]
    zero = torch.zeros_like(y[..., :1])
    odd = torch.cat([zero, y, zero, -y.flip(-1)], dim=-1)
    spec = torch.fft.fft(odd, dim=-1)
    out = -spec[..., 1 : n + 1].imag * math.sqrt(0.5 / (n + 1))
    return _move_back(out, dim)


class Laplacian1D:
    """Second difference along ``dim`` with spacing ``h``, dilation ``δ`` and a boundary condition."""

    def __init__(self, n: int, bc: str = "neumann", *, dim: int = -2, spacing: float = 1.0, dilation: int = 1):
        if bc not in BOUNDARY_CONDITIONS:
            raise ValueError(f"unknown boundary condition {bc!r}; choose one of {', '.join(BOUNDARY_CONDITIONS)}")
        if n < 1:
            raise ValueError(f"a grid needs at least one point, got n={n}")
        limit = n + 1 if bc == "dirichlet" else n
        if not 1 <= dilation <= limit:
            raise ValueError(f"dilation must lie in 1..{limit} for n={n} and bc={bc!r}, got {dilation}")
        if not spacing > 0:
            raise ValueError(f"grid spacing must be positive, got {spacing}")
        self.n, self.bc, self.dim, self.h, self.dilation = n, bc, dim, float(spacing), int(dilation)

    def __repr__(self) -> str:
        return f"Laplacian1D(n={self.n}, bc={self.bc!r}, dim={self.dim}, spacing={self.h}, dilation={self.dilation})"

    # -- the stencil -------------------------------------------------------------------------
    def apply(self, u: torch.Tensor) -> torch.Tensor:
        """(L u)_i = (u_{i+δ} − 2u_i + u_{i−δ}) / (δh)² along ``dim``, vectorized over every other axis.

        The stencil runs along ``dim`` in place (``solvers.stencil``): the result has the input's
        layout, contiguous when the input is.
        """
        if u.shape[self.dim] != self.n:
            raise ValueError(f"expected {self.n} points along dim {self.dim}, got shape {tuple(u.shape)}")
        return second_difference(u, self.dilation, self.bc, dim=self.dim) / (self.dilation * self.h) ** 2

    __call__ = apply

    # -- the eigen-decomposition ---------------------------------------------------------------
    def eigenvalues(
        self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """All n eigenvalues by the closed-form formula, in the order of the transform's index k."""
        k = torch.arange(self.n, dtype=dtype, device=device)
        d, n = self.dilation, self.n
        if self.bc == "neumann":
            angle = math.pi * k * d / (2 * n)
        elif self.bc == "periodic":
            angle = math.pi * k * d / n
        else:
            angle = math.pi * (k + 1) * d / (2 * (n + 1))
        return -4.0 / (d * self.h) ** 2 * torch.sin(angle) ** 2

    def spectral_eigenvalues(
        self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Eigenvalue of each coefficient ``to_spectral`` returns (rfft keeps n//2 + 1 of them)."""
        lam = self.eigenvalues(dtype=dtype, device=device)
        return lam[: self.n // 2 + 1] if self.bc == "periodic" else lam

    def to_spectral(self, u: torch.Tensor) -> torch.Tensor:
        if self.bc == "neumann":
            return dct2(u, self.dim)
        if self.bc == "periodic":
            return torch.fft.rfft(u, dim=self.dim)
        return dst1(u, self.dim)

    def from_spectral(self, c: torch.Tensor) -> torch.Tensor:
        if self.bc == "neumann":
            return idct2(c, self.dim)
        if self.bc == "periodic":
            return torch.fft.irfft(c, n=self.n, dim=self.dim)
        return dst1(c, self.dim)

    def matrix(self, *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """The dense n×n matrix of the stencil (for tests and small-system analysis, not hot paths)."""
        eye = torch.eye(self.n, dtype=dtype, device=device)
        return Laplacian1D(self.n, self.bc, dim=-1, spacing=self.h, dilation=self.dilation).apply(eye).T.contiguous()

    def same_basis(self, other: Laplacian1D) -> bool:
        return (self.n, self.bc, self.dim) == (other.n, other.bc, other.dim)


Coefficient = torch.Tensor | float


class DiagonalLinear:
    """A = Σ_s c_s ⊙ L_s + shift·I for Laplacians sharing one eigenbasis; callable as a field.

    ``coefficients`` is a sequence (one per operator) of scalars or tensors that broadcast
    against the axes after the grid axis (e.g. a per-channel vector of shape (d,) when the grid
    axis is -2), or a zero-argument callable returning such a sequence, so that learnable
    coefficients are read afresh on every use.
    """

    def __init__(
        self,
        operators: Sequence[Laplacian1D],
        coefficients: Sequence[Coefficient] | Callable[[], Sequence[Coefficient]],
        shift: float = 0.0,
    ):
        if not operators:
            raise ValueError("DiagonalLinear needs at least one operator")
        if not all(operators[0].same_basis(op) for op in operators):
            raise ValueError("all operators of a DiagonalLinear must share n, bc and dim")
        self.operators = tuple(operators)
        self._coefficients = coefficients
        self.shift = float(shift)

    @property
    def basis(self) -> Laplacian1D:
        return self.operators[0]

    def coefficients(self) -> Sequence[Coefficient]:
        coeffs = self._coefficients() if callable(self._coefficients) else self._coefficients
        if len(coeffs) != len(self.operators):
            raise ValueError(f"{len(self.operators)} operators but {len(coeffs)} coefficients")
        return coeffs

    def __call__(self, t: float | torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = None
        for op, c in zip(self.operators, self.coefficients()):
            term = c * op.apply(u)
            out = term if out is None else out + term
        return out + self.shift * u if self.shift else out

    def multiplier(self, like: torch.Tensor) -> torch.Tensor:
        """Eigenvalue of A for each spectral coefficient, shaped to broadcast against ``to_spectral(u)``."""
        dim = self.basis.dim
        trailing = (-dim - 1) if dim < 0 else like.ndim - dim - 1
        total = None
        for op, c in zip(self.operators, self.coefficients()):
            lam = op.spectral_eigenvalues(dtype=like.dtype, device=like.device)
            lam = lam.reshape(lam.shape + (1,) * trailing)
            term = lam * c
            total = term if total is None else total + term
        return total + self.shift

    def to_spectral(self, u: torch.Tensor) -> torch.Tensor:
        return self.basis.to_spectral(u)

    def from_spectral(self, c: torch.Tensor) -> torch.Tensor:
        return self.basis.from_spectral(c)

    def flow(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        """The exact solution of du/dt = A u after time ``dt``: e^{dt·A} u."""
        return self.from_spectral(torch.exp(dt * self.multiplier(u)) * self.to_spectral(u))
