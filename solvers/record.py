"""One run record for every driver: saving, watching, locating a stop, statistics, the Solution.

The fixed-grid driver (``solvers.fixed``), torchdiffeq and scipy (``solvers.adaptive``) keep their
trajectory in a ``RunRecord``, so a stopped run means the same thing whichever integrator made it.
The stop rule:

- ``blowup`` (max |u| crossed the threshold) and ``event`` (a terminal user event): the crossing
  is located inside the step that crossed it, as the zero of g on the cubic Hermite interpolant
  of the step (its end states and f at both ends), found by brentq; the integrator's own state at
  that time (a re-step, a re-integration, the dense output) is the last saved state, so
  ``sol.t[-1] == sol.t_event``. When several watchers cross in the same step, the earliest
  located crossing wins. (A step too coarse for a cubic, whose own state at the Hermite root has
  plainly not crossed yet, has the root refined on its own states: ``RunRecord.locate``.)
- ``nonfinite``: the state became inf/nan without crossing the threshold first (or with no
  threshold). The last saved state is the last finite state; ``t_event`` is the time at which the
  non-finite value appeared (so ``sol.t[-1] <= sol.t_event``).
- ``max_steps``, ``time_limit``, ``step_underflow``: the last saved state is the state reached.
  An adaptive run that ends this way with a step size held down by stiffness (many rejected
  steps, or steps tiny against the time span) says which stiff methods to use instead.
- ``interrupted`` (Ctrl-C): every state saved so far plus the last completed state.
- ``success``: every requested save point.

The record also owns the callbacks (``on_start`` when it is created, ``on_save`` at every saved
state, ``on_finish`` with the Solution), the statistics (nfe, steps, accepted, rejected, dt
min/mean/max, wall time) and the first-call check of the field's output (shape, dtype, device).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .callbacks import Callback
from .events import Event
from .methods import STIFF_ADVICE
from .solution import Solution, SolverInputError, Status

Field = Callable[[Any, Tensor], Tensor]

# an adaptive run whose mean step is below this fraction of its time span was held down (stiffness)
TINY_STEP_FRACTION = 1e-5
# ... and so was one that rejected at least this fraction of at least MIN_STEPS_FOR_HINT attempts
REJECTED_FRACTION = 0.1
MIN_STEPS_FOR_HINT = 50


# -- watchers and the location rule ----------------------------------------------------------------


@dataclass(frozen=True)
class Watcher:
    """A scalar g(t, u) whose sign change stops the run: the blow-up guard or a terminal event."""

    g: Callable[[float, Tensor], float]
    crossed: Callable[[float, float], bool]
    status: Status
    name: str


def make_watchers(blowup: float | None, events: Iterable[Event]) -> list[Watcher]:
    """The blow-up guard (first, when there is a threshold) and every terminal event."""
    out = []
    if blowup is not None:
        threshold = float(blowup)
        out.append(
            Watcher(
                g=lambda t, u: float(u.detach().abs().amax()) - threshold,
                crossed=lambda before, after: before <= 0.0 < after,
                status=Status.BLOWUP,
                name="blowup",
            )
        )
    # a non-terminal event only marks a run and is not watched: nothing would be done with it
    for ev in events:
        if ev.terminal:
            out.append(Watcher(g=ev.value, crossed=ev.crossed, status=Status.EVENT, name=ev.name))
    return out


def hermite(
    t_a: float, y_a: Tensor, f_a: Tensor, t_b: float, y_b: Tensor, f_b: Tensor
) -> Callable[[float], Tensor]:
    """The cubic Hermite interpolant of a step from its end states and slopes."""
    h = t_b - t_a

    def at(s: float) -> Tensor:
        x = (s - t_a) / h
        x2, x3 = x * x, x * x * x
        return (
            (2 * x3 - 3 * x2 + 1) * y_a
            + (x3 - 2 * x2 + x) * h * f_a
            + (3 * x2 - 2 * x3) * y_b
            + (x3 - x2) * h * f_b
        )

    return at


def find_root(g: Callable[[float], float], t_a: float, t_b: float) -> float:
    """The zero of g between t_a and t_b (g changes sign there, or vanishes at t_b), by brentq."""
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


# -- the field's first output --------------------------------------------------------------------


def check_field_output(du: Any, u: Tensor, what: str = "f(t, u)") -> None:
    """Raises SolverInputError (one line) unless ``du`` is a tensor like ``u``: shape, dtype, device."""
    if not isinstance(du, Tensor):
        raise SolverInputError(f"{what} must return a torch.Tensor, got {type(du).__name__}")
    if du.shape != u.shape:
        raise SolverInputError(
            f"{what} returned shape {tuple(du.shape)} for a state of shape {tuple(u.shape)}: "
            "du/dt must have the state's shape"
        )
    if du.dtype != u.dtype:
        raise SolverInputError(
            f"{what} returned dtype {du.dtype} for a state of dtype {u.dtype}: "
            "make the field and u0 agree (e.g. model.to(u0.dtype))"
        )
    if du.device != u.device:
        raise SolverInputError(f"{what} returned a tensor on {du.device} for a state on {u.device}")


class CountedField:
    """Wraps a field: counts its calls into the record and checks its first output, once."""

    def __init__(self, f: Field, record: RunRecord, what: str = "f(t, u)"):
        self.f, self.record, self.what = f, record, what
        self.checked = False

    def __call__(self, t: Any, u: Tensor) -> Tensor:
        self.record.nfe += 1
        du = self.f(t, u)
        if not self.checked:  # the first call only: no per-step cost
            check_field_output(du, u, self.what)
            self.checked = True
        return du


# -- the record --------------------------------------------------------------------------------------


class RunRecord:
    """Everything a run keeps: saved states, watchers, statistics, and how it ended.

    ``save_at``: the grid points to keep (None keeps every point handed to ``save``); states saved
    by ``save_stop`` are always kept. ``adaptive`` turns on the stiffness hint.
    """

    def __init__(
        self,
        t0: float,
        t1: float,
        u0: Tensor,
        *,
        blowup: float | None,
        events: Iterable[Event],
        callbacks: Sequence[Callback],
        max_steps: int,
        max_wall_time: float | None = None,
        save_at: Iterable[float] | None = None,
        method: str = "",
        adaptive: bool = False,
    ):
        self.start_time = time.perf_counter()
        self.deadline = None if max_wall_time is None else self.start_time + float(max_wall_time)
        self.max_wall_time = max_wall_time
        self.t0, self.t1 = float(t0), float(t1)
        self.direction = 1.0 if self.t1 >= self.t0 else -1.0
        self.span = abs(self.t1 - self.t0)
        self.u0 = u0
        self.threshold = None if blowup is None else float(blowup)
        self.watchers = make_watchers(blowup, events)
        self.has_events = any(w.status is Status.EVENT for w in self.watchers)
        self.g_values: list[float] = []
        self.callbacks = list(callbacks)
        self.save_at = None if save_at is None else {float(t) for t in save_at}
        self.max_steps = max_steps
        self.method = method
        self.adaptive = adaptive
        self.times: list[float] = []
        self.states: list[Tensor] = []
        self.status, self.message, self.t_event = Status.SUCCESS, "", None
        self.nfe = 0
        self.accepted = 0
        self.rejected: int | None = 0
        self._dt_runs: list[tuple[int, float]] = []  # (count, |dt|) of fixed steps: Python floats
        self._dt_tensors: list[Tensor] = []  # adaptive steps: device scalars, read once at the end
        self.stats: dict[str, Any] = {}
        for cb in self.callbacks:
            cb.on_start(self.t0, self.t1, u0)

    # -- saving ----------------------------------------------------------------------------------

    def _append(self, t: float, u: Tensor) -> None:
        self.times.append(float(t))
        self.states.append(u)
        for cb in self.callbacks:
            cb.on_save(float(t), u)

    def save(self, t: float, u: Tensor) -> None:
        """A grid point reached: kept when it is one the caller asked for."""
        if self.save_at is None or float(t) in self.save_at:
            self._append(t, u)

    def beyond_last(self, t: float) -> bool:
        return not self.times or self.direction * (float(t) - self.times[-1]) > 0

    def save_stop(self, t: float, u: Tensor) -> None:
        """The state where a run stopped: always kept, unless a state at that time is already saved."""
        if self.beyond_last(t):
            self._append(t, u)

    # -- watching --------------------------------------------------------------------------------

    def begin(self, u0: Tensor) -> bool:
        """Saves u0 and checks it; False (with the status set) when the run cannot start."""
        self.save(self.t0, u0)
        self.g_values = [w.g(self.t0, u0) for w in self.watchers]
        if not bool(torch.isfinite(u0).all()):
            self.stop(Status.NONFINITE, "the initial state is non-finite", t_event=self.t0)
            self.save_stop(self.t0, u0)
            return False
        if self.threshold is not None and self.g_values[0] > 0:
            self.stop(Status.BLOWUP, f"max |u| is above {self.threshold:g} at the initial state", t_event=self.t0)
            self.save_stop(self.t0, u0)
            return False
        return True

    def watch(self, t: float, u: Tensor) -> list[int] | None:
        """Checks a new state: None if it is non-finite, else the watchers that crossed since the last
        clean state (an empty list commits this state's values as the new reference)."""
        values = [w.g(float(t), u) for w in self.watchers]
        # the blow-up guard's max |u| is nan/inf exactly when u is: spare a second host read
        if self.threshold is not None:
            finite = math.isfinite(values[0])
        else:
            finite = bool(torch.isfinite(u).all())
        if not finite:
            return None
        hits = [k for k, w in enumerate(self.watchers) if w.crossed(self.g_values[k], values[k])]
        if not hits:
            self.g_values = values
        return hits

    def locate(
        self,
        hits: Sequence[int],
        t_a: float,
        y_a: Tensor,
        f_a: Tensor,
        t_b: float,
        y_b: Tensor,
        f_b: Tensor,
        state_at: Callable[[float, bool], Tensor],
    ) -> tuple[float, Watcher, Tensor]:
        """The earliest crossing among ``hits`` inside the step [t_a, t_b]: (t_event, watcher, state).

        Each crossed watcher's g is solved on the step's cubic Hermite interpolant with brentq, and
        the earliest root is t_event. ``state_at(s, final)`` is the integrator's own state at s
        inside the step (a re-step, a re-integration, the dense output); it is probed under
        no_grad (``final=False``) and called once more for the returned state (``final=True``,
        which may carry gradients). If the integrator's state at t_event has plainly not crossed
        yet (g still on its side of zero by more than 1e-3 of g at the step's start: a step too
        coarse for a cubic, e.g. one that jumps across a singularity), t_event is refined by
        brentq on g of the integrator's own states between that time and t_b; so it is found when
        the slopes overflow and no cubic can be built.
        """
        with torch.no_grad():
            cubic = bool(torch.isfinite(f_a).all()) and bool(torch.isfinite(f_b).all())
            if cubic:
                interp = hermite(t_a, y_a.detach(), f_a.detach(), t_b, y_b.detach(), f_b.detach())
            else:  # slopes overflowed (a state near overflow): the integrator's own states only
                interp = lambda s: state_at(s, False)  # noqa: E731
            best: tuple[float, Watcher] | None = None
            for k in hits:
                w = self.watchers[k]
                t_root = find_root(lambda s, w=w: w.g(s, interp(s)), t_a, t_b)
                if best is None or self.direction * (t_root - best[0]) < 0:
                    best = (t_root, w)
            assert best is not None
            t_event, watcher = best
            if cubic and t_event not in (t_a, t_b):
                g_a = watcher.g(t_a, y_a)
                probe = state_at(t_event, False)
                g_event = watcher.g(t_event, probe) if bool(torch.isfinite(probe).all()) else math.nan
                behind = math.isfinite(g_event) and g_event != 0.0 and (g_event > 0) == (g_a > 0)
                if behind and abs(g_event) > 1e-3 * abs(g_a):
                    t_event = find_root(lambda s: watcher.g(s, state_at(s, False)), t_event, t_b)
        state = state_at(t_event, True)
        if cubic and t_event not in (t_a, t_b) and not bool(torch.isfinite(state).all()):
            state = hermite(t_a, y_a, f_a.detach(), t_b, y_b, f_b.detach())(t_event)
        return t_event, watcher, state

    def stop_at_crossing(self, t_event: float, watcher: Watcher, u: Tensor) -> None:
        """Ends the run at a located crossing with the state there as the last saved state."""
        self.stop(watcher.status, f"{watcher.name} at t={t_event:g}", t_event=t_event)
        if watcher.status is Status.BLOWUP:
            self.message = f"max |u| exceeded {self.threshold:g} at t={t_event:g}"
        self.save_stop(t_event, u)

    # -- budgets ---------------------------------------------------------------------------------

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def time_limit_message(self, t: float) -> str:
        return f"wall-time budget max_wall_time={self.max_wall_time:g}s ran out at t={t:g}"

    # -- statistics ------------------------------------------------------------------------------

    def count(self, f: Field, what: str = "f(t, u)") -> CountedField:
        return CountedField(f, self, what)

    def add_steps(self, n: int, dt: float) -> None:
        """n accepted fixed steps of size dt."""
        if n > 0:
            self.accepted += n
            self._dt_runs.append((n, abs(float(dt))))

    def add_dt(self, dt: Tensor | float) -> None:
        """One accepted adaptive step (a device scalar is read back only at the end)."""
        self.accepted += 1
        if isinstance(dt, Tensor):
            self._dt_tensors.append(dt.detach())
        else:
            self._dt_runs.append((1, abs(float(dt))))

    @property
    def steps(self) -> int:
        return self.accepted + (self.rejected or 0)

    def _dt_stats(self) -> dict[str, float]:
        count, total, lo, hi = 0, 0.0, math.inf, 0.0
        for n, dt in self._dt_runs:
            count, total, lo, hi = count + n, total + n * dt, min(lo, dt), max(hi, dt)
        if self._dt_tensors:
            d = torch.stack(self._dt_tensors).to(torch.float64).abs().cpu()
            count, total = count + d.numel(), total + float(d.sum())
            lo, hi = min(lo, float(d.min())), max(hi, float(d.max()))
        if count == 0:
            return {"dt_min": math.nan, "dt_mean": math.nan, "dt_max": math.nan}
        return {"dt_min": lo, "dt_mean": total / count, "dt_max": hi}

    # -- the end ---------------------------------------------------------------------------------

    def stop(self, status: Status, message: str, t_event: float | None = None) -> None:
        self.status, self.message, self.t_event = status, message, t_event

    def _stiffness_hint(self, dt: dict[str, float]) -> str:
        if not self.adaptive or self.status not in (Status.TIME_LIMIT, Status.MAX_STEPS, Status.STEP_UNDERFLOW):
            return ""
        if not self.states or not bool(torch.isfinite(self.states[-1]).all()):
            return ""
        # a state that grew by orders of magnitude is running into a singularity, not stiffness
        scale = max(1.0, float(self.u0.detach().abs().amax())) if self.u0.numel() else 1.0
        if float(self.states[-1].detach().abs().amax()) > 1e3 * scale:
            return ""
        attempts = self.steps
        rejected = self.rejected or 0
        many_rejected = attempts >= MIN_STEPS_FOR_HINT and rejected >= REJECTED_FRACTION * attempts
        tiny = self.accepted >= MIN_STEPS_FOR_HINT and dt["dt_mean"] <= TINY_STEP_FRACTION * self.span
        if not (many_rejected or tiny):
            return ""
        why = f"mean step {dt['dt_mean']:.3g} over a span of {self.span:g}"
        if self.rejected is not None:
            why += f", {rejected} of {attempts} steps rejected"
        return f"; the step size looks limited by stiffness ({why}): try a stiff method, {STIFF_ADVICE}"

    def finish(self, **extra: Any) -> Solution:
        """Assembles the Solution (and tells the callbacks)."""
        if not self.states:  # nothing requested was reached: keep the initial state at least
            self._append(self.t0, self.u0)
        dt = self._dt_stats()
        message = self.message + self._stiffness_hint(dt)
        stats: dict[str, Any] = {
            "nfe": self.nfe,
            "steps": self.steps,
            "accepted": self.accepted,
            "rejected": self.rejected,
            **dt,
            "wall_time": time.perf_counter() - self.start_time,
            "method": self.method,
            **self.stats,
            **extra,
        }
        sol = Solution(
            t=torch.tensor(self.times, dtype=torch.float64),
            u=torch.stack(self.states),
            status=self.status,
            stats=stats,
            t_event=self.t_event,
            message=message,
        )
        for cb in self.callbacks:
            cb.on_finish(sol)
        return sol
