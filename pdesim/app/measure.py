"""Measuring a trajectory: every per-time metric of a run, the growth of the token norm, and the
finite-time Lyapunov exponents of the PDE's flow and of the Transformer's layer map.

A trajectory is the PDE's saved states or the Transformer's layer states, (T, B, N, d) at times
(T,). States past a blow-up are non-finite; their metrics are nan, never an error.

Lyapunov exponents use the tangent (JVP) estimator: for the PDE ``probes.ftle`` (largest) and
``probes.lyapunov_spectrum`` (top ``SPECTRUM_K``) integrate dv/dt = J(u)·v; for the Transformer
the same tangent vectors go through each block's JVP, v_{l+1} = DΦ_l(u_l)·v_l, and are
renormalized (QR for the spectrum) after every layer. Both start from the same seeded direction
and report exponents per unit depth t, so the two arms read on one axis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import probes

from ..model import MasterPDE

# The per-time metrics, in the column order of metrics.csv.
METRIC_COLUMNS = (
    "mean_token_norm",
    "max_abs",
    "relative_distance",
    "mean_cosine",
    "cka",
    "residual",
    "effective_rank",
    "mean_pairwise_cosine",
    "clusters",
    "energy",
    "norm_energy",
    "lyapunov",
)
# The metrics ``measure`` computes from the states; "lyapunov" comes from ``Lyapunov.at``.
STATE_METRICS = METRIC_COLUMNS[:-1]

# Cheap settings of the Lyapunov estimators (a run's cost sets them; every solve call and JVP costs
# far more than a plain step): the largest exponent is renormalized at every m-th saved time, so
# at most LYAPUNOV_POINTS times, with one midpoint step of the tangent flow between them (on the
# default run within 1e-4 of rk4 at dt = 0.05; on the exploding arm of the explosion preset about
# 10% above it, as the coarse step also moves the blowing-up trajectory); the spectrum's top
# SPECTRUM_K exponents of one sample take SPECTRUM_STEPS midpoint steps over the run. Either step is
# kept within the midpoint rule's real-axis stability limit 2/ρ of the linear part's spectral radius ρ
# (diffusion, plus the decay that replaces the residual), with margin: a step past it makes the
# tangent flow's numerical growth, not the PDE's, the exponent (no-residual at dt = 2 read +0.95).
# The bound ignores the attention/FFN Jacobian, which grows as a no-residual state shrinks (LayerNorm's
# 1/|u|): at the default size the spectrum is within 0.02 of rk4 at dt = 0.05, but on a tiny
# no-residual system (N = 16, d = 8) the top exponent reads 0.19 against 0.002.
LYAPUNOV_METHOD = "midpoint"
LYAPUNOV_POINTS = 16
SPECTRUM_K = 4
SPECTRUM_STEPS = 16
SPECTRUM_RENORMALIZATIONS = 2
DIRECTION_SEED = 0
# Where the linear bound misses a stiffer nonlinear part, the steps are halved this often at most.
STEP_HALVINGS = 3


def measure(model: MasterPDE, t: torch.Tensor, u: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every per-time metric of a trajectory u (T, B, N, d) at times t (T,), as float64 (T,) tensors."""
    u = u.detach()
    finite = torch.isfinite(u.flatten(1)).all(dim=1)
    safe = torch.where(finite.view(-1, 1, 1, 1), u, torch.zeros_like(u))
    out: dict[str, torch.Tensor] = {}
    out.update(probes.norms(u))
    out.update(probes.drift(safe))
    out.update(probes.rank_collapse(safe))
    out["clusters"] = probes.cluster_count(safe).to(torch.float64)
    with torch.no_grad():
        energy = probes.energy(model, safe)
    out["energy"], out["norm_energy"] = energy["energy"], energy["norm_energy"]
    nan = torch.tensor(math.nan, dtype=torch.float64)
    return {k: torch.where(finite, v.to(torch.float64), nan) for k, v in out.items() if k in STATE_METRICS}


