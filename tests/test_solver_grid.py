"""The fixed-step grid honours dt: step counts for float32 and float64 save times."""

from __future__ import annotations

import pytest
import torch

import solvers
from solvers.fixed import steps_between


def decay(t, u):
    return -u


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("t_end", "points", "dt", "steps"), [(8.0, 41, 0.05, 160), (4.0, 41, 0.1, 40)])
def test_dt_over_save_points_takes_exactly_span_over_dt_steps(dtype, t_end, points, dt, steps):
    t_eval = torch.linspace(0, t_end, points, dtype=dtype)
    sol = solvers.solve(decay, torch.ones(2, dtype=torch.float64), (0.0, t_end), method="rk4", dt=dt, t_eval=t_eval)
    assert sol.status == "success"
    assert sol.stats["steps"] == steps
    assert sol.stats["nfe"] == 4 * steps
    assert sol.stats["dt_max"] == pytest.approx(dt, rel=1e-5)
    assert sol.t.tolist() == t_eval.double().tolist()  # the save times themselves, as given


def test_a_save_interval_that_is_not_a_multiple_of_dt_rounds_the_step_count_up():
    sol = solvers.solve(decay, torch.ones(1), (0.0, 1.0), method="euler", dt=0.3, t_eval=[0.0, 0.1, 0.55, 1.0])
    assert sol.stats["steps"] == 1 + 2 + 2
    assert sol.stats["dt_max"] <= 0.3


@pytest.mark.parametrize(
    ("ta", "tb", "dt", "n"),
    [
        (0.0, 0.2, 0.05, 4),
        (7.800000190734863, 8.0, 0.05, 4),  # float32 7.8 and 8
        (0.0, 0.2 * (1 + 1e-7), 0.05, 4),  # within rounding: the nearest integer
        (0.0, 0.2 * (1 + 1e-2), 0.05, 5),  # 1% over: one more step, never a longer one
        (0.0, 0.01, 0.05, 1),  # an interval shorter than dt is one step
        (0.0, 1.0, 0.3, 4),
    ],
)
def test_the_step_count_is_the_nearest_integer_up_to_rounding_else_rounded_up(ta, tb, dt, n):
    assert steps_between(ta, tb, dt) == n
