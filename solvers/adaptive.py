"""Adaptive integrators: torchdiffeq's embedded Runge–Kutta pairs and scipy's ``OdeSolver`` family.

Both entry points return a ``Solution`` whose ``status`` says how the run ended and whose
``t``/``u`` hold every state saved before the stop; nothing that happens during a run (blow-up,
non-finite state, step-size underflow, the step budget, Ctrl-C, a terminal event) raises.

torchdiffeq (``solve_torchdiffeq``)
    The run is cut into one ``odeint`` call per save interval ``[t_k, t_{k+1}]``. A failure in
    interval k therefore still returns the states saved before it, and the blow-up guard and user
    events are checked at every accepted step (through torchdiffeq's ``callback_step`` hooks) and
    at every save point. The last accepted step size is carried into the next interval as
    ``first_step``, so the controller does not restart from scratch. Gradients flow through the
    returned states (plain backprop through the solver), or through torchdiffeq's continuous
    adjoint with ``adjoint=True``. ``f`` receives ``t`` as a 0-d float64 tensor.

scipy (``solve_scipy``)
    A float64 CPU reference. The state is flattened to a float64 numpy vector and ``f`` is called
    under ``torch.no_grad`` with a float64 CPU tensor of ``u0``'s shape and a Python float ``t``:
    ``f`` must accept that (e.g. ``model.double()``). The saved states are cast back to ``u0``'s
    dtype and device. The stepping loop is ``solve_ivp``'s own (one ``OdeSolver.step`` at a time,
    dense output for the save points and for locating crossings) written out here, because
    ``solve_ivp`` keeps nothing when it is stopped by an exception, and a stop must keep the
    states computed so far.

A stop at a crossing (blow-up threshold or a terminal user event) is located on the step that
crossed it and the state at that time is appended as the last saved state, so ``sol.t[-1] ==
sol.t_event`` then. On ``step_underflow`` and ``max_steps`` the last accepted state is appended
(if it lies beyond the last save point); on ``nonfinite`` and ``interrupted`` nothing is appended.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .callbacks import Callback
from .events import Event
from .solution import Solution, SolverInputError, Status

TORCHDIFFEQ_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8", "fehlberg2")
SCIPY_METHODS = ("RK45", "RK23", "DOP853", "BDF", "Radau", "LSODA")

Field = Callable[[Any, Tensor], Tensor]


# -- shared pieces -------------------------------------------------------------------------------


class _Saver:
    """The saved trajectory; every save is forwarded to the callbacks at once, in order."""

    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = callbacks
        self.times: list[float] = []
        self.states: list[Tensor] = []

    def save(self, t: float, u: Tensor) -> None:
        self.times.append(t)
        self.states.append(u)
        for cb in self.callbacks:
            cb.on_save(t, u)

    def beyond_last(self, t: float, direction: float) -> bool:
        return direction * (t - self.times[-1]) > 0


@dataclass(frozen=True)
class _Watcher:
    """A scalar g(t, u) whose sign change stops the run: the blow-up guard or a terminal event."""

    g: Callable[[float, Tensor], float]
    crossed: Callable[[float, float], bool]
    status: Status
    name: str


def _watchers(blowup: float | None, events: Sequence[Event]) -> list[_Watcher]:
    out = []
    if blowup is not None:
        threshold = float(blowup)
        out.append(
            _Watcher(
                g=lambda t, u: float(u.detach().abs().amax()) - threshold,
                crossed=lambda before, after: before <= 0.0 < after,
                status=Status.BLOWUP,
                name="blowup",
            )
        )
    # a non-terminal event only marks a run; like the fixed-step driver, it does not stop it
    for ev in events:
        if ev.terminal:
            out.append(_Watcher(g=ev.value, crossed=ev.crossed, status=Status.EVENT, name=ev.name))
    return out


def _nonfinite(u: Tensor) -> bool:
    return not bool(torch.isfinite(u).all())


def _find_root(g: Callable[[float], float], t_a: float, t_b: float) -> float:
    """The zero of g between t_a and t_b (g changes sign there, or vanishes at t_b)."""
    from scipy.optimize import brentq

    g_a, g_b = g(t_a), g(t_b)
    if g_b == 0.0 or not math.isfinite(g_b):
        return t_b
    if g_a == 0.0:
        return t_a
    if (g_a > 0) == (g_b > 0):  # the interpolant missed the crossing the steps saw: stop at the end
        return t_b
    lo, hi = min(t_a, t_b), max(t_a, t_b)
    return float(brentq(g, lo, hi, xtol=1e-14 * max(1.0, abs(lo), abs(hi)), rtol=1e-15, maxiter=200))


def _first_crossing(
    watchers: Sequence[_Watcher],
    hits: Sequence[int],
    state_at: Callable[[float], Tensor],
    t_a: float,
    t_b: float,
) -> tuple[float, _Watcher]:
    """Locates each crossed watcher on the interpolant ``state_at`` and returns the earliest."""
    direction = 1.0 if t_b >= t_a else -1.0
    best: tuple[float, _Watcher] | None = None
    for k in hits:
        w = watchers[k]
        t_root = _find_root(lambda s, w=w: w.g(s, state_at(s)), t_a, t_b)
        if best is None or direction * (t_root - best[0]) < 0:
            best = (t_root, w)
    assert best is not None
    return best


def _dt_stats(dts: Sequence[float] | Tensor) -> dict[str, float]:
    if len(dts) == 0:
        return {"dt_min": math.nan, "dt_mean": math.nan, "dt_max": math.nan}
    d = (torch.stack(list(dts)) if not isinstance(dts, Tensor) else dts).to(torch.float64).abs().cpu()
    return {"dt_min": float(d.min()), "dt_mean": float(d.mean()), "dt_max": float(d.max())}


# -- torchdiffeq -----------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised from inside torchdiffeq's loop to end the run; carries what the driver needs."""

    def __init__(self, status: Status, t: Tensor | float | None, y: Tensor | None, message: str = ""):
        super().__init__(message)
        self.status, self.t, self.y, self.message = status, t, y, message
        self.hits: list[int] = []


