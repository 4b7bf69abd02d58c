"""Events: scalar functions of (t, u) whose sign change stops (or marks) a run.

The blow-up guard (max |u| over a threshold, or a non-finite state) is built into every
integrator through ``solve(..., blowup=...)``; the events here are the ones a user asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Event:
    """Fires where ``fn(t, u)`` changes sign between two consecutive checked steps.

    ``direction`` = +1 fires only on a rise through zero, -1 only on a fall, 0 on both.
    A terminal event ends the run with status ``event`` at ``t_event``, located inside the step
    that crossed (the zero of ``fn`` on the step's cubic Hermite interpolant, by brentq); the
    state there is the run's last saved state. Every integrator uses that rule (``solvers.record``).
    A non-terminal event is not watched.
    """

    fn: Callable[[float, torch.Tensor], torch.Tensor | float]
    terminal: bool = True
    direction: int = 0
    name: str = "event"

    def value(self, t: float, u: torch.Tensor) -> float:
        with torch.no_grad():
            return float(self.fn(t, u))

    def crossed(self, before: float, after: float) -> bool:
        rising = before < 0.0 <= after
        falling = before > 0.0 >= after
        if self.direction > 0:
            return rising
        if self.direction < 0:
            return falling
        return rising or falling


def steady_state(f: Callable[[float, torch.Tensor], torch.Tensor], tol: float) -> Event:
    """Stops when the RMS velocity sqrt(mean(f(t, u)^2)) falls below ``tol``."""

    def gap(t: float, u: torch.Tensor) -> torch.Tensor:
        return f(t, u).pow(2).mean().sqrt() - tol

    return Event(gap, terminal=True, direction=-1, name="steady_state")


def norm_above(threshold: float) -> Event:
    """Stops when the Frobenius norm of the whole state rises above ``threshold``."""

    def gap(t: float, u: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(u) - threshold

    return Event(gap, terminal=True, direction=+1, name="norm_above")
