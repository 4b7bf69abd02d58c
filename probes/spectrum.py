"""Spectra and step stability: the Laplacian (numeric vs closed form), the Jacobian at a state,
Runge–Kutta stability functions, and the PDE Diffusion Layer's transfer function H(ω).

An explicit step of size Δt is stable on a mode with eigenvalue λ when |R(Δt λ)| ≤ 1, R the
method's stability function; forward Euler on D·L (h = 1) has λ_max = −4D, hence Δt ≤ ½/D:
the τ ≤ ½ CFL bound of DESIGN §2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

import solvers

from .autodiff import dense_jacobian

STABILITY_TOL = 1e-12
MAX_JACOBIAN_UNKNOWNS = 4096
_RAY_SAMPLES = 2048
_BISECTIONS = 80


def laplacian_spectrum(n: int, bc: str = "neumann", spacing: float = 1.0, dilation: int = 1) -> torch.Tensor:
    """Eigenvalues of the dense matrix of ``solvers.Laplacian1D`` (float64, ascending), computed numerically."""
    matrix = solvers.Laplacian1D(n, bc, dim=-1, spacing=spacing, dilation=dilation).matrix(dtype=torch.float64)
    return torch.linalg.eigvalsh(0.5 * (matrix + matrix.T))  # symmetric for every bc; symmetrize the rounding


def laplacian_formula(n: int, bc: str = "neumann", spacing: float = 1.0, dilation: int = 1) -> torch.Tensor:
    """The closed form −4/(δh)² sin²(θ_k) (float64, ascending), θ_k per boundary condition.

    neumann θ_k = πkδ/(2n), k = 0..n−1; periodic θ_k = πkδ/n; dirichlet θ_k = π(k+1)δ/(2(n+1)).
    """
    k = torch.arange(n, dtype=torch.float64)
    if bc == "neumann":
        angle = math.pi * k * dilation / (2 * n)
    elif bc == "periodic":
        angle = math.pi * k * dilation / n
    elif bc == "dirichlet":
        angle = math.pi * (k + 1) * dilation / (2 * (n + 1))
    else:
        raise ValueError(f"unknown boundary condition {bc!r}; choose neumann, periodic or dirichlet")
    return (-4.0 / (dilation * spacing) ** 2 * torch.sin(angle) ** 2).sort().values


def jacobian_spectrum(
    system: Callable[[Any, torch.Tensor], torch.Tensor], u: torch.Tensor, t: Any = 0.0
) -> torch.Tensor:
    """Complex eigenvalues (complex128) of the full Jacobian ∂f/∂u of ``system(t, ·)`` at the state u.

    Small systems only: it forms the dense (numel × numel) matrix, and refuses above 4096
    unknowns. Sorted by decreasing real part, then decreasing imaginary part.
    """
    n = u.numel()
    if n > MAX_JACOBIAN_UNKNOWNS:
        raise ValueError(
            f"jacobian_spectrum forms a dense {n}x{n} Jacobian; at most {MAX_JACOBIAN_UNKNOWNS} unknowns "
            "(use fewer tokens/channels, or power iteration with JVPs)"
        )
    eigenvalues = torch.linalg.eigvals(dense_jacobian(system, u, t).to(torch.float64))
    by_imag = torch.sort(-eigenvalues.imag, stable=True).indices
    by_real = torch.sort(-eigenvalues.real[by_imag], stable=True).indices  # stable: ties keep the imag order
    return eigenvalues[by_imag[by_real]]


def _polynomial_coefficients(tableau: solvers.ButcherTableau) -> torch.Tensor | None:
    """c_k = bᵀ A^{k−1} 1 for k = 1..s, so that R(z) = 1 + Σ c_k z^k, when A is strictly lower-triangular."""
    a = torch.tensor(tableau.a, dtype=torch.float64)
    if bool(torch.triu(a).any()):
        return None
    b = torch.tensor(tableau.b, dtype=torch.float64)
    power = torch.ones(len(tableau.b), dtype=torch.float64)  # A^{k−1} 1
    coefficients = []
    for _ in range(len(tableau.b)):
        coefficients.append(b @ power)
        power = a @ power
    return torch.stack(coefficients)


def stability_function(tableau: solvers.ButcherTableau, z: torch.Tensor | complex | Sequence[complex]) -> torch.Tensor:
    """R(z) = 1 + z bᵀ (I − zA)⁻¹ 1 of a Runge–Kutta tableau at each z, complex128 of z's shape.

    For an explicit tableau A is nilpotent and R is the polynomial 1 + Σ_k (bᵀA^{k−1}1) z^k,
    evaluated as such (exact, any |z|); otherwise the linear solve is used.
    """
    z = torch.as_tensor(z).to(torch.complex128)
    coefficients = _polynomial_coefficients(tableau)
    if coefficients is not None:
        result = torch.zeros_like(z)
        for c in coefficients.flip(0):  # Horner on Σ c_k z^k
            result = (result + c) * z
        return 1.0 + result
    s = len(tableau.b)
    a = torch.tensor(tableau.a, dtype=torch.complex128)
    b = torch.tensor(tableau.b, dtype=torch.complex128)
    system = torch.eye(s, dtype=torch.complex128) - z.reshape(-1, 1, 1) * a
    solution = torch.linalg.solve(system, torch.ones(z.numel(), s, 1, dtype=torch.complex128))
    return (1.0 + z.reshape(-1) * (b @ solution.squeeze(-1).T)).reshape(z.shape)


def step_is_stable(tableau: solvers.ButcherTableau, dt: float, eigenvalues: torch.Tensor) -> torch.Tensor:
    """|R(Δt λ)| ≤ 1 (+1e-12) for each eigenvalue λ: bool tensor of eigenvalues' shape."""
    z = float(dt) * torch.as_tensor(eigenvalues).to(torch.complex128)
    return stability_function(tableau, z).abs() <= 1.0 + STABILITY_TOL


