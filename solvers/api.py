"""``solve``: one entry point for every integrator, returning a ``Solution`` with a status.

The method name picks the family: explicit Runge–Kutta on a fixed grid, operator splitting
(lie, strang), IMEX / exponential (stiff linear part treated exactly), adaptive (torchdiffeq)
or scipy's ``solve_ivp`` as a float64 CPU reference. Arguments (and the first evaluation of
f: its shape, dtype and device) are checked up front and a bad one is a ``SolverInputError``
with one line; everything that happens during the run (blow-up, non-finite state, step-size
underflow, the step or wall-time budget, Ctrl-C, a terminal event) is a status on the returned
Solution, reported by the same rule whichever method ran (``solvers.record``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from . import compiled
from .callbacks import Callback, as_callbacks
from .events import Event
from .fields import ExactFlow, SemilinearField, SplitField, SubFlow, as_semilinear_field, as_split_field
from .fixed import integrate_fixed, steps_between
from .methods import (
    FIXED_METHODS,
    METHODS,
    SCIPY_METHODS,
    SEMILINEAR_METHODS,
    SPLITTING_METHODS,
    TORCHDIFFEQ_METHODS,
)
from .record import RunRecord
from .solution import Solution, SolverInputError
from .steppers import ExplicitRK, Semilinear, Splitting, Stepper
from .tableau import TABLEAUS

__all__ = [
    "FIXED_METHODS", "METHODS", "SCIPY_METHODS", "SEMILINEAR_METHODS", "SPLITTING_METHODS",
    "TORCHDIFFEQ_METHODS", "solve",
]

DEFAULT_RTOL, DEFAULT_ATOL = 1e-6, 1e-8


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
    max_wall_time: float | None = None,
    compile: bool = False,
    compile_steps: int = 1,
) -> Solution:
    """Integrates du/dt = f(t, u) from t_span[0] to t_span[1] and saves the state at ``t_eval``.

    ``f`` is any callable ``f(t, u)``. Fixed-step methods (euler, midpoint, heun, ralston,
    ssprk3, rk4, lie, strang, imex-euler, etd1, etd-rk2) need ``dt`` and hit every ``t_eval``
    point exactly (Δ/dt steps per interval, rounded up unless Δ/dt is an integer up to float32
    rounding); adaptive methods use ``rtol``/``atol`` (``dt`` is then the first step).
    ``project(u)`` is applied after every fixed step (a projected integrator, e.g. post-LN).
    ``blowup``: stop with status "blowup" once max |u| exceeds it (None disables the threshold;
    a non-finite state always stops the run with status "nonfinite").
    ``adjoint``: torchdiffeq's continuous adjoint for adaptive methods; on a fixed grid, the steps
    run in segments of ⌈√n⌉ (n steps in all; save points also end a segment), each recomputed in
    the backward pass: the exact gradient of the discrete scheme for one more forward pass of
    time. When ``f`` (and ``project``, if any) is an ``nn.Module`` or a bound method of one, the
    segments build no graph in the forward pass, so memory is O(√n) states (each segment's input,
    one segment's activations at a time, plus the saved states) and gradients reach u0 and the
    modules' parameters (as torchdiffeq's adjoint: a tensor the module reads that is not one of its
    parameters gets none). For any other callable the segments are
    ``torch.utils.checkpoint``-ed (every tensor gets its gradient), which still keeps autograd's
    bookkeeping for every op of the forward pass: O(√n) activations plus O(n) small graph nodes.
    ``compile``: run each fixed step (stepper and field together) through ``torch.compile``; the
    same states as eager to round-off, compile time reported as ``stats["compile_time"]``, a
    one-line warning and eager where compiling is unavailable (or for adaptive/scipy methods and
    adjoint under autograd); see ``solvers.compiled``. ``compile_steps``: steps per compiled call
    (unrolled into one graph): on a small state torch.compile's fixed cost per call (tens of µs)
    outweighs a step, and k steps per call pay it once; compile time grows about k-fold.
    ``sub_method``: the explicit method for parts of a split field that have no exact flow.
    ``max_steps``/``max_wall_time`` (seconds): budgets; a run that exhausts one ends with status
    "max_steps"/"time_limit" and the state it reached.

    The first evaluation of ``f`` is checked: a result of the wrong shape, dtype or device is a
    ``SolverInputError``. How a stopped run is reported is the same for every method; see
    ``solvers.record``.
    """
    if method not in METHODS:
        raise SolverInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if not isinstance(u0, torch.Tensor):
        raise SolverInputError(f"u0 must be a torch.Tensor, got {type(u0).__name__}")
    if not u0.is_floating_point():
        raise SolverInputError(f"u0 must be a floating-point tensor, got dtype {u0.dtype}")
    if sub_method not in TABLEAUS:
        raise SolverInputError(f"unknown sub_method {sub_method!r}; choose one of {', '.join(TABLEAUS)}")
    for name, value in (("dt", dt), ("rtol", rtol), ("atol", atol), ("max_wall_time", max_wall_time)):
        _check_finite(name, value, positive=True)
    _check_finite("blowup", blowup, positive=True)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise SolverInputError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not isinstance(compile_steps, int) or isinstance(compile_steps, bool) or not 1 <= compile_steps <= 256:
        raise SolverInputError(f"compile_steps must be an integer in 1..256, got {compile_steps!r}")
    grid, wanted = _save_grid(t_span, t_eval)
    events = list(events)
    cbs = as_callbacks(callbacks)

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

    common: dict[str, Any] = dict(
        max_steps=max_steps, blowup=blowup, events=events, callbacks=cbs, max_wall_time=max_wall_time,
        save_at=None if len(wanted) == len(grid) else wanted,
    )
    if fixed:
        # the field is wrapped once here (every evaluation is counted and the first one checked);
        # structure-aware methods have their evaluated parts wrapped instead, so exact flows stay free
        if method in SPLITTING_METHODS:
            structured: Any = as_split_field(f)
        elif method in SEMILINEAR_METHODS:
            structured = as_semilinear_field(f)
        else:
            structured = f
        record = RunRecord(grid[0], grid[-1], u0, method=method, **common)
        stepper, counted = _fixed_stepper(structured, method, sub_method, record)
        advance = None
        if compile and adjoint and torch.is_grad_enabled():
            compiled.not_covered("does not combine with adjoint=True checkpointing under autograd")
        elif compile:
            raw_stepper, raw_field = _fixed_stepper(structured, method, sub_method, None)
            h0 = (grid[1] - grid[0]) / steps_between(grid[0], grid[1], float(dt))
            signature = (
                f, method, sub_method, project, tuple(u0.shape), u0.dtype, u0.device,
                torch.is_grad_enabled(), u0.requires_grad,
            )
            advance, info = compiled.prepare(
                raw_stepper, raw_field, stepper, counted, project, record, u0, grid[0], h0, signature,
                steps=compile_steps,
            )
            record.stats.update(info)
        params = _named_parameters(f, project) if adjoint else None
        return integrate_fixed(
            stepper, counted, u0, grid, dt=float(dt), project=project, record=record,
            slope=record.count(structured), recompute=adjoint, advance=advance, params=params,
        )

    from . import adaptive  # torchdiffeq and scipy are only imported when used

    if compile:
        compiled.not_covered(f"covers fixed-step methods; {method!r} is adaptive")

    rtol = DEFAULT_RTOL if rtol is None else float(rtol)
    atol = DEFAULT_ATOL if atol is None else float(atol)
    t_grid = torch.tensor(grid, dtype=torch.float64)
    if method in SCIPY_METHODS:
        return adaptive.solve_scipy(f, u0, t_grid, method=method, rtol=rtol, atol=atol, **common)
    return adaptive.solve_torchdiffeq(
        f, u0, t_grid, method=method, rtol=rtol, atol=atol, adjoint=adjoint,
        first_step=None if dt is None else float(dt), **common,
    )


def _owning_module(fn: Any) -> torch.nn.Module | None:
    """``fn`` itself when it is an nn.Module, the module of a bound method, else None."""
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def _named_parameters(f: Any, project: Any) -> tuple[torch.Tensor, ...] | None:
    """The parameters requiring grad of the field and the projection when both are nn.Modules (or
    their bound methods), so that adjoint segments can run without a graph; None when a callable
    could read tensors no module names (the segments are then checkpointed, see solvers.fixed)."""
    modules = [_owning_module(f)] + ([] if project is None else [_owning_module(project)])
    if any(m is None for m in modules):
        return None
    seen: dict[int, torch.Tensor] = {}
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                seen.setdefault(id(p), p)
    return tuple(seen.values())


def _fixed_stepper(f: Any, method: str, sub_method: str, record: RunRecord | None) -> tuple[Stepper, Any]:
    """The stepper for ``method`` and the field to hand it, with every evaluated part counted
    into ``record`` (None: the parts as they are, for the compiled step)."""

    def count(part: Any, what: str = "f(t, u)") -> Any:
        return part if record is None else record.count(part, what)

    if method in TABLEAUS:
        return ExplicitRK(TABLEAUS[method]), count(f)
    if method in SPLITTING_METHODS:
        parts: dict[str, Any] = {}
        for name, part in f.parts.items():
            what = f"part {name!r} of the split field"
            if isinstance(part, SubFlow):
                if part.method != "exact":
                    part = SubFlow(count(part.field, what), part.method, part.substeps)
            elif not isinstance(part, ExactFlow):
                part = count(part, what)
            parts[name] = part
        return Splitting(method, default_method=sub_method), SplitField(parts)
    field = SemilinearField(f.linear, count(f.nonlinear, "the nonlinear part N(t, u)"))
    return Semilinear(method), field
