"""``solve``: one entry point for every integrator, returning a ``Solution`` with a status.

The method name picks the family: explicit Runge–Kutta on a fixed grid, operator splitting
(lie, strang), IMEX / exponential (stiff linear part treated exactly), adaptive (torchdiffeq)
or scipy's ``solve_ivp`` as a float64 CPU reference. Arguments are checked up front and a bad
one is a ``SolverInputError`` with one line; everything that happens during the run (blow-up,
non-finite state, step budget, Ctrl-C, a terminal event) is a status on the returned Solution.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .callbacks import Callback, as_callbacks
from .events import Event
from .fields import as_semilinear_field, as_split_field
from .fixed import integrate_fixed
from .solution import Solution, SolverInputError
from .steppers import ExplicitRK, Semilinear, Splitting
from .tableau import TABLEAUS

SPLITTING_METHODS = ("lie", "strang")
SEMILINEAR_METHODS = tuple(Semilinear.ORDERS)
TORCHDIFFEQ_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8", "fehlberg2")
SCIPY_METHODS = tuple(f"scipy-{m}" for m in ("RK45", "RK23", "DOP853", "BDF", "Radau", "LSODA"))
FIXED_METHODS = tuple(TABLEAUS) + SPLITTING_METHODS + SEMILINEAR_METHODS
METHODS = FIXED_METHODS + TORCHDIFFEQ_METHODS + SCIPY_METHODS

DEFAULT_RTOL, DEFAULT_ATOL = 1e-6, 1e-8


class _CountCalls:
    """Wraps a field and counts its evaluations (a Python int: no device sync)."""

    def __init__(self, f: Any):
        self.f = f
        self.calls = 0

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.f(t, u)


class _SavedTimesOnly(Callback):
    """Forwards only the save points the user asked for (the grid may add t0 and t1)."""

    def __init__(self, inner: Callback, keep: set[float]):
        self.inner, self.keep = inner, keep

    def on_start(self, t0: float, t1: float, u0: torch.Tensor) -> None:
        self.inner.on_start(t0, t1, u0)

    def on_save(self, t: float, u: torch.Tensor) -> None:
        if t in self.keep:
            self.inner.on_save(t, u)

    def on_finish(self, solution: Any) -> None:
        self.inner.on_finish(solution)


def _check_finite(name: str, value: float | None, *, positive: bool = False) -> None:
    if value is None:
        return
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SolverInputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or (positive and value <= 0):
        raise SolverInputError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")


def _save_grid(t_span: Sequence[float], t_eval: Any) -> tuple[list[float], list[float]]:
    """(grid the integrator visits, the subset of it the user wants saved)."""
    if len(t_span) != 2:
        raise SolverInputError(f"t_span must be (t0, t1), got {t_span!r}")
    t0, t1 = float(t_span[0]), float(t_span[1])
    _check_finite("t_span[0]", t0)
    _check_finite("t_span[1]", t1)
    if t0 == t1:
        raise SolverInputError(f"t_span must have t1 != t0, got ({t0:g}, {t1:g})")
    if t_eval is None:
        return [t0, t1], [t0, t1]
    wanted = [float(x) for x in (t_eval.tolist() if isinstance(t_eval, torch.Tensor) else t_eval)]
    if not wanted:
        raise SolverInputError("t_eval is empty")
    sign = 1.0 if t1 > t0 else -1.0
    if any(not math.isfinite(x) for x in wanted):
        raise SolverInputError("t_eval contains a non-finite time")
    if any(sign * (b - a) <= 0 for a, b in zip(wanted[:-1], wanted[1:])):
        raise SolverInputError("t_eval must be strictly monotone in the direction of t_span")
    if sign * (wanted[0] - t0) < 0 or sign * (wanted[-1] - t1) > 0:
        raise SolverInputError(f"t_eval must lie within t_span=({t0:g}, {t1:g})")
    grid = ([t0] if wanted[0] != t0 else []) + wanted + ([t1] if wanted[-1] != t1 else [])
    return grid, wanted


def solve(
    f: Callable[[Any, torch.Tensor], torch.Tensor],
    u0: torch.Tensor,
    t_span: Sequence[float],
    *,
    method: str = "rk4",
    dt: float | None = None,
    t_eval: Sequence[float] | torch.Tensor | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    events: Iterable[Event] = (),
    callbacks: Iterable[Callable | Callback] | Callback | None = (),
    adjoint: bool = False,
    max_steps: int = 1_000_000,
    blowup: float | None = 1e6,
    sub_method: str = "rk4",
) -> Solution:
    """Integrates du/dt = f(t, u) from t_span[0] to t_span[1] and saves the state at ``t_eval``.

    ``f`` is any callable ``f(t, u)``. Fixed-step methods (euler, midpoint, heun, ralston,
    ssprk3, rk4, lie, strang, imex-euler, etd1, etd-rk2) need ``dt`` and hit every ``t_eval``
    point exactly; adaptive methods use ``rtol``/``atol`` (``dt`` is then the first step).
    ``project(u)`` is applied after every fixed step (a projected integrator, e.g. post-LN).
    ``blowup``: stop with status "blowup" once max |u| exceeds it (None disables the guard).
    ``adjoint``: torchdiffeq's continuous adjoint for adaptive methods; on a fixed grid, each save
    interval is recomputed in the backward pass (exact discrete gradient, memory O(save points)).
    ``sub_method``: the explicit method for parts of a split field that have no exact flow.
    """
    if method not in METHODS:
        raise SolverInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(u0, torch.Tensor):
        raise SolverInputError(f"u0 must be a torch.Tensor, got {type(u0).__name__}")
    if not u0.is_floating_point():
        raise SolverInputError(f"u0 must be a floating-point tensor, got dtype {u0.dtype}")
    if sub_method not in TABLEAUS:
        raise SolverInputError(f"unknown sub_method {sub_method!r}; choose one of {', '.join(TABLEAUS)}")
    for name, value in (("dt", dt), ("rtol", rtol), ("atol", atol)):
        _check_finite(name, value, positive=True)
    _check_finite("blowup", blowup, positive=True)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise SolverInputError(f"max_steps must be a positive integer, got {max_steps!r}")
    grid, wanted = _save_grid(t_span, t_eval)
    events = list(events)
    cbs = as_callbacks(callbacks)
    if len(wanted) != len(grid):
        cbs = [_SavedTimesOnly(cb, set(wanted)) for cb in cbs]

    fixed = method in FIXED_METHODS
    if fixed:
        if dt is None:
            raise SolverInputError(f"method {method!r} is fixed-step: pass dt")
        if rtol is not None or atol is not None:
            raise SolverInputError(f"rtol/atol apply to adaptive methods; {method!r} is fixed-step (use dt)")
    elif project is not None:
        raise SolverInputError(f"project= needs a fixed-step method; {method!r} is adaptive")
    if method in SCIPY_METHODS and adjoint:
        raise SolverInputError("adjoint=True is not available for scipy methods (a float64 CPU reference)")

    for cb in cbs:
        cb.on_start(grid[0], grid[-1], u0)
    start = time.perf_counter()
    if fixed:
        stepper, counters = _fixed_stepper(f, method, sub_method)
        sol = integrate_fixed(
            stepper, u0, grid, dt=float(dt), project=project, blowup=blowup, events=events,
            callbacks=cbs, max_steps=max_steps, recompute=adjoint,
        )
        sol.stats["nfe"] = sum(c.calls for c in counters)
    else:
        from . import adaptive  # torchdiffeq and scipy are only imported when used

        rtol = DEFAULT_RTOL if rtol is None else float(rtol)
        atol = DEFAULT_ATOL if atol is None else float(atol)
        t_grid = torch.tensor(grid, dtype=torch.float64)
        if method in SCIPY_METHODS:
            sol = adaptive.solve_scipy(
                f, u0, t_grid, method=method.removeprefix("scipy-"), rtol=rtol, atol=atol,
                max_steps=max_steps, blowup=blowup, events=events, callbacks=cbs,
            )
        else:
            sol = adaptive.solve_torchdiffeq(
                f, u0, t_grid, method=method, rtol=rtol, atol=atol, adjoint=adjoint,
                max_steps=max_steps, blowup=blowup, events=events, callbacks=cbs,
                first_step=None if dt is None else float(dt),
            )
        sol.t = sol.t.to(torch.float64).cpu()
    sol.stats["wall_time"] = time.perf_counter() - start
    sol.stats["method"] = method
    if len(wanted) != len(grid):
        wanted_set, last = set(wanted), len(sol.t) - 1
        # a run that stopped early keeps the state where it stopped, wanted or not
        keep = [i for i, t in enumerate(sol.t.tolist()) if t in wanted_set or (i == last and sol.status != "success")]
        sol.t, sol.u = sol.t[keep], sol.u[keep]
    for cb in cbs:
        cb.on_finish(sol)
    return sol


def _fixed_stepper(f: Any, method: str, sub_method: str) -> tuple[Any, list[_CountCalls]]:
    if method in TABLEAUS:
        counter = _CountCalls(f)
        return ExplicitRK(counter, TABLEAUS[method]), [counter]
    if method in SPLITTING_METHODS:
        split = as_split_field(f)
        counters = []
        stepper = Splitting(split, method, default_method=sub_method)
        for flow in stepper.flows:
            if flow.rk is not None:
                counter = _CountCalls(flow.rk.f)
                flow.rk.f = counter
                counters.append(counter)
        return stepper, counters
    field = as_semilinear_field(f)
    stepper = Semilinear(field, method)
    counter = _CountCalls(stepper.N)
    stepper.N = counter
    return stepper, [counter]
