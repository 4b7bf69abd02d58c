"""What an integration returns: saved times and states, a status code and run statistics.

Outcomes such as an explosion are results, not errors: every integrator returns a
``Solution`` whose ``status`` says how the run ended and whose ``t``/``u`` hold what was
computed up to that point.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch


class Status(str, enum.Enum):
    """How an integration ended. Compares equal to its string value (``sol.status == "blowup"``)."""

    SUCCESS = "success"
    BLOWUP = "blowup"  # the state's max |u| crossed the blow-up threshold
    NONFINITE = "nonfinite"  # inf or nan appeared in the state
    STEP_UNDERFLOW = "step_underflow"  # an adaptive controller needed a step below its floor
    MAX_STEPS = "max_steps"  # the step budget ran out before t1
    INTERRUPTED = "interrupted"  # Ctrl-C (KeyboardInterrupt) during the run
    EVENT = "event"  # a terminal event fired
    TIME_LIMIT = "time_limit"  # the wall-time budget (solve(..., max_wall_time=...)) ran out before t1

    def __str__(self) -> str:
        return self.value

    @property
    def ok(self) -> bool:
        """True when the run reached its end time or a terminal event it was asked to stop at."""
        return self in (Status.SUCCESS, Status.EVENT)


class SolverInputError(ValueError):
    """Bad arguments to a solver: the message is one line naming the problem."""


@dataclass
class Solution:
    """States saved at ``t`` (shape ``(T, *u0.shape)``), how the run ended, and its statistics.

    ``stats`` holds ``nfe``, ``steps``, ``accepted``, ``rejected``, ``wall_time`` (seconds) and
    ``dt_min``/``dt_mean``/``dt_max``; integrators may add their own keys (e.g. ``method``).
    ``t_event`` is the time at which a stopping event (blow-up, non-finite state or a user event)
    happened, or ``None``. At a blow-up or a terminal event the last saved state is the state at
    ``t_event`` (``t[-1] == t_event``); at a non-finite state it is the last finite state
    (``t[-1] <= t_event``). The rule is the same for every integrator (see ``solvers.record``).
    """

    t: torch.Tensor
    u: torch.Tensor
    status: Status = Status.SUCCESS
    stats: dict[str, Any] = field(default_factory=dict)
    t_event: float | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return Status(self.status).ok

    @property
    def u_final(self) -> torch.Tensor:
        """The last saved state."""
        return self.u[-1]

    def __repr__(self) -> str:
        shape = tuple(self.u.shape)
        return (
            f"Solution(status={self.status!s}, saved={shape[0]}, state_shape={shape[1:]}, "
            f"t=[{float(self.t[0]):g}, {float(self.t[-1]):g}], nfe={self.stats.get('nfe')}, "
            f"t_event={self.t_event})"
        )
