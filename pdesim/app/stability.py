"""``pdesim info``: the stability report of a configuration before running it.

It states the discrete Laplacian's spectrum (closed form, DESIGN §2), the diffusion number
τ = D·Δt/h² of the chosen step against the exact explicit-Euler limit τ*, an estimate of the
Jacobian's spectral radius at the initial state (power iteration with Jacobian-vector
products, so no Jacobian is formed), and the solver it recommends.
"""

from __future__ import annotations

import math

import torch

import probes
import solvers
from solvers import Laplacian1D

from ..model import MasterPDE
from .arms import matching_model
from .spec import RunSpec


def jacobian_spectral_radius(model: MasterPDE, u: torch.Tensor, *, iterations: int = 30, seed: int = 0) -> float:
    """|λ|_max of ∂f/∂u at u by power iteration on Jacobian-vector products."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(u.shape, generator=generator, dtype=torch.float64).to(device=u.device, dtype=u.dtype)
    v = v / v.norm()
    radius = 0.0
    for _ in range(iterations):
        _, w = probes.jvp(model, 0.0, u, v)  # forward mode through a math-backend attention
        radius = float(w.norm())
        if radius == 0.0 or not math.isfinite(radius):
            break
        v = w / radius
    return radius


def _real_axis_bound(method: str) -> float:
    """The largest Δt·|λ| for λ < 0 inside an explicit method's stability region."""
    return float(probes.max_stable_dt(solvers.TABLEAUS[method], torch.tensor([-1.0 + 0j])))


def stability_report(spec: RunSpec) -> str:
    cfg = spec.pde
    model = matching_model(cfg)
    lines = [
        f"stability report: N={cfg.tokens} d={cfg.dim} bc={cfg.bc} h={cfg.spacing} solver={spec.solver} dt={spec.dt}"
    ]
    table = torch.tensor(cfg.diffusion_table(), dtype=torch.float64)
    diffusion_radius = 0.0
    for scale, coefficients in zip(cfg.diffusion_scales, table):
        eig = Laplacian1D(cfg.tokens, cfg.bc, spacing=cfg.spacing, dilation=scale).eigenvalues()
        d_max = float(coefficients.max())
        diffusion_radius += d_max * float(eig.abs().max())
        lines.append(
            f"  Laplacian (dilation {scale}): eigenvalues in [{float(eig.min()):.6g}, {float(eig.max()) + 0.0:.6g}]"
            f" (closed form -4/(δh)² sin²(·)); max D = {d_max:g}"
        )
    fixed = spec.solver in solvers.FIXED_METHODS
    if diffusion_radius > 0:
        tau_star = 2.0 / diffusion_radius  # in units of Δt: Euler on diffusion alone is stable for Δt ≤ this
        if fixed:
            tau = spec.dt * float(table.max()) / cfg.spacing**2
            lines.append(
                f"  diffusion number τ = D·dt/h² = {tau:.4g}; explicit Euler needs dt ≤ {tau_star:.4g} "
                f"(τ* = {tau_star * float(table.max()) / cfg.spacing**2:.4g}; τ ≤ 1/2 holds for every N)"
            )
    else:
        lines.append("  diffusion: off")
    with torch.enable_grad():
        radius = jacobian_spectral_radius(model, model.initial_state(batch=1))
    lines.append(f"  Jacobian spectral radius at u(0) (power iteration): {radius:.4g}")
    if not fixed:
        lines.append(f"  {spec.solver} is adaptive: its controller picks stable steps; recommended for accuracy runs")
        return "\n".join(lines)
    recommend = "rk4"
    if spec.solver in solvers.TABLEAUS:
        bound = _real_axis_bound(spec.solver)
        product = spec.dt * max(radius, diffusion_radius)
        verdict = "inside" if product <= bound else "OUTSIDE"
        lines.append(f"  dt·ρ = {product:.4g} vs {spec.solver}'s real-axis stability bound {bound:.4g}: {verdict}")
        if product > bound:
            recommend = "etd-rk2 (diffusion exact)" if diffusion_radius * spec.dt > bound else "a smaller dt, or dopri5"
        else:
            recommend = f"{spec.solver} at dt={spec.dt:g}"
    else:
        recommend = f"{spec.solver} (diffusion treated exactly or by splitting)"
    lines.append(f"  recommended solver: {recommend}")
    return "\n".join(lines)