class _Run:
    """Bookkeeping shared by the field wrapper and torchdiffeq's step callbacks."""

    def __init__(self, watchers: list[_Watcher], max_steps: int):
        self.watchers = watchers
        self.max_steps = max_steps
        # counting and checking only while our forward integration runs: the adjoint's backward
        # pass calls the same field and must neither be counted as forward work nor be stopped
        self.active = False
        self.checking = True
        self.nfe = 0
        self.accepted = 0
        self.rejected = 0
        self.dts: list[Tensor] = []
        self.proposed_dt: Tensor | None = None  # the controller's step before it is cut at a save point
        self.pending = False  # a newly accepted state awaits the per-step checks
        self.current: tuple[Tensor, Tensor] | None = None  # the accepted state the solver steps from
        self.last_io: tuple[Tensor, Tensor] | None = None  # last stage (u, f(u)), to diagnose a failure
        self.checked: tuple[Tensor | float, Tensor] | None = None  # last state the watchers saw
        self.g_values: list[float] = []

    @property
    def steps(self) -> int:
        return self.accepted + self.rejected

    def begin(self, t: Tensor | float, u: Tensor) -> None:
        self.checked = (t, u)
        self.g_values = [w.g(float(t), u) for w in self.watchers]

    def on_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not self.active:
            return
        self.current = (t0, y0)
        self.proposed_dt = dt
        if not self.checking:
            return
        if self.steps >= self.max_steps:
            raise _Stop(Status.MAX_STEPS, t0, y0, f"step budget max_steps={self.max_steps} ran out")
        if self.pending:
            self.pending = False
            self.check(t0, y0)

    def on_accept(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not self.active:
            return
        self.accepted += 1
        self.dts.append(dt.detach())
        self.pending = bool(self.watchers)

    def on_reject(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if self.active:
            self.rejected += 1

    def check(self, t: Tensor | float, y: Tensor) -> None:
        """Raises ``_Stop`` if y is non-finite or a watcher changed sign since the last check."""
        values = [w.g(float(t), y) for w in self.watchers]
        # the blow-up guard's max |u| is nan/inf exactly when y is: spare a second host sync
        guarded = bool(self.watchers) and self.watchers[0].status is Status.BLOWUP
        if not math.isfinite(values[0]) if guarded else _nonfinite(y):
            raise _Stop(Status.NONFINITE, t, None, "the state became non-finite")
        hits = [k for k, w in enumerate(self.watchers) if w.crossed(self.g_values[k], values[k])]
        if hits:
            stop = _Stop(self.watchers[hits[0]].status, t, y)
            stop.hits = hits
            raise stop
        self.checked = (t, y)
        self.g_values = values


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
        run.nfe += 1
        du = self.f(t, u)
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
) -> Solution:
    """Integrates du/dt = f(t, u) with a torchdiffeq adaptive method, saving at every ``t_eval``.

    ``t_eval`` is 1-D and strictly monotone, from t0 to t1. ``adjoint=True`` backpropagates with
    torchdiffeq's continuous adjoint (the parameters are those of f when f is an ``nn.Module``;
    tensors a plain callable closes over get no gradient that way). ``max_steps`` bounds the
    attempted steps (accepted + rejected) of the whole run. ``first_step`` seeds the controller.
    ``stats``: nfe (forward calls of f), steps, accepted, rejected, dt_min/mean/max (accepted).
    """
    from torchdiffeq import odeint, odeint_adjoint

    if method not in TORCHDIFFEQ_METHODS:
        raise SolverInputError(f"unknown torchdiffeq method {method!r}; choose one of {', '.join(TORCHDIFFEQ_METHODS)}")
    times = t_eval.detach().to(dtype=torch.float64, device=u0.device)
    t_list = [float(x) for x in t_eval.tolist()]
    direction = 1.0 if t_list[-1] >= t_list[0] else -1.0
    watchers = _watchers(blowup, events)
    run = _Run(watchers, max_steps)
    field = _FieldModule(f, run)
    params = tuple(field.parameters())
    saver = _Saver(callbacks)
    status, message, t_event = Status.SUCCESS, "", None

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

    def state_at_stop(stop: _Stop) -> tuple[float, Tensor, _Watcher]:
        """Locates the crossing in [last checked state, stop state]: its time, state and watcher."""
        t_a_raw, y_a = run.checked
        t_a, t_b, y_b = float(t_a_raw), float(stop.t), stop.y
        run.checking = False  # the extra calls below must not trip the guards again
        with torch.no_grad():
            tt = lambda s: torch.tensor(s, dtype=torch.float64, device=y_a.device)  # noqa: E731
            f_a, f_b = field(tt(t_a), y_a), field(tt(t_b), y_b)
            h = t_b - t_a

            def hermite(s: float) -> Tensor:
                x = (s - t_a) / h
                x2, x3 = x * x, x * x * x
                return (
                    (2 * x3 - 3 * x2 + 1) * y_a
                    + (x3 - 2 * x2 + x) * h * f_a
                    + (3 * x2 - 2 * x3) * y_b
                    + (x3 - x2) * h * f_b
                )

            t_root, w = _first_crossing(watchers, stop.hits, hermite, t_a, t_b)
        if t_root == t_b:
            return t_root, y_b, w
        if t_root == t_a:
            return t_root, y_a, w
        # the cubic Hermite interpolant is only 3rd order: re-integrate the short stretch for a
        # state as accurate as the rest of the trajectory (falls back to the interpolant)
        try:
            dt0 = run.proposed_dt if run.proposed_dt is not None else abs(t_root - t_a)
            return t_root, integrate(y_a, tt([t_a, t_root]), dt0, use_adjoint=False), w
        except (AssertionError, _Stop):
            with torch.no_grad():
                return t_root, hermite(t_root), w

    saver.save(t_list[0], u0)
    u = u0
    dt0: Tensor | float | None = first_step
    try:
        run.active = True
        try:
            run.begin(t_list[0], u0)
            if _nonfinite(u0):
                raise _Stop(Status.NONFINITE, t_list[0], None, "the initial state is non-finite")
            if blowup is not None and run.g_values[0] > 0:
                raise _Stop(Status.BLOWUP, t_list[0], u0, f"max |u| is above {blowup:g} at the initial state")
            for k in range(len(t_list) - 1):
                run.pending = False
                run.current = None
                u_next = integrate(u, times[k : k + 2], dt0, use_adjoint=adjoint)
                dt0 = run.proposed_dt if run.proposed_dt is not None else dt0
                run.check(t_list[k + 1], u_next)
                u = u_next
                saver.save(t_list[k + 1], u)
        except _Stop as stop:
            status, message = stop.status, stop.message
            if stop.status is Status.NONFINITE:
                t_event = float(stop.t)
                message = f"{message} at t={t_event:g}"
            elif stop.status is Status.MAX_STEPS:
                t_stop = float(stop.t)
                if saver.beyond_last(t_stop, direction):
                    saver.save(t_stop, stop.y)
                message = f"{message} at t={t_stop:g}"
            elif not stop.hits:  # already over the threshold at t0: nothing to locate
                t_event = float(stop.t)
            else:
                t_event, y_event, w = state_at_stop(stop)
                status, message = w.status, f"{w.name} at t={t_event:g}"
                saver.save(t_event, y_event)
        except AssertionError as err:
            found = _classify_assertion(err, run)
            if found is None:
                raise
            status, message = found
            if run.current is not None:
                t_stop = float(run.current[0])
                if status is Status.NONFINITE:
                    t_event = t_stop
                else:
                    if status is Status.STEP_UNDERFLOW:
                        t_event = t_stop
                    if saver.beyond_last(t_stop, direction):
                        saver.save(t_stop, run.current[1])
                message = f"{message} at t={t_stop:g}"
    except KeyboardInterrupt:
        status, message = Status.INTERRUPTED, f"interrupted after {run.steps} steps"
    finally:
        run.active = False
        # the adjoint's graph keeps the field (and so this bookkeeping) alive: drop the states
        run.current = run.last_io = run.checked = None

    stats: dict[str, Any] = {
        "nfe": run.nfe,
        "steps": run.steps,
        "accepted": run.accepted,
        "rejected": run.rejected,
        **_dt_stats(run.dts),
        "method": method,
    }
    return Solution(
        t=torch.tensor(saver.times, dtype=torch.float64),
        u=torch.stack(saver.states),
        status=status,
        stats=stats,
        t_event=t_event,
        message=message,
    )


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
) -> Solution:
    """Integrates du/dt = f(t, u) in float64 on the CPU with a scipy ``OdeSolver`` (RK45, BDF, ...).

    ``method`` is the scipy name, with or without the ``scipy-`` prefix. f is called under
    ``torch.no_grad`` with a Python float t and a float64 CPU tensor of u0's shape; the saved
    states come back in u0's dtype and device (no gradient). ``max_steps`` bounds accepted steps.
    ``stats``: nfe (calls of f, including finite-difference Jacobians), njev, nlu, steps,
    accepted, rejected (exact for the explicit RK45/RK23/DOP853; ``None`` for BDF/Radau/LSODA,
    whose rejections scipy does not expose), dt_min/mean/max.
    """
    import numpy as np
    from scipy import integrate

    name = method.removeprefix("scipy-")
    if name not in SCIPY_METHODS:
        raise SolverInputError(f"unknown scipy method {method!r}; choose one of {', '.join(SCIPY_METHODS)}")
    shape = tuple(u0.shape)
    t_list = [float(x) for x in t_eval.tolist()]
    direction = 1.0 if t_list[-1] >= t_list[0] else -1.0
    watchers = _watchers(blowup, events)
    saver = _Saver(callbacks)
    calls = bad_calls = 0

    def as_tensor(y: Any) -> Tensor:
        return torch.from_numpy(np.array(y, dtype=np.float64)).reshape(shape)

    def to_caller(y: Any) -> Tensor:
        return as_tensor(y).to(dtype=u0.dtype, device=u0.device)

    def fun(t: float, y: Any) -> Any:
        nonlocal calls, bad_calls
        calls += 1
        with torch.no_grad():
            du = f(float(t), as_tensor(y)).detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy()
        # a non-finite stage makes scipy shrink the step until it fails "too small": remember
        # it, so that the failure can be reported as what it is
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

    y0 = u0.detach().to(device="cpu", dtype=torch.float64).reshape(-1).numpy().copy()
    saver.save(t_list[0], u0.detach())
    status, message, t_event = Status.SUCCESS, "", None
    steps = rejected = 0
    explicit = name in ("RK45", "RK23", "DOP853")
    dts: list[float] = []
    solver = None
    try:
        g_values = [w.g(t_list[0], as_tensor(y0)) for w in watchers]
        if not np.isfinite(y0).all():
            status, t_event, message = Status.NONFINITE, t_list[0], "the initial state is non-finite"
        elif blowup is not None and g_values[0] > 0:
            status, t_event, message = Status.BLOWUP, t_list[0], f"max |u| is above {blowup:g} at the initial state"
        if status is Status.SUCCESS:
            solver = getattr(integrate, name)(fun, t_list[0], y0, t_list[-1], rtol=rtol, atol=atol)
        nxt = 1
        while solver is not None and status is Status.SUCCESS and solver.status == "running":
            if steps >= max_steps:
                status, message = Status.MAX_STEPS, f"step budget max_steps={max_steps} ran out at t={solver.t:g}"
                if saver.beyond_last(solver.t, direction):
                    saver.save(float(solver.t), to_caller(solver.y))
                break
            calls_before, bad_before = calls, bad_calls
            step_message = solver.step()
            if solver.status == "failed":
                if explicit:
                    rejected += (calls - calls_before) // solver.n_stages
                t_stop = float(solver.t)
                t_event = t_stop
                if bad_calls > bad_before or not np.isfinite(solver.y).all():
                    status = Status.NONFINITE
                else:
                    status = Status.STEP_UNDERFLOW
                    if saver.beyond_last(t_stop, direction):
                        saver.save(t_stop, to_caller(solver.y))
                message = f"scipy {name} failed at t={t_stop:g}: {step_message}"
                break
            steps += 1
            if explicit:
                # an explicit RK attempt costs exactly n_stages calls of f (FSAL), so the calls
                # made inside step() tell how many attempts it took
                rejected += max(0, (calls - calls_before) // solver.n_stages - 1)
            t_old, t_new, y_new = float(solver.t_old), float(solver.t), solver.y
            dts.append(t_new - t_old)
            if not np.isfinite(y_new).all():
                status, t_event, message = Status.NONFINITE, t_new, f"the state became non-finite by t={t_new:g}"
                break
            state_at = interpolant(solver, t_new, y_new)
            stop: tuple[float, _Watcher] | None = None
            if watchers:
                values = [w.g(t_new, as_tensor(y_new)) for w in watchers]
                hits = [k for k, w in enumerate(watchers) if w.crossed(g_values[k], values[k])]
                g_values = values
                if hits:
                    stop = _first_crossing(watchers, hits, lambda s, at=state_at: as_tensor(at(s)), t_old, t_new)
            limit = t_new if stop is None else stop[0]
            while nxt < len(t_list) and direction * (t_list[nxt] - limit) <= 0:
                saver.save(t_list[nxt], to_caller(state_at(t_list[nxt])))
                nxt += 1
            if stop is not None:
                t_event, w = stop
                status, message = w.status, f"{w.name} at t={t_event:g}"
                if saver.beyond_last(t_event, direction):
                    saver.save(t_event, to_caller(state_at(t_event)))
    except KeyboardInterrupt:
        status, message = Status.INTERRUPTED, f"interrupted after {steps} steps"

    stats: dict[str, Any] = {
        "nfe": calls,
        "njev": int(getattr(solver, "njev", 0)),
        "nlu": int(getattr(solver, "nlu", 0)),
        "steps": steps + rejected if explicit else steps,
        "accepted": steps,
        "rejected": rejected if explicit else None,
        **_dt_stats(torch.tensor(dts, dtype=torch.float64)),
        "method": f"scipy-{name}",
    }
    return Solution(
        t=torch.tensor(saver.times, dtype=torch.float64),
        u=torch.stack(saver.states),
        status=status,
        stats=stats,
        t_event=t_event,
        message=message,
    )
