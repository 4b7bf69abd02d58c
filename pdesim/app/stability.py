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

from ..config import PDEConfig
from ..model import MasterPDE
from .arms import Arm, describe, matching_model
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


def _configuration_lines(cfg: PDEConfig) -> tuple[list[str], float, float]:
    """(lines on the diffusion spectrum and the Jacobian at u(0), diffusion radius, Jacobian radius)."""
    lines = []
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
    if diffusion_radius > 0:
        tau_star = 2.0 / diffusion_radius  # in units of Δt: Euler on diffusion alone is stable for Δt ≤ this
        lines.append(
            f"  explicit Euler on the diffusion needs dt ≤ {tau_star:.4g} "
            f"(τ* = {tau_star * float(table.max()) / cfg.spacing**2:.4g}; τ ≤ 1/2 holds for every N)"
        )
    else:
        lines.append("  diffusion: off")
    model = matching_model(cfg)
    with torch.enable_grad():
        radius = jacobian_spectral_radius(model, model.initial_state(batch=1))
    lines.append(f"  Jacobian spectral radius at u(0) (power iteration): {radius:.4g}")
    return lines, diffusion_radius, radius


def _step_check(cfg: PDEConfig, solver: str, dt: float, diffusion_radius: float, radius: float) -> tuple[str, str]:
    """(the step's diffusion number and stability verdict, the solver recommended for this configuration)."""
    parts = []
    if diffusion_radius > 0:
        tau = dt * max(max(row) for row in cfg.diffusion_table()) / cfg.spacing**2
        parts.append(f"diffusion number τ = D·dt/h² = {tau:.4g}")
    if solver not in solvers.TABLEAUS:
        return "; ".join(parts + ["diffusion treated exactly or by splitting"]), f"{solver} at dt={dt:g}"
    bound = _real_axis_bound(solver)
    product = dt * max(radius, diffusion_radius)
    verdict = "inside" if product <= bound else "OUTSIDE"
    parts.append(f"dt·ρ = {product:.4g} vs {solver}'s real-axis stability bound {bound:.4g}: {verdict}")
    if product <= bound:
        recommend = f"{solver} at dt={dt:g}"
    else:
        recommend = "etd-rk2 (diffusion exact)" if diffusion_radius * dt > bound else "a smaller dt, or dopri5"
    return "; ".join(parts), recommend


def stability_report(spec: RunSpec, arms: list[Arm]) -> str:
    """The report of each configuration the arms integrate, then each arm's solver and step checked against it."""
    cfg = spec.pde
    lines = [f"stability report: N={cfg.tokens} d={cfg.dim} bc={cfg.bc} h={cfg.spacing}"]
    configurations: list[PDEConfig] = []  # the distinct ones, in the arms' order (a config is unhashable)
    for arm in arms:
        if arm.cfg not in configurations:
            configurations.append(arm.cfg)
    radii = []
    for configuration in configurations:
        if len(configurations) > 1:
            lines.append(f"configuration {describe(configuration)}:")
        config_lines, diffusion_radius, radius = _configuration_lines(configuration)
        lines.extend(config_lines)
        radii.append((diffusion_radius, radius))
    recommendations = []
    for arm in arms:
        if arm.solver not in solvers.FIXED_METHODS:
            lines.append(f"  arm {arm.label}: {arm.solver} is adaptive: its controller picks stable steps")
            continue
        check, recommend = _step_check(arm.cfg, arm.solver, arm.dt, *radii[configurations.index(arm.cfg)])
        lines.append(f"  arm {arm.label}: {arm.solver} at dt={arm.dt:g}: {check}")
        recommendations.append(recommend)
    if recommendations and len(set(recommendations)) == 1:
        lines.append(f"  recommended solver: {recommendations[0]}")
    elif recommendations:
        lines.append("  recommended solver per arm: " + ", ".join(
            f"{arm.label}: {r}" for arm, r in zip([a for a in arms if a.solver in solvers.FIXED_METHODS],
                                                  recommendations)))
    return "\n".join(lines)
