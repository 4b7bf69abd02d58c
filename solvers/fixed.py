"""The fixed-grid driver: steps a stepper across the save points, observes, and stops cleanly.

Between two save points the interval is cut into ⌈Δ/dt⌉ equal steps, so every save point is
hit exactly (no interpolation). The driver owns what a stepper must not: the optional projection
after each step, the blow-up guard, user events, callbacks, the step budget and Ctrl-C. The
blow-up guard runs on the device and is read back only every ``SYNC_EVERY`` steps and at save
points, so a healthy run pays no host synchronization per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from .callbacks import Callback
from .events import Event, locate
from .solution import Solution, Status
from .steppers import Stepper

SYNC_EVERY = 32


class _BlowupGuard:
    """Watches max |u| after every step without a host sync per step.

    Each step writes the state's (min, max) into a small device buffer (one fused kernel); the
    buffer is read back when it is full and at save points, and the first step whose max |u|
    left [0, threshold] (nan included) is reported with its time.
    """

    def __init__(self, threshold: float | None, like: torch.Tensor):
        self.threshold = threshold
        self.extremes = torch.empty(SYNC_EVERY, 2, dtype=like.dtype, device=like.device)
        self.times: list[float] = []
        self.first_bad: float | None = None

    def observe(self, t: float, u: torch.Tensor) -> None:
        if self.threshold is None or self.first_bad is not None:
            return
        row = self.extremes[len(self.times)]
        torch.aminmax(u.detach(), out=(row[0], row[1]))
        self.times.append(t)
        if len(self.times) == SYNC_EVERY:
            self.check()

    def check(self) -> float | None:
        """Reads the buffered steps back (one sync) and returns the first bad time, if any."""
        if self.times and self.first_bad is None:
            largest = self.extremes[: len(self.times)].abs().amax(dim=1)
            bad = (~(largest <= self.threshold)).nonzero()
            if len(bad):
                self.first_bad = self.times[int(bad[0, 0])]
            self.times.clear()
        return self.first_bad


def integrate_fixed(
    stepper: Stepper,
    u0: torch.Tensor,
    grid: Sequence[float],
    *,
    dt: float,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
    blowup: float | None,
    events: Sequence[Event],
    callbacks: Sequence[Callback],
    max_steps: int,
    recompute: bool = False,
) -> Solution:
    """Integrates from grid[0] through every point of ``grid``, saving the state at each.

    With ``recompute`` the steps of each save interval are re-run during the backward pass
    instead of being stored (exact gradients of the discrete scheme, memory O(save points)).
    """
    times: list[float] = []
    states: list[torch.Tensor] = []

    def save(t: float, u: torch.Tensor) -> None:
        times.append(t)
        states.append(u)
        for cb in callbacks:
            cb.on_save(t, u)

    save(grid[0], u0)
    guard = _BlowupGuard(blowup, u0)
    status, t_event, message = Status.SUCCESS, None, ""
    steps, dt_min, dt_max, dt_sum = 0, math.inf, 0.0, 0.0
    event_values = [ev.value(grid[0], u0) for ev in events]
    u, t_now = u0, grid[0]

    def advance(t: float, u: torch.Tensor, h: float) -> torch.Tensor:
        u = stepper.step(t, u, h)
        return project(u) if project is not None else u

    def run_interval(u: torch.Tensor, ta: float, h: float, n: int) -> torch.Tensor:
        for i in range(n):
            u = advance(ta + i * h, u, h)
        return u

    try:
        for ta, tb in zip(grid[:-1], grid[1:]):
            n = max(1, math.ceil(abs(tb - ta) / dt - 1e-9))
            h = (tb - ta) / n
            if steps + n > max_steps:
                n_allowed = max_steps - steps
                u = run_interval(u, ta, h, n_allowed)
                steps += n_allowed
                t_now = ta + n_allowed * h
                save(t_now, u)
                status, message = Status.MAX_STEPS, f"step budget max_steps={max_steps} ran out at t={t_now:g}"
                break
            dt_min, dt_max, dt_sum = min(dt_min, abs(h)), max(dt_max, abs(h)), dt_sum + n * abs(h)
            if recompute and torch.is_grad_enabled():
                u = checkpoint(run_interval, u, ta, h, n, use_reentrant=False)
                steps, t_now = steps + n, tb
                guard.observe(tb, u)
            else:
                for i in range(n):
                    t_now = tb if i == n - 1 else ta + (i + 1) * h
                    u = advance(ta + i * h, u, h)
                    steps += 1
                    guard.observe(t_now, u)
                    if events:
                        hit = _check_events(events, event_values, t_now - h, t_now, u)
                        if hit is not None:
                            t_event = hit
                            save(t_now, u)
                            status, message = Status.EVENT, f"terminal event at t={hit:g}"
                            break
                    if guard.first_bad is not None:
                        break
                if status is Status.EVENT:
                    break
            bad_at = guard.check()
            if bad_at is not None:
                t_event = bad_at
                if bool(torch.isfinite(u).all()):
                    save(t_now, u)
                    status, message = Status.BLOWUP, f"max |u| exceeded {blowup:g} at t={bad_at:g}"
                else:
                    status, message = Status.NONFINITE, f"the state became non-finite by t={bad_at:g}"
                break
            save(tb, u)
    except KeyboardInterrupt:
        status, message = Status.INTERRUPTED, f"interrupted after {steps} steps"

    stats = {
        "steps": steps,
        "accepted": steps,
        "rejected": 0,
        "dt_min": dt_min if steps else math.nan,
        "dt_max": dt_max if steps else math.nan,
        "dt_mean": dt_sum / steps if steps else math.nan,
        "order": stepper.order,
    }
    return Solution(
        t=torch.tensor(times, dtype=torch.float64),
        u=torch.stack(states),
        status=status,
        stats=stats,
        t_event=t_event,
        message=message,
    )


def _check_events(
    events: Sequence[Event], values: list[float], t_before: float, t_after: float, u: torch.Tensor
) -> float | None:
    """Updates the events' last values; returns the located time of the first terminal crossing."""
    fired = None
    for k, ev in enumerate(events):
        g = ev.value(t_after, u)
        if ev.crossed(values[k], g) and ev.terminal and fired is None:
            fired = locate(t_before, t_after, values[k], g)
        values[k] = g
    return fired
