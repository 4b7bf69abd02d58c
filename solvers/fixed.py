"""The fixed-grid driver: steps a stepper across the save points, watches every step, stops cleanly.

Between two save points the interval is cut into n equal steps with n = Δ/dt rounded to the
nearest integer when it is one up to rounding error (float32 save times included), else rounded
up (``steps_between``), so every save point is hit exactly (no interpolation) and the step never
exceeds dt by more than that rounding. The driver owns what a stepper must not: the optional
projection after each step, the blow-up guard, user events, callbacks, the step and wall-time
budgets and Ctrl-C. Stops follow the one rule of ``solvers.record`` (the state at a located
blow-up or terminal event is the last saved state; a non-finite state keeps the last finite one).

The blow-up guard runs on the device: each step writes the state's (min, max) into a small
buffer, which is read back every ``SYNC_EVERY`` steps and at save points, so a healthy run pays
no host synchronization per step. When a read-back finds that step k crossed (or went
non-finite), the driver re-integrates from the last state it had read back clean to the state
after step k−1 (this costs nothing on a healthy run) and locates the crossing inside step k.
User events are read on the host every step (they need it), and the guard is then read with them.

With ``recompute`` (``solve(..., adjoint=True)``) the steps run in segments of ⌈√n⌉ steps (n the
steps of the whole run; a save point also ends a segment) and the backward pass recomputes one
segment at a time from its stored input: exact gradients of the discrete scheme at the cost of
one more forward pass. With the field's parameters named (an ``nn.Module`` field) a segment is a
``_Segment`` that builds no graph in the forward pass, so a run of n steps keeps √n segment inputs
and one segment's activations (O(√n)) plus the saved states; otherwise it is a non-reentrant
``torch.utils.checkpoint``, which frees the activations but keeps autograd's small per-op
bookkeeping (about 0.2 MB per rk4 step of the MasterPDE at N = 64, d = 32): O(n) nodes. The steps are still
watched one by one during the forward pass, and a stop inside a segment re-derives the states it
needs from the segment's start (itself checkpointed), so the stop rule is the same as without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from .record import CountedField, RunRecord
from .solution import Solution, Status
from .steppers import ExplicitRK, Stepper

SYNC_EVERY = 32
_FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


def steps_between(ta: float, tb: float, dt: float) -> int:
    """How many equal steps of about dt cut [ta, tb]: the nearest integer to Δ/dt when Δ/dt is one
    up to rounding, else ⌈Δ/dt⌉ (so the step is never longer than dt beyond that rounding).

    "Up to rounding" is relative: 1e-6 of Δ/dt, plus the error that save times stored in float32
    carry (a few ulps of |t|, e.g. ``torch.linspace(0, 8, 41)`` in float32 has 0.20000000298…),
    capped at 1e-3 of Δ/dt.
    """
    ratio = abs(tb - ta) / dt
    nearest = round(ratio)
    scale = max(1.0, ratio)
    tol = min(1e-3 * scale, 1e-6 * scale + 4 * _FLOAT32_EPS * max(abs(ta), abs(tb)) / dt)
    if nearest >= 1 and abs(ratio - nearest) <= tol:
        return int(nearest)
    return max(1, math.ceil(ratio))


@dataclass(frozen=True)
class _Interval:
    """One save interval: n steps of size h from ta; state s (0..n) lies at ``t(s)``."""

    ta: float
    tb: float
    n: int
    h: float

    def t(self, s: int) -> float:
        return self.tb if s == self.n else self.ta + s * self.h


def plan_grid(grid: Sequence[float], dt: float) -> list[_Interval]:
    """The steps between consecutive grid points (times taken as float64 Python floats)."""
    out = []
    for ta, tb in zip(grid[:-1], grid[1:]):
        ta, tb = float(ta), float(tb)
        n = steps_between(ta, tb, dt)
        out.append(_Interval(ta, tb, n, (tb - ta) / n))
    return out


class _Guard:
    """Watches max |u| after every step without a host sync per step.

    A small state (up to ``KEEP_STATES_UP_TO`` elements) costs the step nothing: the guard keeps
    references to the states of the last steps and reduces them all at once in ``flush``. A larger
    state, whose reduction outweighs a kernel launch, writes its (min, max) into a preallocated
    device buffer row (one fused kernel). ``flush`` reads the buffered steps back (one sync) and
    returns the label of the first step whose max |u| left [0, threshold] or was not finite.
    """

    KEEP_STATES_UP_TO = 1 << 14

    def __init__(self, threshold: float | None, like: torch.Tensor):
        self.threshold = math.inf if threshold is None else float(threshold)
        self.keep = like.numel() <= self.KEEP_STATES_UP_TO
        self.labels: list[int] = []
        self.states: list[torch.Tensor] = []
        self.maxima: list[torch.Tensor] = []  # a compiled step's own max |u| per step (``observe_maxima``)
        if not self.keep:
            self.extremes = torch.empty(SYNC_EVERY, 2, dtype=like.dtype, device=like.device)
            self.rows = [(row[0], row[1]) for row in self.extremes]  # views made once, not per step

    def observe(self, label: int, u: torch.Tensor) -> bool:
        """Buffers one step; True when the buffer is full (time to flush)."""
        labels = self.labels
        if self.keep:
            self.states.append(u)
        else:
            low, high = self.rows[len(labels)]
            torch.aminmax(u.detach() if u.requires_grad else u, out=(low, high))
        labels.append(label)
        return len(labels) == SYNC_EVERY

    def observe_maxima(self, last_label: int, maxima: torch.Tensor) -> bool:
        """Buffers the max |u| of the steps up to ``last_label`` that a compiled call reduced itself
        (no pass over the state here); True when the buffer is full."""
        self.labels.extend(range(last_label - len(maxima) + 1, last_label + 1))
        self.maxima.append(maxima)
        return len(self.labels) >= SYNC_EVERY

    def flush(self) -> int | None:
        n = len(self.labels)
        if not n:
            return None
        with torch.no_grad():
            if self.maxima:  # a compiled run buffers nothing else
                largest = torch.cat(self.maxima)
                self.maxima = []
            elif self.keep:
                # one reduction for all buffered steps (the infinity norm: max |u|, nan stays nan)
                largest = torch.linalg.vector_norm(torch.stack(self.states).reshape(n, -1), ord=math.inf, dim=1)
                self.states = []
            else:
                largest = self.extremes[:n].abs().amax(dim=1)
            ok = torch.isfinite(largest) if self.threshold == math.inf else largest <= self.threshold
            labels, self.labels = self.labels, []
            if bool(ok.all()):  # the one host read of a healthy run
                return None
            return labels[int((~ok).to(torch.uint8).argmax())]


@dataclass
class _Found:
    """What stopped a scan: a crossing at state s (guard or event), the step budget, or the clock."""

    kind: str  # "crossing" | "time"
    s: int
    base: tuple[int, torch.Tensor] | None = None  # a clean state at or before s−1 to re-integrate from
    prev: torch.Tensor | None = None  # state s−1 itself, when the scan still holds it
    hits: list[int] | None = None  # the record's verdict on state s (None: non-finite)
    checked: bool = False  # whether ``hits`` was computed


class _Segment(torch.autograd.Function):
    """Steps of one segment run without a graph; the backward pass recomputes them with one and
    differentiates with respect to the segment's input state and the field's parameters.

    Unlike ``torch.utils.checkpoint`` (non-reentrant), the forward pass builds no graph nodes at
    all, so a run keeps nothing per step: only each segment's input. The parameters must be
    named (the field's ``parameters()``): a tensor the field reads otherwise gets no gradient.
    """

    @staticmethod
    def forward(ctx: Any, forward_fn: Callable, backward_fn: Callable, u: torch.Tensor, *params: torch.Tensor):
        ctx.backward_fn = backward_fn
        ctx.save_for_backward(u, *params)
        return forward_fn(u)  # (autograd runs a Function's forward without a graph)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        u, *params = ctx.saved_tensors
        with torch.enable_grad():
            start = u.detach().requires_grad_(ctx.needs_input_grad[2])
            out = ctx.backward_fn(start)
            wanted = [start] + params
            needed = [x for x, need in zip(wanted, ctx.needs_input_grad[2:]) if need]
            grads = iter(torch.autograd.grad(out, needed, grad_out, allow_unused=True) if needed else ())
        return (None, None, *(next(grads) if need else None for need in ctx.needs_input_grad[2:]))


class _Token:
    """Lets a checkpointed scan watch its steps in the forward pass only, not in the recomputation."""

    def __init__(self) -> None:
        self.watch = True


def _advance(
    stepper: Stepper, f: Any, project: Callable[[torch.Tensor], torch.Tensor] | None
) -> Callable[[float, torch.Tensor, float], torch.Tensor]:
    """One step (then the projection) as a closure: the per-step call the scans make.

    An explicit Runge–Kutta step calls a counted field once per stage: once the field's first
    output has been checked, the closure calls the field itself and counts the stages per step.
    """
    step = stepper.step
    if isinstance(stepper, ExplicitRK) and isinstance(f, CountedField):
        counted, raw, record, stages = f, f.f, f.record, stepper.tableau.stages

        def advance(t: float, u: torch.Tensor, h: float) -> torch.Tensor:
            if counted.checked:
                record.nfe += stages
                u = step(raw, t, u, h)
            else:
                u = step(counted, t, u, h)
            return u if project is None else project(u)

        return advance
    if project is None:
        return lambda t, u, h: step(f, t, u, h)
    return lambda t, u, h: project(step(f, t, u, h))


def checkpoint_segment(total_steps: int) -> int:
    """Steps per checkpointed segment: ⌈√n⌉, so n/⌈√n⌉ segment inputs are stored and one segment
    of ⌈√n⌉ steps is recomputed at a time in the backward pass (O(√n) states in all)."""
    return max(1, math.ceil(math.sqrt(max(1, total_steps))))


class _FixedRun:
    def __init__(
        self,
        stepper: Stepper,
        f: Any,
        project: Callable[[torch.Tensor], torch.Tensor] | None,
        record: RunRecord,
        slope: Callable[[Any, torch.Tensor], torch.Tensor],
        checkpointing: bool,
        u0: torch.Tensor,
        segment: int = 1,
        advance: Callable[[float, torch.Tensor, float], torch.Tensor] | None = None,
        params: tuple[torch.Tensor, ...] | None = None,
    ):
        self.stepper, self.f, self.project = stepper, f, project
        self.record, self.slope, self.checkpointing = record, slope, checkpointing
        self.segment = max(1, segment)  # steps per checkpointed segment
        self.params = params  # the field's parameters: graph-free segments (``_Segment``); None: checkpoint
        self.advance = advance if advance is not None else _advance(stepper, f, project)
        # events are read on the host every step anyway: the guard is then read with them
        self.lazy = not record.has_events
        self.guard = _Guard(record.threshold, u0)
        self.found: _Found | None = None
        self.last = u0  # the last completed state (kept for Ctrl-C) ...
        self.position = 0  # ... and how many steps into the interval being scanned it lies

    def run_plain(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int) -> torch.Tensor:
        advance, ta, h = self.advance, iv.ta, iv.h
        for s in range(s0, s1):
            u = advance(ta + s * h, u, h)
        return u

    def rerun(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int) -> torch.Tensor:
        """States s0 → s1 again (checkpointed segment by segment when the run is), without watching."""
        if not self.checkpointing:
            return self.run_plain(u, iv, s0, s1)
        for a in range(s0, s1, self.segment):
            b = min(s1, a + self.segment)
            if self.params is not None:
                plain = lambda x, a=a, b=b: self.run_plain(x, iv, a, b)  # noqa: E731
                u = _Segment.apply(plain, plain, u, *self.params)
            else:
                u = checkpoint(self.run_plain, u, iv, a, b, use_reentrant=False)
        return u

    def scan(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int) -> torch.Tensor:
        """Steps from state s0 to s1 watching each step; sets ``self.found`` on a stop."""
        if self.lazy and not self.checkpointing and hasattr(self.advance, "run"):
            return self.scan_compiled(u, iv, s0, s1)
        self.found = None
        record, guard, lazy, advance = self.record, self.guard, self.lazy, self.advance
        observe, checkpointing = guard.observe, self.checkpointing
        deadline, ta, h = record.deadline, iv.ta, iv.h
        base = (s0, u)
        done = s0  # the step index of u (kept for Ctrl-C without an attribute write per step)
        try:
            for s in range(s0 + 1, s1 + 1):
                if deadline is not None and record.out_of_time():
                    bad = guard.flush() if lazy else None
                    self.found = _Found("crossing", bad, base) if bad is not None else _Found("time", s - 1, base)
                    return u
                u_new = advance(ta + (s - 1) * h, u, h)
                if lazy:
                    if observe(s, u_new):
                        bad = guard.flush()
                        if bad is not None:
                            self.found = _Found("crossing", bad, base)
                            return u_new
                        if not checkpointing:  # states inside a checkpoint are not kept
                            base = (s, u_new)
                else:
                    hits = record.watch(iv.t(s), u_new)
                    if hits is None or hits:
                        self.found = _Found("crossing", s, base, prev=u, hits=hits, checked=True)
                        return u_new
                u, done = u_new, s
        except KeyboardInterrupt:
            self.last, self.position = u, done
            raise
        bad = guard.flush() if lazy else None  # every scan ends at a save point or the budget
        if bad is not None:
            self.found = _Found("crossing", bad, base)
        return u

    def scan_compiled(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int) -> torch.Tensor:
        """``scan`` for a compiled step (``solvers.compiled.CompiledAdvance``): ``advance.steps`` steps per
        call, then one at a time to s1; each call returns its steps' max |u| for the guard. A stop is
        found as ``scan`` finds it: the guard names the first bad step and the driver re-integrates
        from the last clean read-back with single steps."""
        self.found = None
        record, guard, advance = self.record, self.guard, self.advance
        deadline, ta, h, block = record.deadline, iv.ta, iv.h, self.advance.steps
        base = (s0, u)
        s = s0  # the step index of u
        try:
            while s < s1:
                if deadline is not None and record.out_of_time():
                    bad = guard.flush()
                    self.found = _Found("crossing", bad, base) if bad is not None else _Found("time", s, base)
                    return u
                n = block if s + block <= s1 else 1
                u_new, maxima = advance.run(ta + s * h, u, h, n)
                if guard.observe_maxima(s + n, maxima):
                    bad = guard.flush()
                    if bad is not None:
                        self.found = _Found("crossing", bad, base)
                        return u_new
                    base = (s + n, u_new)
                u, s = u_new, s + n
        except KeyboardInterrupt:
            self.last, self.position = u, s
            raise
        bad = guard.flush()  # every scan ends at a save point or the budget
        if bad is not None:
            self.found = _Found("crossing", bad, base)
        return u

    def _scan_checkpointed(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int, token: _Token) -> torch.Tensor:
        # the watching reads no gradient (no_grad, detached), so recomputing without it repeats
        # exactly the operations autograd saw; a scan that stopped early is never recomputed,
        # because the driver drops its output
        if token.watch:
            return self.scan(u, iv, s0, s1)
        return self.run_plain(u, iv, s0, s1)

    def scan_interval(self, u: torch.Tensor, iv: _Interval, s0: int, s1: int) -> torch.Tensor:
        """``scan`` from s0 to s1; under checkpointing one segment of ``self.segment`` steps at a
        time, so a stop's ``found.base`` is its segment's start (a state outside any checkpoint)."""
        if not self.checkpointing or s1 <= s0:
            return self.scan(u, iv, s0, s1)
        for a in range(s0, s1, self.segment):
            b = min(s1, a + self.segment)
            if self.params is not None:
                out = _Segment.apply(
                    lambda x, a=a, b=b: self.scan(x, iv, a, b), lambda x, a=a, b=b: self.run_plain(x, iv, a, b),
                    u, *self.params,
                )
            else:
                token = _Token()
                out = checkpoint(self._scan_checkpointed, u, iv, a, b, token, use_reentrant=False)
                token.watch = False
            if self.found is not None:
                return out
            u = out
        return u

    def resolve_crossing(
        self, iv: _Interval, found: _Found, u_from: torch.Tensor, s_from: int, u_end: torch.Tensor
    ) -> tuple[int, torch.Tensor, torch.Tensor, list[int] | None]:
        """The states around the flagged step s and the record's verdict on state s.

        Returns (s, state s−1, state s, hits), hits None for a non-finite state s. States the scan
        no longer holds are re-integrated from the last clean state it read back (or, under
        checkpointing, from the scan's start ``u_from`` at ``s_from``).
        """
        s = found.s
        if found.prev is not None and not self.checkpointing:
            u_prev, u_bad = found.prev, u_end
        else:
            base_s, base_u = found.base if found.base is not None else (s_from, u_from)
            u_prev = self.rerun(base_u, iv, base_s, s - 1)
            u_bad = self.advance(iv.t(s - 1), u_prev, iv.h)
        hits = found.hits if found.checked else self.record.watch(iv.t(s), u_bad)
        return s, u_prev, u_bad, hits

    def stop_at_crossing(
        self, iv: _Interval, s: int, u_prev: torch.Tensor, u_bad: torch.Tensor, hits: list[int]
    ) -> None:
        record = self.record
        t_a, t_b = iv.t(s - 1), iv.t(s)
        with torch.no_grad():
            f_a, f_b = self.slope(t_a, u_prev), self.slope(t_b, u_bad)

        def state_at(t: float, final: bool) -> torch.Tensor:
            # one step of the scheme from the last state before the crossing: the state at
            # t_event is as accurate as the rest of the trajectory (and carries its gradient)
            if t == t_b:
                return u_bad
            if t == t_a:
                return u_prev
            return self.advance(t_a, u_prev, t - t_a)

        t_root, watcher, u_root = record.locate(hits, t_a, u_prev, f_a, t_b, u_bad, f_b, state_at)
        record.add_steps(s - 1, iv.h)
        if t_root != t_a:
            record.add_steps(1, t_root - t_a)
        record.stop_at_crossing(t_root, watcher, u_root)


def integrate_fixed(
    stepper: Stepper,
    f: Any,
    u0: torch.Tensor,
    grid: Sequence[float],
    *,
    dt: float,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
    record: RunRecord,
    slope: Callable[[Any, torch.Tensor], torch.Tensor],
    recompute: bool = False,
    advance: Callable[[float, torch.Tensor, float], torch.Tensor] | None = None,
    params: tuple[torch.Tensor, ...] | None = None,
) -> Solution:
    """Integrates from grid[0] through every point of ``grid``, saving the state at each.

    ``f`` is what ``stepper.step`` takes (a callable, a SplitField or a SemilinearField);
    ``slope(t, u)`` is the whole field as a callable, evaluated only to locate a crossing.
    ``record`` holds the watchers, budgets and callbacks and assembles the Solution.
    With ``recompute`` the steps run under activation checkpointing in segments of ⌈√n⌉ steps
    (see the module). ``advance(t, u, h)``, when given, replaces ``stepper.step`` then ``project``
    as the step (a compiled step, ``solvers.compiled``).
    """
    intervals = plan_grid(grid, dt)
    order = stepper.order_for(f) if hasattr(stepper, "order_for") else stepper.order
    record.stats["order"] = order
    if not record.begin(u0):
        return record.finish()
    total = min(record.max_steps, sum(iv.n for iv in intervals))
    checkpointing = recompute and torch.is_grad_enabled()
    run = _FixedRun(stepper, f, project, record, slope, checkpointing, u0, checkpoint_segment(total), advance, params)
    if checkpointing:
        record.stats["checkpoint_segment"] = run.segment
    u, done = u0, 0
    iv: _Interval | None = None
    try:
        for iv in intervals:
            limit = min(iv.n, record.max_steps - done)
            s, u_from = 0, u
            run.position = 0
            while True:
                u_end = run.scan_interval(u_from, iv, s, limit)
                found = run.found
                if found is None:
                    u = u_end
                    break
                if found.kind == "time":
                    base_s, base_u = found.base if found.base is not None else (s, u_from)
                    u_time = u_end if not run.checkpointing else run.rerun(base_u, iv, base_s, found.s)
                    record.add_steps(found.s, iv.h)
                    record.save_stop(iv.t(found.s), u_time)
                    record.stop(Status.TIME_LIMIT, record.time_limit_message(iv.t(found.s)))
                    return record.finish()
                k, u_prev, u_bad, hits = run.resolve_crossing(iv, found, u_from, s, u_end)
                if hits is None:
                    record.add_steps(k - 1, iv.h)
                    record.save_stop(iv.t(k - 1), u_prev)
                    record.stop(Status.NONFINITE, f"the state became non-finite at t={iv.t(k):g}", t_event=iv.t(k))
                    return record.finish()
                if not hits:
                    # re-integration did not reproduce the flagged step (a random field?): the
                    # re-integrated states are the trajectory now; carry on from them
                    s, u_from = k, u_bad
                    continue
                run.stop_at_crossing(iv, k, u_prev, u_bad, hits)
                return record.finish()
            run.position = 0
            if limit < iv.n:
                record.add_steps(limit, iv.h)
                record.save_stop(iv.t(limit), u)
                t_stop = iv.t(limit)
                record.stop(Status.MAX_STEPS, f"step budget max_steps={record.max_steps} ran out at t={t_stop:g}")
                return record.finish()
            record.add_steps(iv.n, iv.h)
            done += iv.n
            record.save(iv.tb, u)
    except KeyboardInterrupt:
        if iv is not None and run.position:
            record.add_steps(run.position, iv.h)
            # (inside a checkpointed interval the last state carries no usable graph: detach it)
            u_last, t_last = run.last.detach() if run.checkpointing else run.last, iv.t(run.position)
            if run.guard.flush() is None and bool(torch.isfinite(u_last).all()):
                record.save_stop(t_last, u_last)
        record.stop(Status.INTERRUPTED, f"interrupted after {record.accepted} steps")
    return record.finish()
