"""Finite-time Lyapunov exponents: how fast nearby trajectories separate.

Two estimators of the largest exponent λ₁ over [t0, t_end]:
- ``ftle``: the tangent flow dv/dt = J(u) v integrated with u (JVPs, no Jacobian formed);
- ``ftle_two_trajectories``: a reference and a perturbed trajectory, a finite-difference check.
And the top k of the spectrum, ``lyapunov_spectrum``: k tangent vectors integrated with u and
re-orthonormalized by QR (Benettin et al. 1980); λ_i is the time-average of log |R_ii|.
Both renormalize the separation every ``renormalize_every`` time units (Benettin et al.), so it
never overflows nor leaves the linear regime, and report the running exponent
λ(t) = (1/(t − t0)) Σ log(growth) at each renormalization. Each sample of the batch has its own
separation; results are batch-means, and "per_sample" holds the final exponent of each sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

import solvers

from .autodiff import jvp

Field = Callable[[Any, torch.Tensor], torch.Tensor]


def _segment_ends(t0: float, t_end: float, every: float) -> list[float]:
    if not math.isfinite(every) or every <= 0:
        raise ValueError(f"renormalize_every must be a positive time, got {every!r}")
    if not t_end > t0:
        raise ValueError(f"t_end={t_end} must exceed t0={t0}")
    count = max(1, math.ceil((t_end - t0) / every - 1e-9))
    return [t0 + k * every for k in range(1, count)] + [t_end]


def _per_sample_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def _as_sample_scale(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.ndim - 1)))


def _random_direction(u0: torch.Tensor, seed: int, direction: torch.Tensor | None = None) -> torch.Tensor:
    """A unit vector per sample: ``direction`` normalized, or a seeded random one."""
    if direction is None:
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(u0.shape, generator=generator, dtype=torch.float64).to(device=u0.device, dtype=u0.dtype)
    else:
        if direction.shape != u0.shape:
            raise ValueError(
                f"direction of shape {tuple(direction.shape)} does not match u0 of shape {tuple(u0.shape)}"
            )
        v = direction.detach().to(device=u0.device, dtype=u0.dtype)
        if not bool((_per_sample_norm(v) > 0).all()):
            raise ValueError("direction must be non-zero for every sample")
    return v / _as_sample_scale(_per_sample_norm(v), v)


def _tangent_projection(project: Callable[[torch.Tensor], torch.Tensor] | None):
    """The projection of a stacked (u, v₁, …, v_k): u ↦ P(u) and each v ↦ DP(u)·v; None without one."""
    if project is None:
        return None

    def project_stack(stack: torch.Tensor) -> torch.Tensor:
        outs = [jvp(lambda _t, x: project(x), None, stack[0], v) for v in stack[1:]]
        return torch.stack([outs[0][0]] + [tangent for _, tangent in outs])

    return project_stack


def _renormalized_run(
    pair_field: Field,
    pair: torch.Tensor,
    t0: float,
    t_end: float,
    *,
    every: float,
    dt: float,
    method: str,
    renormalize: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    fill_shape: tuple[int, ...] = (),
) -> dict[str, Any]:
    """Integrates the stacked (u, v₁, …) over [t0, t_end] in segments of ``every`` time units.

    ``renormalize`` returns (new stack, log growth (B, ...)) at each segment's end; ``project``
    (of u, e.g. a post-LN model's projection) acts on u after every step and on each v by its
    derivative. ``fill_shape``: the shape of one sample's log growth, for the nan rows of a run
    that stopped before its first renormalization.
    """
    t0 = float(t0)
    ends = _segment_ends(t0, float(t_end), float(every))
    project = _tangent_projection(project)
    batch = pair.shape[1]
    log_growth: torch.Tensor | float = 0.0
    running = []
    start = t0
    for end in ends:
        with torch.no_grad():  # a measurement: no reverse graph through the system's parameters
            sol = solvers.solve(pair_field, pair, (start, end), method=method, dt=dt, blowup=None, project=project)
        pair = sol.u[-1].detach()
        if not sol.ok or not bool(torch.isfinite(pair).all()):
            break
        pair, growth = renormalize(pair)
        log_growth = log_growth + growth
        running.append(log_growth / (end - t0))
        start = end
    # A run that stopped early (non-finite state) leaves nan for the rest: an explosion is a finding.
    shape = running[0].shape if running else (batch, *fill_shape)
    while len(running) < len(ends):
        running.append(torch.full(shape, math.nan, dtype=torch.float64, device=pair.device))
    exponents = torch.stack(running)  # (K, B) or (K, B, k)
    return {"t": torch.tensor(ends, dtype=torch.float64), "exponents": exponents}


def ftle(
    system: Field,
    u0: torch.Tensor,
    t_end: float,
    *,
    dt: float,
    method: str = "rk4",
    renormalize_every: float = 1.0,
    seed: int = 0,
    t0: float = 0.0,
    direction: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Largest finite-time Lyapunov exponent of du/dt = system(t, u) from u0 over [t0, t_end].

    Integrates (u, v) with dv/dt = ∂f/∂u(t, u)·v (``probes.jvp``, forward-mode dual tensors) by ``solvers.solve`` with
    ``method`` and step ``dt``, from ``direction`` (normalized per sample) or a seeded random unit
    v per sample. ``project`` (e.g. a post-LN model's ``projection``) is applied after every step to
    u, and its derivative DP(u) to v: the exponent of the projected integrator. Returns "t" (K,)
    the renormalization times, "ftle" (K,) the running exponent (batch-mean), "final" (float) its
    last value and "per_sample" (B,). Cost: one JVP per stage, about twice a plain run.
    """
    u0 = u0.detach()

    def pair_field(t: Any, pair: torch.Tensor) -> torch.Tensor:
        return torch.stack(jvp(system, t, pair[0], pair[1]))

    def renormalize(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        growth = _per_sample_norm(pair[1])
        tangent = pair[1] / _as_sample_scale(growth, pair[1])
        return torch.stack([pair[0], tangent]), growth.to(torch.float64).log()

    pair = torch.stack([u0, _random_direction(u0, seed, direction)])
    run = _renormalized_run(
        pair_field, pair, t0, t_end, every=renormalize_every, dt=dt, method=method, renormalize=renormalize,
        project=project,
    )
    return _largest(run)


def _largest(run: dict[str, Any]) -> dict[str, Any]:
    exponents = run["exponents"]  # (K, B)
    return {
        "t": run["t"],
        "ftle": exponents.mean(dim=1),
        "final": float(exponents[-1].mean()),
        "per_sample": exponents[-1],
    }


def lyapunov_spectrum(
    system: Field,
    u0: torch.Tensor,
    t_end: float,
    *,
    k: int,
    dt: float,
    method: str = "rk4",
    renormalize_every: float = 1.0,
    seed: int = 0,
    t0: float = 0.0,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    independent_samples: bool = False,
) -> dict[str, Any]:
    """The top ``k`` finite-time Lyapunov exponents of du/dt = system(t, u) from u0 over [t0, t_end].

    Integrates u with k tangent vectors dv_i/dt = J(u)·v_i (one JVP each per stage) from a seeded
    random orthonormal frame per sample, and every ``renormalize_every`` time units replaces the
    frame V (n × k, n = N·d) by Q of V = QR, adding log |R_ii| to exponent i (Benettin). The
    exponents come out in decreasing order; their sum is the growth rate of k-volumes, the
    time-average of the trace of J restricted to the frame (for k = n, of tr J itself).
    ``project`` as in ``ftle``. ``independent_samples``: the system maps each sample (the first
    axis) independently of the others, as ``pdesim.MasterPDE`` does without a padding mask; the k
    tangent vectors then ride as k copies of the state through one JVP per stage instead of k.
    Returns "t" (K,), "exponents" (K, k) running batch-means, "final" (k,) the last row and
    "per_sample" (B, k).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    u0 = u0.detach()
    batch, size = u0.shape[0], u0[0].numel()
    if k > size:
        raise ValueError(f"k={k} exceeds the state dimension {size} of each sample")

    def stack_field(t: Any, stack: torch.Tensor) -> torch.Tensor:
        if independent_samples:
            u, tangents = stack[0], stack[1:]
            copies = u.repeat(k, *([1] * (u.ndim - 1)))  # (k·B, ...): copy i of sample b at i·B + b, as tangents
            out, pushed = jvp(system, t, copies, tangents.reshape(k * batch, *u.shape[1:]))
            return torch.cat([out[:batch].unsqueeze(0), pushed.reshape(k, *u.shape)])
        outs = [jvp(system, t, stack[0], v) for v in stack[1:]]
        return torch.stack([outs[0][0]] + [tangent for _, tangent in outs])

    def orthonormalize(stack: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame = stack[1:].reshape(k, batch, size).permute(1, 2, 0)  # (B, n, k)
        q, r = torch.linalg.qr(frame.to(torch.float64))
        growth = r.diagonal(dim1=-2, dim2=-1).abs().log()  # (B, k)
        tangents = q.permute(2, 0, 1).reshape(k, *u0.shape).to(stack.dtype)
        return torch.cat([stack[:1], tangents]), growth

    generator = torch.Generator().manual_seed(seed)
    frame = torch.randn(batch, size, k, generator=generator, dtype=torch.float64)
    frame = torch.linalg.qr(frame)[0].permute(2, 0, 1).reshape(k, *u0.shape).to(device=u0.device, dtype=u0.dtype)
    stack = torch.cat([u0.unsqueeze(0), frame])
    run = _renormalized_run(
        stack_field, stack, t0, t_end, every=renormalize_every, dt=dt, method=method, renormalize=orthonormalize,
        project=project, fill_shape=(k,),
    )
    exponents = run["exponents"]  # (K, B, k)
    return {
        "t": run["t"],
        "exponents": exponents.mean(dim=1),
        "final": exponents[-1].mean(dim=0),
        "per_sample": exponents[-1],
    }


def ftle_two_trajectories(
    system: Field,
    u0: torch.Tensor,
    t_end: float,
    *,
    dt: float,
    eps: float = 1e-6,
    method: str = "rk4",
    renormalize_every: float = 1.0,
    seed: int = 0,
    t0: float = 0.0,
) -> dict[str, Any]:
    """The exponent of ``ftle`` from a reference and a perturbed trajectory (finite differences).

    The perturbation has size eps·‖u_b‖ per sample (eps if u_b = 0), measured against the
    current state at each renormalization, so it stays far above rounding when u grows or
    shrinks. Same results as ``ftle``; agreement between the two checks the JVP path.
    """
    u0 = u0.detach()

    def size_of(u: torch.Tensor) -> torch.Tensor:
        norm = _per_sample_norm(u)
        return eps * torch.where(norm > 0, norm, 1.0)

    def pair_field(t: Any, pair: torch.Tensor) -> torch.Tensor:
        return torch.stack([system(t, pair[0]), system(t, pair[1])])

    # The separation each segment starts from, as stored (after rounding), not as intended.
    start_distance = []

    def renormalize(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reference, separation = pair[0], pair[1] - pair[0]
        distance = _per_sample_norm(separation)
        growth = distance / start_distance[-1]
        perturbed = reference + separation * _as_sample_scale(size_of(reference) / distance, separation)
        start_distance.append(_per_sample_norm(perturbed - reference))
        return torch.stack([reference, perturbed]), growth.to(torch.float64).log()

    perturbed = u0 + _random_direction(u0, seed) * _as_sample_scale(size_of(u0), u0)
    start_distance.append(_per_sample_norm(perturbed - u0))
    pair = torch.stack([u0, perturbed])
    run = _renormalized_run(
        pair_field, pair, t0, t_end, every=renormalize_every, dt=dt, method=method, renormalize=renormalize
    )
    return _largest(run)
