"""Adaptive integrators: torchdiffeq's embedded Runge–Kutta pairs and scipy's ``OdeSolver`` family.

Both entry points return a ``Solution`` whose ``status`` says how the run ended; nothing that
happens during a run (blow-up, non-finite state, step-size underflow, the step or wall-time
budget, Ctrl-C, a terminal event) raises. Saving, watching, locating a stop, statistics and the
Solution itself are the ``solvers.record.RunRecord`` that the fixed-step driver uses too, so a
stopped run follows the same rule here (see ``solvers.record``): at a blow-up or terminal event
the state at ``t_event`` (located on the step's cubic Hermite interpolant) is the last saved state.

torchdiffeq (``solve_torchdiffeq``)
    The run is cut into one ``odeint`` call per save interval ``[t_k, t_{k+1}]``. A failure in
    interval k therefore still returns the states saved before it, and the blow-up guard and user
    events are checked at every accepted step (through torchdiffeq's ``callback_step`` hooks) and
    at every save point. The last accepted step size is carried into the next interval as
    ``first_step``, so the controller does not restart from scratch. Gradients flow through the
    returned states (plain backprop through the solver), or through torchdiffeq's continuous
    adjoint with ``adjoint=True``. ``f`` receives ``t`` as a 0-d float64 tensor. A step size that
    falls below 1e-12 of the time span ends the run with ``step_underflow``.

scipy (``solve_scipy``)
    A CPU reference that integrates in float64. ``f`` is called under ``torch.no_grad`` with a
    Python float ``t`` and a tensor of ``u0``'s shape, dtype and device (so any field runs as it
    is; the reference is then only as accurate as f's dtype: use a float64 field and u0 for a
    float64 reference); its result is read back as a float64 vector. The saved states come back
    in ``u0``'s dtype and device. The stepping loop is ``solve_ivp``'s own (one
    ``OdeSolver.step`` at a time, dense output for the save points) written out here, because
    ``solve_ivp`` keeps nothing when it is stopped by an exception, and a stop must keep the
    states computed so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .callbacks import Callback
from .events import Event
from .methods import SCIPY_METHODS, SCIPY_SOLVERS, TORCHDIFFEQ_METHODS
from .record import RunRecord, Watcher, check_field_output, hermite
from .solution import Solution, SolverInputError, Status

__all__ = ["SCIPY_METHODS", "SCIPY_SOLVERS", "TORCHDIFFEQ_METHODS", "solve_scipy", "solve_torchdiffeq"]

Field = Callable[[Any, Tensor], Tensor]

# a step below this fraction of the time span cannot make progress that matters: step_underflow
UNDERFLOW_FRACTION = 1e-12


def _nonfinite(u: Tensor) -> bool:
    return not bool(torch.isfinite(u).all())


# -- torchdiffeq -----------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised from inside torchdiffeq's loop to end the run; carries what the driver needs."""

    def __init__(
        self,
        status: Status,
        t: Tensor | float | None,
        y: Tensor | None,
        message: str = "",
        hits: list[int] | None = None,
    ):
        super().__init__(message)
        self.status, self.t, self.y, self.message = status, t, y, message
        self.hits = hits or []
        self.at_save_point = False  # y is an odeint output (it carries the adjoint's gradient)