def max_stable_dt(
    tableau: solvers.ButcherTableau, eigenvalues: torch.Tensor, *, per_eigenvalue: bool = False
) -> float | torch.Tensor:
    """Largest Δt with |R(Δt λ)| ≤ 1 for every λ (a float), or for each λ (``per_eigenvalue``, float64).

    Along each eigenvalue's ray z = r·λ/|λ| it locates the first exit from the stability region:
    a scan of r up to where |R| > 1 for good, then bisection. Euler on λ < 0 gives 2/|λ|, rk4
    ≈ 2.785/|λ|. A zero eigenvalue allows any step (inf); a growing mode (Re λ > 0) allows ≈ 0.
    """
    lam = torch.as_tensor(eigenvalues).to(torch.complex128).reshape(-1)
    radius = lam.abs()
    direction = torch.where(radius > 0, lam / torch.where(radius > 0, radius, 1.0), 1.0)

    def unstable(r: torch.Tensor) -> torch.Tensor:
        return stability_function(tableau, r * direction.unsqueeze(-1)).abs() > 1.0 + STABILITY_TOL

    top = torch.ones(lam.numel(), dtype=torch.float64)
    for _ in range(200):  # |R| grows like |z|^s, so some radius is unstable on every ray
        beyond = unstable(top.unsqueeze(-1).to(torch.complex128)).squeeze(-1)
        if bool(beyond.all()):
            break
        top = torch.where(beyond, top, 2.0 * top)
    fractions = torch.linspace(0.0, 1.0, _RAY_SAMPLES + 1, dtype=torch.float64)[1:]
    samples = (top.unsqueeze(-1) * fractions).to(torch.complex128)
    first_bad = unstable(samples).to(torch.int64).argmax(dim=-1)  # always exists: the last sample is unstable
    hi = top * fractions[first_bad]
    lo = torch.where(first_bad > 0, top * fractions[(first_bad - 1).clamp_min(0)], 0.0)
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        bad = unstable(mid.unsqueeze(-1).to(torch.complex128)).squeeze(-1)
        hi, lo = torch.where(bad, mid, hi), torch.where(bad, lo, mid)
    dt = torch.where(radius > 0, lo / torch.where(radius > 0, radius, 1.0), math.inf)
    if per_eigenvalue:
        return dt.reshape(torch.as_tensor(eigenvalues).shape)
    return float(dt.min()) if dt.numel() else math.inf


def transfer_function(
    taus: torch.Tensor | Sequence[float],
    scales: Sequence[int] | torch.Tensor,
    weights: torch.Tensor | Sequence[float] | None,
    omega: torch.Tensor | float,
) -> torch.Tensor:
    """H(ω) = Σ_s w_s (1 − 4 τ_s sin²(ω δ_s / 2)): the multi-scale diffusion step's gain on frequency ω.

    ``taus`` is (S,) or per channel (S, d); ``scales`` the dilations δ_s (S,); ``weights`` (S,)
    (None: equal weights). Returns float64 of shape omega.shape, or (*omega.shape, d) for
    per-channel taus. Exact on the Neumann modes ω_k = πk/N; |H| ≤ 1 for every ω iff the step
    is non-expansive (τ ≤ ½ for each scale with convex weights).
    """
    tau = torch.as_tensor(taus, dtype=torch.float64).detach()
    per_channel = tau.ndim == 2
    tau = tau if per_channel else tau.reshape(-1, 1)  # (S, d)
    count = tau.shape[0]
    dilation = torch.as_tensor(scales, dtype=torch.float64).reshape(count, 1)
    if weights is None:
        weight = torch.full((count, 1), 1.0 / count, dtype=torch.float64)
    else:
        weight = torch.as_tensor(weights, dtype=torch.float64).detach().reshape(count, 1)
    omega = torch.as_tensor(omega, dtype=torch.float64).detach()
    angle = omega.unsqueeze(-1).unsqueeze(-1) * dilation / 2  # (..., S, 1)
    gain = (weight * (1.0 - 4.0 * tau * torch.sin(angle) ** 2)).sum(dim=-2)  # (..., d)
    return gain if per_channel else gain.squeeze(-1)