def growth(t: torch.Tensor, norms: torch.Tensor) -> tuple[float, float]:
    """(final / initial mean token norm, exponential growth rate over the finite part)."""
    finite = torch.isfinite(norms)
    if finite.sum() < 2:
        return math.nan, math.nan
    values, times = norms[finite], t[finite]
    return float(values[-1] / values[0]), probes.growth_rate(times, values)


@dataclass
class Lyapunov:
    """Finite-time Lyapunov exponents of one source (the PDE's flow or the Transformer's layer map).

    ``t`` (K,) the renormalization times and ``largest`` (K,) the running largest exponent there
    (batch mean, per unit time); ``spectrum`` (k,) the top exponents at the end (sample 0); ``how``
    says how they were estimated, or why there is no number (then the tensors are nan).
    """

    t: torch.Tensor
    largest: torch.Tensor
    spectrum: torch.Tensor
    how: str

    def at(self, times: torch.Tensor) -> torch.Tensor:
        """The running largest exponent at each of ``times`` that is a renormalization time; nan elsewhere."""
        times = times.to(torch.float64)
        out = torch.full(times.shape, math.nan, dtype=torch.float64)
        if len(self.t):
            distance = (times.view(-1, 1) - self.t.view(1, -1)).abs()
            nearest = distance.min(dim=1)
            hit = nearest.values <= 1e-9 * max(1.0, float(self.t.abs().max()))
            out[hit] = self.largest[nearest.indices[hit]]
        return out

    def summary(self) -> dict[str, object]:
        """What summary.json states: the final largest exponent, the spectrum and how they were measured."""
        finite = self.largest[torch.isfinite(self.largest)]
        return {
            "lyapunov": float(finite[-1]) if len(finite) else math.nan,
            "lyapunov_spectrum": [float(x) for x in self.spectrum],
            "lyapunov_method": self.how,
        }


def unmeasured(why: str) -> Lyapunov:
    """No exponents, and the reason."""
    nan = torch.full((SPECTRUM_K,), math.nan, dtype=torch.float64)
    return Lyapunov(torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64), nan, why)


def tangent_direction(u0: torch.Tensor) -> torch.Tensor:
    """The seeded unit direction (per sample) both arms' largest exponent starts from."""
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    v = torch.randn(u0.shape, generator=generator, dtype=torch.float64).to(device=u0.device, dtype=u0.dtype)
    return v / v.flatten(1).norm(dim=1).view(-1, *([1] * (u0.ndim - 1)))


def _stable_step(step: float, radius: float) -> float:
    """``step``, shortened to stay well inside the midpoint rule's real-axis limit 2/ρ."""
    return step if radius <= 0 else min(step, 1.0 / radius)


def linear_radius(model: MasterPDE) -> float:
    """A bound on the spectral radius of the model's linear part: its diffusion operator (closed form
    4·D_max/(δh)² per dilation δ) plus the decay rate κ_r that replaces the residual when it is off."""
    cfg = model.cfg
    decay = 0.0 if cfg.residual else cfg.decay
    if not cfg.has_diffusion:
        return decay
    table = cfg.diffusion_table()
    return decay + sum(4.0 * max(row) / (scale * cfg.spacing) ** 2 for scale, row in zip(cfg.diffusion_scales, table))