class _Run:
    """Bookkeeping shared by the field wrapper and torchdiffeq's step callbacks."""

    def __init__(self, record: RunRecord):
        self.record = record
        # counting and checking only while our forward integration runs: the adjoint's backward
        # pass calls the same field and must neither be counted as forward work nor be stopped
        self.active = False
        self.checking = True  # off while a stop is being located (those steps are not the run's)
        self.field_checked = False
        self.min_dt = UNDERFLOW_FRACTION * record.span
        self.proposed_dt: Tensor | None = None  # the controller's step before it is cut at a save point
        self.pending = False  # a newly accepted state awaits the per-step checks
        self.current: tuple[Tensor, Tensor] | None = None  # the accepted state the solver steps from
        self.attempts: list[tuple[Tensor, Tensor]] = []  # the last two (t0, dt) attempted
        self.last_io: tuple[Tensor, Tensor] | None = None  # last stage (u, f(u)), to diagnose a failure
        self.checked: tuple[Tensor | float, Tensor] | None = None  # last state the watchers passed

    def on_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not self.active:
            return
        self.current = (t0, y0)
        self.proposed_dt = dt
        if not self.checking:
            return
        if self.pending:  # the state just accepted, before anything else
            self.pending = False
            self.check(t0, y0)
        record = self.record
        if record.steps >= record.max_steps:
            raise _Stop(Status.MAX_STEPS, t0, y0, f"step budget max_steps={record.max_steps} ran out")
        if record.out_of_time():
            raise _Stop(Status.TIME_LIMIT, t0, y0, f"wall-time budget max_wall_time={record.max_wall_time:g}s ran out")
        self.attempts = [*self.attempts[-1:], (t0, dt)]

    def on_accept(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if self.active and self.checking:
            self.record.add_dt(dt)
            self.pending = bool(self.record.watchers)

    def on_reject(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not (self.active and self.checking):
            return
        self.record.rejected += 1
        # rejections are where the step shrinks, so this is the one place to read dt back
        if abs(float(dt)) < self.min_dt:
            raise _Stop(Status.STEP_UNDERFLOW, t0, y0, f"step size underflow (dt={float(dt):.3g})")

    def check(self, t: Tensor | float, y: Tensor) -> None:
        """Raises ``_Stop`` if y is non-finite or a watcher changed sign since the last check."""
        hits = self.record.watch(float(t), y)
        if hits is None:
            raise _Stop(Status.NONFINITE, t, None, "the state became non-finite")
        if hits:
            raise _Stop(self.record.watchers[hits[0]].status, t, y, hits=hits)
        self.checked = (t, y)

    def attempted_end(self, t_limit: float) -> float | None:
        """Where the last real attempt would have ended (clipped to the interval's end), if known."""
        for t0, dt in reversed(self.attempts):
            t0f, dtf = float(t0), float(dt)
            if math.isfinite(dtf) and dtf != 0.0:
                end = t0f + dtf
                return min(end, t_limit) if dtf > 0 else max(end, t_limit)
        return None


class _FieldModule(nn.Module):
    """Holds f (so that its parameters are found by the adjoint) and carries torchdiffeq's hooks."""

    def __init__(self, f: Field, run: _Run):
        super().__init__()
        self.f = f
        self.run = run

    def forward(self, t: Tensor, u: Tensor) -> Tensor:
        run = self.run
        if not run.active:
            return self.f(t, u)
        run.record.nfe += 1
        du = self.f(t, u)
        if not run.field_checked:  # the first call only
            check_field_output(du, u)
            run.field_checked = True
        run.last_io = (u, du)
        return du

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.run.on_step(t0, y0, dt)

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.run.on_accept(t0, y0, dt)

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.run.on_reject(t0, y0, dt)


def _classify_assertion(err: AssertionError, run: _Run) -> tuple[Status, str] | None:
    """torchdiffeq reports its failures as AssertionErrors; map the known ones to statuses."""
    text = str(err)
    last = run.last_io
    if "underflow in dt" in text or "non-finite values" in text:
        # a non-finite stage makes the error ratio nan, torchdiffeq then sets dt to nan and
        # clamps it to min_step = 0, which it reports as an underflow: tell the two apart
        if "non-finite values" in text or (last is not None and (_nonfinite(last[0]) or _nonfinite(last[1]))):
            return Status.NONFINITE, "a stage of the step became non-finite"
        return Status.STEP_UNDERFLOW, f"step size underflow ({text})"
    if "max_num_steps exceeded" in text:
        return Status.MAX_STEPS, f"step budget ran out ({text})"
    return None


def solve_torchdiffeq(
    f: Field,
    u0: Tensor,
    t_eval: Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    adjoint: bool,
    max_steps: int,
    blowup: float | None,
    events: Sequence[Event],
    callbacks: Sequence[Callback],
    first_step: float | None = None,
    max_wall_time: float | None = None,
    save_at: Sequence[float] | None = None,
) -> Solution:
    """Integrates du/dt = f(t, u) with a torchdiffeq adaptive method, saving at every ``t_eval``.

    ``t_eval`` is 1-D and strictly monotone, from t0 to t1 (``save_at``: the subset of it to keep;
    default all). ``adjoint=True`` backpropagates with torchdiffeq's continuous adjoint (the
    parameters are those of f when f is an ``nn.Module``; tensors a plain callable closes over get
    no gradient that way). ``max_steps`` bounds the attempted steps (accepted + rejected) of the
    whole run, ``max_wall_time`` its seconds. ``first_step`` seeds the controller.
    ``stats``: nfe (forward calls of f), steps, accepted, rejected, dt_min/mean/max (accepted).
    """
    from torchdiffeq import odeint, odeint_adjoint

    if method not in TORCHDIFFEQ_METHODS:
        raise SolverInputError(f"unknown torchdiffeq method {method!r}; choose one of {', '.join(TORCHDIFFEQ_METHODS)}")
    times = t_eval.detach().to(dtype=torch.float64, device=u0.device)
    t_list = [float(x) for x in t_eval.tolist()]
    record = RunRecord(
        t_list[0], t_list[-1], u0, blowup=blowup, events=events, callbacks=callbacks, max_steps=max_steps,
        max_wall_time=max_wall_time, save_at=save_at, method=method, adaptive=True,
    )
    run = _Run(record)
    field = _FieldModule(f, run)
    params = tuple(field.parameters())

    def tt(s: float) -> Tensor:
        return torch.tensor(s, dtype=torch.float64, device=u0.device)

    def integrate(u: Tensor, span: Tensor, dt0: Tensor | float | None, *, use_adjoint: bool) -> Tensor:
        # step_t makes the step that would pass the end of the interval land on it instead:
        # torchdiffeq would otherwise overshoot and return its dense-output interpolant there,
        # whose low order (4 for every method, dopri8 included) dominates the error at tight
        # tolerances. It costs nothing here: each interval needs a step of its own anyway.
        options: dict[str, Any] = {"step_t": span[1:]}
        if dt0 is not None:
            options["first_step"] = dt0
        if use_adjoint:
            return odeint_adjoint(
                field, u, span, rtol=rtol, atol=atol, method=method, options=options, adjoint_params=params
            )[1]
        return odeint(field, u, span, rtol=rtol, atol=atol, method=method, options=options)[1]

    def state_at_crossing(stop: _Stop, anchor: tuple[float, Tensor]) -> tuple[float, Tensor, Watcher]:
        """Locates the crossing in [last checked state, stop state]: its time, state and watcher."""
        t_a_raw, y_a = run.checked
        t_a, t_b, y_b = float(t_a_raw), float(stop.t), stop.y
        run.checking = False  # the extra calls below must neither trip the guards nor count as steps
        with torch.no_grad():
            f_a, f_b = field(tt(t_a), y_a), field(tt(t_b), y_b)
        cubic = hermite(t_a, y_a, f_a.detach(), t_b, y_b, f_b.detach())

        def state_at(s: float, final: bool) -> Tensor:
            # the returned state is re-integrated over the short stretch to s (the cubic is only
            # third order); with the adjoint, from the last save point, whose state carries the
            # adjoint's graph (states inside odeint_adjoint carry none)
            from_anchor = final and adjoint
            if s == t_b and (stop.at_save_point or not from_anchor):
                return y_b
            t_from, y_from = anchor if from_anchor else (t_a, y_a)
            if s == t_from:
                return y_from
            try:
                dt0 = run.proposed_dt if run.proposed_dt is not None else abs(s - t_from)
                span = torch.tensor([t_from, s], dtype=torch.float64, device=u0.device)
                return integrate(y_from, span, dt0, use_adjoint=from_anchor)
            except (AssertionError, _Stop):
                return cubic(s)

        t_root, watcher, state = record.locate(stop.hits, t_a, y_a, f_a, t_b, y_b, f_b, state_at)
        return t_root, state, watcher

    def last_finite() -> tuple[float, Tensor] | None:
        for candidate in (run.current, run.checked):
            if candidate is not None and not _nonfinite(candidate[1]):
                return float(candidate[0]), candidate[1]
        return None

    if not record.begin(u0):
        return record.finish()
    run.checked = (t_list[0], u0)
    u, anchor = u0, (t_list[0], u0)
    dt0: Tensor | float | None = first_step
    t_next = t_list[-1]
    try:
        run.active = True
        try:
            for k in range(len(t_list) - 1):
                run.pending = False
                run.current = None
                t_next = t_list[k + 1]
                u_next = integrate(u, times[k : k + 2], dt0, use_adjoint=adjoint)
                dt0 = run.proposed_dt if run.proposed_dt is not None else dt0
                try:
                    run.check(t_next, u_next)
                except _Stop as stop:
                    stop.at_save_point = True
                    raise
                u = u_next
                record.save(t_next, u)
                anchor = (t_next, u)
        except _Stop as stop:
            if stop.status is Status.NONFINITE:
                t_event = float(stop.t)
                good = last_finite()
                if good is not None:
                    record.save_stop(*good)
                record.stop(Status.NONFINITE, f"{stop.message} at t={t_event:g}", t_event=t_event)
            elif stop.hits:
                t_event, y_event, watcher = state_at_crossing(stop, anchor)
                record.stop_at_crossing(t_event, watcher, y_event)
            else:  # max_steps, time_limit, step_underflow: the state reached
                t_stop = float(stop.t)
                if _nonfinite(stop.y):
                    good = last_finite()
                    if good is not None:
                        record.save_stop(*good)
                    record.stop(Status.NONFINITE, f"the state became non-finite at t={t_stop:g}", t_event=t_stop)
                else:
                    record.save_stop(t_stop, stop.y)
                    t_event = t_stop if stop.status is Status.STEP_UNDERFLOW else None
                    record.stop(stop.status, f"{stop.message} at t={t_stop:g}", t_event=t_event)
        except AssertionError as err:
            found = _classify_assertion(err, run)
            if found is None:
                raise
            status, message = found
            good = last_finite()
            t_good = good[0] if good is not None else t_list[0]
            if status is Status.NONFINITE:
                if good is not None:
                    record.save_stop(*good)
                t_event = run.attempted_end(t_next)
                t_event = t_good if t_event is None else t_event
                record.stop(status, f"{message} at t={t_event:g}", t_event=t_event)
            else:
                if good is not None:
                    record.save_stop(*good)
                t_event = t_good if status is Status.STEP_UNDERFLOW else None
                record.stop(status, f"{message} at t={t_good:g}", t_event=t_event)
    except KeyboardInterrupt:
        if run.current is not None and not _nonfinite(run.current[1]):
            record.save_stop(float(run.current[0]), run.current[1])
        record.stop(Status.INTERRUPTED, f"interrupted after {record.steps} steps")
    finally:
        run.active = False
        # the adjoint's graph keeps the field (and so this bookkeeping) alive: drop the states
        run.current = run.last_io = run.checked = None
        run.attempts = []
    return record.finish()


# -- scipy -----------------------------------------------------------------------------------------


def solve_scipy(
    f: Field,
    u0: Tensor,
    t_eval: Tensor,
    *,
    method: str,
    rtol: float,
    atol: float,
    max_steps: int,
    blowup: float | None,
    events: Sequence[Event],
    callbacks: Sequence[Callback],
    max_wall_time: float | None = None,
    save_at: Sequence[float] | None = None,
) -> Solution:
    """Integrates du/dt = f(t, u) in float64 on the CPU with a scipy ``OdeSolver`` (RK45, BDF, ...).

    ``method`` is the scipy name, with or without the ``scipy-`` prefix. f is called under
    ``torch.no_grad`` with a Python float t and a tensor of u0's shape, dtype and device; the
    saved states come back in u0's dtype and device (no gradient). ``max_steps`` bounds accepted
    steps, ``max_wall_time`` the seconds. ``save_at``: the subset of ``t_eval`` to keep.
    ``stats``: nfe (calls of f, including finite-difference Jacobians), njev, nlu, steps,
    accepted, rejected (exact for the explicit RK45/RK23/DOP853; ``None`` for BDF/Radau/LSODA,
    whose rejections scipy does not expose), dt_min/mean/max.
    """
    import numpy as np
    from scipy import integrate

    name = method.removeprefix("scipy-")
    if name not in SCIPY_SOLVERS:
        raise SolverInputError(f"unknown scipy method {method!r}; choose one of {', '.join(SCIPY_METHODS)}")
    shape = tuple(u0.shape)
    t_list = [float(x) for x in t_eval.tolist()]
    direction = 1.0 if t_list[-1] >= t_list[0] else -1.0
    explicit = name in ("RK45", "RK23", "DOP853")
    record = RunRecord(
        t_list[0], t_list[-1], u0, blowup=blowup, events=events, callbacks=callbacks, max_steps=max_steps,
        max_wall_time=max_wall_time, save_at=save_at, method=f"scipy-{name}", adaptive=True,
    )
    record.rejected = 0 if explicit else None
    checked = False
    bad_calls = 0

    def to_caller(y: Any) -> Tensor:
        """A float64 vector as a tensor of u0's shape, dtype and device (what f and the record see)."""
        return torch.from_numpy(np.array(y, dtype=np.float64)).reshape(shape).to(dtype=u0.dtype, device=u0.device)

    def field(t: float, u: Tensor) -> Tensor:
        nonlocal checked
        record.nfe += 1
        with torch.no_grad():
            du = f(float(t), u)
        if not checked:  # the first call only
            check_field_output(du, u)
            checked = True
        return du

    def fun(t: float, y: Any) -> Any:
        nonlocal bad_calls
        du = field(t, to_caller(y)).detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        # a non-finite stage makes scipy shrink the step until it fails "too small" (or, for the
        # implicit methods, fail in a factorization): remember it, to report what it was
        if not np.isfinite(du).all():
            bad_calls += 1
        return du

    def interpolant(solver: Any, t_new: float, y_new: Any) -> Callable[[float], Any]:
        # built on first use only: DOP853's dense output costs three more calls of f
        dense: list[Any] = []

        def at(s: float) -> Any:
            if s == t_new:
                return y_new
            if not dense:
                dense.append(solver.dense_output())
            return dense[0](s)

        return at

    def nonfinite_stop(t_event: float, message: str) -> None:
        record.save_stop(*last_good)
        record.stop(Status.NONFINITE, message, t_event=t_event)

    y0 = u0.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy().copy()
    if not record.begin(u0.detach()):
        return record.finish()
    last_good: tuple[float, Tensor] = (t_list[0], u0.detach())  # the last completed finite state
    solver = None
    nxt = 1
    try:
        try:
            solver = getattr(integrate, name)(fun, t_list[0], y0, t_list[-1], rtol=rtol, atol=atol)
            while solver.status == "running":
                if record.accepted >= max_steps:
                    record.save_stop(float(solver.t), to_caller(solver.y))
                    record.stop(Status.MAX_STEPS, f"step budget max_steps={max_steps} ran out at t={solver.t:g}")
                    break
                if record.out_of_time():
                    record.save_stop(float(solver.t), to_caller(solver.y))
                    record.stop(Status.TIME_LIMIT, record.time_limit_message(float(solver.t)))
                    break
                calls_before, bad_before = record.nfe, bad_calls
                y_old = solver.y.copy()
                step_message = solver.step()
                if solver.status == "failed":
                    if explicit:
                        record.rejected += (record.nfe - calls_before) // solver.n_stages
                    t_stop = float(solver.t)
                    if bad_calls > bad_before or not np.isfinite(solver.y).all():
                        nonfinite_stop(t_stop, f"scipy {name} failed at t={t_stop:g}: {step_message}")
                    else:
                        record.save_stop(t_stop, to_caller(solver.y))
                        message = f"scipy {name} failed at t={t_stop:g}: {step_message}"
                        record.stop(Status.STEP_UNDERFLOW, message, t_event=t_stop)
                    break
                if explicit:
                    # an explicit RK attempt costs exactly n_stages calls of f (FSAL), so the calls
                    # made inside step() tell how many attempts it took
                    record.rejected += max(0, (record.nfe - calls_before) // solver.n_stages - 1)
                t_old, t_new, y_new = float(solver.t_old), float(solver.t), solver.y
                record.add_dt(t_new - t_old)
                if not np.isfinite(y_new).all():
                    nonfinite_stop(t_new, f"the state became non-finite at t={t_new:g}")
                    break
                state_at = interpolant(solver, t_new, y_new)
                u_new = to_caller(y_new)
                hits = record.watch(t_new, u_new)
                if hits is None:  # a finite float64 state that overflows u0's dtype
                    nonfinite_stop(t_new, f"the state became non-finite at t={t_new:g}")
                    break
                stop: tuple[float, Watcher, Tensor] | None = None
                if hits:
                    u_old = to_caller(y_old)
                    f_a, f_b = field(t_old, u_old), field(t_new, u_new)
                    stop = record.locate(
                        hits, t_old, u_old, f_a, t_new, u_new, f_b, lambda s, final, at=state_at: to_caller(at(s))
                    )
                limit = t_new if stop is None else stop[0]
                while nxt < len(t_list) and direction * (t_list[nxt] - limit) <= 0:
                    record.save(t_list[nxt], to_caller(state_at(t_list[nxt])))
                    nxt += 1
                if stop is not None:
                    record.stop_at_crossing(*stop)
                    break
                last_good = (t_new, u_new)
        except (ValueError, ArithmeticError) as err:
            # an implicit method factorizes a Jacobian full of nan (scipy raises ValueError or a
            # LinAlgError, a ValueError too): a non-finite field, which is a status, not an error
            if isinstance(err, SolverInputError) or bad_calls == 0:
                raise
            t_stop = float(solver.t) if solver is not None else t_list[0]
            nonfinite_stop(t_stop, f"the field returned non-finite values near t={t_stop:g} ({type(err).__name__})")
    except KeyboardInterrupt:
        record.save_stop(*last_good)
        record.stop(Status.INTERRUPTED, f"interrupted after {record.steps} steps")

    return record.finish(njev=int(getattr(solver, "njev", 0)), nlu=int(getattr(solver, "nlu", 0)))