def flow_lyapunov(
    model: MasterPDE,
    u0: torch.Tensor,
    saved_times: torch.Tensor,
    *,
    projected: tuple[str, float] | None = None,
) -> Lyapunov:
    """The PDE flow's exponents from u0 over the saved times (the finite part of a run).

    ``projected``: (method, dt) of a projected integrator (post-LN), whose exponent is that of the
    integrator at its own step; otherwise the tangent flow is taken with the midpoint rule.
    """
    times = saved_times.to(torch.float64)
    horizon = float(times[-1] - times[0])
    if horizon <= 0:
        return unmeasured("no exponent: the run stopped before its first saved time")
    stride = max(1, math.ceil((len(times) - 1) / LYAPUNOV_POINTS))
    every = float(times[stride] - times[0]) if len(times) > stride else horizon
    radius = linear_radius(model)
    if projected is not None:
        method, step = projected
        spectrum_step, how = step, f"tangent of the projected {method} integrator at dt={step:g}"
    else:
        method, step = LYAPUNOV_METHOD, _stable_step(every, radius)
        spectrum_step = _stable_step(horizon / SPECTRUM_STEPS, radius)
        how = f"tangent flow by {method} at dt={step:.3g} (spectrum dt={spectrum_step:.3g})"
    project = model.projection
    for _ in range(STEP_HALVINGS + 1):
        largest = probes.ftle(
            model, u0, float(times[-1]), dt=step, method=method, renormalize_every=every, t0=float(times[0]),
            direction=tangent_direction(u0), project=project,
        )
        spectrum = probes.lyapunov_spectrum(
            model, u0[:1], float(times[-1]), k=min(SPECTRUM_K, u0[0].numel()), dt=spectrum_step, method=method,
            renormalize_every=horizon / SPECTRUM_RENORMALIZATIONS, t0=float(times[0]), seed=DIRECTION_SEED,
            project=project, independent_samples=model.padding_mask is None,
        )
        finite = bool(torch.isfinite(largest["ftle"]).all()) and bool(torch.isfinite(spectrum["final"]).all())
        if finite or projected is not None:
            break
        # The run's trajectory is finite here, so a non-finite tangent flow is the cheap step's instability.
        step, spectrum_step = step / 2, spectrum_step / 2
        how = f"tangent flow by {method} at dt={step:.3g} (spectrum dt={spectrum_step:.3g}; halved until finite)"
    return Lyapunov(largest["t"], largest["ftle"], spectrum["final"].to(torch.float64), how)


def map_lyapunov(
    layers: list[Callable[[torch.Tensor], torch.Tensor]], u0: torch.Tensor, h: float, *, stop: float
) -> Lyapunov:
    """The exponents of the layer map u_{l+1} = Φ_l(u_l) (per unit depth, layer l at t = l·h).

    The largest exponent's vector (per sample) and SPECTRUM_K orthonormal vectors of sample 0 ride
    as extra batch entries through one JVP per layer; the layers stop at the first non-finite state
    or one whose max |u| exceeds ``stop`` (the run's blow-up threshold).
    """
    k = min(SPECTRUM_K, u0[0].numel())
    batch = u0.shape[0]
    generator = torch.Generator().manual_seed(DIRECTION_SEED)
    frame = torch.linalg.qr(torch.randn(u0[0].numel(), k, generator=generator, dtype=torch.float64))[0]
    frame = frame.T.reshape(k, *u0.shape[1:]).to(device=u0.device, dtype=u0.dtype)
    tangents = torch.cat([tangent_direction(u0), frame])
    u = u0.detach()
    log_largest = torch.zeros(batch, dtype=torch.float64)
    log_spectrum = torch.zeros(k, dtype=torch.float64)
    times, running = [], []
    for index, layer in enumerate(layers, start=1):
        stacked = torch.cat([u, u[:1].expand(k, *u.shape[1:])])
        out, pushed = probes.jvp(lambda _t, x, layer=layer: layer(x), 0.0, stacked, tangents)
        u = out[:batch]
        if not (bool(torch.isfinite(u).all()) and bool(torch.isfinite(pushed).all())) or float(u.abs().max()) > stop:
            break
        growth = pushed[:batch].flatten(1).norm(dim=1)
        log_largest += growth.to(torch.float64).log()
        q, r = torch.linalg.qr(pushed[batch:].flatten(1).T.to(torch.float64))
        log_spectrum += r.diagonal().abs().log()
        tangents = torch.cat(
            [pushed[:batch] / growth.view(-1, *([1] * (u.ndim - 1))), q.T.reshape(k, *u.shape[1:]).to(u.dtype)]
        )
        times.append(index * h)
        running.append(float(log_largest.mean()) / (index * h))
    if not times:
        return unmeasured("no exponent: the first layer already left the finite range")
    spectrum = log_spectrum / times[-1]
    how = f"tangent of the layer map, one JVP per layer (h={h:g}), {len(times)} of {len(layers)} layers"
    return Lyapunov(torch.tensor(times, dtype=torch.float64), torch.tensor(running, dtype=torch.float64), spectrum, how)
