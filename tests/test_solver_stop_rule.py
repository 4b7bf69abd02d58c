"""One stop rule for every driver (fixed rk4, torchdiffeq dopri5, scipy RK45), adjoint or not.

At a blow-up or a terminal event the last saved state is the state at ``t_event``; a state that
goes non-finite without crossing the threshold first is ``nonfinite`` and keeps its last finite
state. Problems with known answers: du/dt = u from 1 crosses e³ at t = 3; du/dt = u² from 1 is
infinite at t = 1.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

import solvers
from solvers import Status

T_EVAL = torch.linspace(0, 5, 9, dtype=torch.float64)  # 0, 0.625, ..., 2.5, 3.125, ...: 3 lies between
SETTINGS = {
    "rk4": {"dt": 0.01},
    "dopri5": {"rtol": 1e-10, "atol": 1e-10},
    "scipy-RK45": {"rtol": 1e-10, "atol": 1e-10},
}
RUNS = [("rk4", False), ("rk4", True), ("dopri5", False), ("dopri5", True), ("scipy-RK45", False)]


def grow(t, u):
    return u


def square(t, u):
    return u * u


@pytest.mark.parametrize(("method", "adjoint"), RUNS)
def test_a_blowup_ends_with_the_state_at_the_located_crossing_as_the_last_saved_state(method, adjoint):
    u0 = torch.ones(3, dtype=torch.float64, requires_grad=adjoint)
    sol = solvers.solve(
        grow, u0, (0.0, 5.0), method=method, t_eval=T_EVAL, blowup=math.exp(3), adjoint=adjoint, **SETTINGS[method]
    )
    assert sol.status == Status.BLOWUP
    assert abs(sol.t_event - 3.0) < 1e-7
    assert float(sol.t[-1]) == sol.t_event
    assert torch.equal(sol.t[:-1], T_EVAL[:5])  # every save point before the crossing, nothing after
    assert float(sol.u[-1].detach().abs().max()) == pytest.approx(math.exp(3), rel=1e-7)
    if adjoint:
        # the state at the stop carries its gradient: d u(t_event) / d u0 = e^t_event
        (grad,) = torch.autograd.grad(sol.u[-1].sum(), u0)
        assert torch.allclose(grad, torch.full((3,), math.exp(sol.t_event), dtype=torch.float64), rtol=1e-6)


def test_a_fixed_step_blowup_between_guard_reads_rewinds_to_the_step_that_crossed():
    # one interval of 500 steps: the guard is read every 32 steps, and step 301 crosses (rk4's
    # e^3.00 is a hair below e³, so the crossing lies just after t = 3.00, 13 steps into a block)
    sol = solvers.solve(grow, torch.ones(2, dtype=torch.float64), (0.0, 5.0), method="rk4", dt=0.01, blowup=math.exp(3))
    assert sol.status == Status.BLOWUP
    assert sol.t.tolist() == [0.0, sol.t_event]
    assert abs(sol.t_event - 3.0) < 1e-8
    assert 0 < sol.t_event - 3.0 < 1e-8
    assert sol.stats["steps"] == 301 and sol.stats["dt_min"] < 1e-6  # 300 full steps and the partial one
    assert float(sol.u[-1, 0]) == pytest.approx(math.exp(3), rel=1e-9)


@pytest.mark.parametrize(("method", "adjoint"), RUNS)
def test_a_finite_time_singularity_is_a_blowup_before_it_is_a_non_finite_state(method, adjoint):
    u0 = torch.ones(2, dtype=torch.float64, requires_grad=adjoint)
    sol = solvers.solve(square, u0, (0.0, 2.0), method=method, blowup=1e6, adjoint=adjoint, **SETTINGS[method])
    assert sol.status == Status.BLOWUP
    assert torch.isfinite(sol.u).all()
    assert float(sol.t[-1]) == sol.t_event
    assert float(sol.u[-1].detach().abs().max()) == pytest.approx(1e6, rel=1e-6)
    if method == "rk4":
        # the rk4 step from t = 1.00 (u = 820) jumps to 1e13: the crossing is inside that step
        assert 1.0 < sol.t_event < 1.01
    else:
        assert abs(sol.t_event - (1 - 1e-6)) < 1e-9  # u = 1/(1 - t) = 1e6


def test_a_fixed_step_run_that_overflows_without_a_threshold_is_nonfinite_with_its_last_finite_state():
    sol = solvers.solve(square, torch.ones(2, dtype=torch.float64), (0.0, 2.0), method="rk4", dt=0.01, blowup=None)
    assert sol.status == Status.NONFINITE
    assert torch.isfinite(sol.u).all()
    # the rk4 states of u' = u² are finite up to t = 1.02 (u = 4.8e173) and overflow at t = 1.03
    assert sol.t.tolist() == pytest.approx([0.0, 1.02])
    assert sol.t_event == pytest.approx(1.03)
    assert float(sol.u[-1, 0]) == pytest.approx(4.7751776309803657e173, rel=1e-9)


def test_a_fixed_step_blowup_just_before_an_overflow_in_the_same_guard_block_is_still_a_blowup():
    # threshold 1e100: step 101 reaches 1e13 and step 102 4.8e173, step 103 overflows: all three
    # between two reads of the guard, which used to see only the overflow at the read
    sol = solvers.solve(square, torch.ones(2, dtype=torch.float64), (0.0, 2.0), method="rk4", dt=0.01, blowup=1e100)
    assert sol.status == Status.BLOWUP
    assert 1.01 < sol.t_event < 1.02 and float(sol.t[-1]) == sol.t_event
    assert float(sol.u[-1].max()) == pytest.approx(1e100, rel=1e-6)


@pytest.mark.parametrize(("method", "adjoint"), RUNS)
def test_a_terminal_event_ends_with_the_state_at_the_event(method, adjoint):
    # |u| = √3 eᵗ crosses 10 at t = ln(10/√3)
    u0 = torch.ones(3, dtype=torch.float64, requires_grad=adjoint)
    crossing = math.log(10 / math.sqrt(3))
    sol = solvers.solve(
        grow, u0, (0.0, 5.0), method=method, t_eval=T_EVAL, events=[solvers.norm_above(10.0)], adjoint=adjoint,
        **SETTINGS[method],
    )
    assert sol.status == Status.EVENT and sol.ok
    assert abs(sol.t_event - crossing) < 1e-7
    assert float(sol.t[-1]) == sol.t_event and torch.equal(sol.t[:-1], T_EVAL[:3])
    assert float(sol.u[-1].detach().norm()) == pytest.approx(10.0, rel=1e-7)


def test_a_fixed_step_event_is_located_on_the_cubic_hermite_interpolant_not_a_straight_line():
    # a straight line between two rk4 steps of 0.1 misses ln 2 by ~1e-3; the cubic by ~1e-7
    sol = solvers.solve(
        grow, torch.ones(1, dtype=torch.float64), (0.0, 5.0), method="rk4", dt=0.1, events=[solvers.norm_above(2.0)]
    )
    assert sol.status == Status.EVENT
    assert abs(sol.t_event - math.log(2.0)) < 1e-6
    assert float(sol.u[-1, 0]) == pytest.approx(2.0, rel=1e-6)


def test_the_adjoint_fixed_grid_checks_the_guard_every_step_not_only_at_save_points():
    u0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    sol = solvers.solve(grow, u0, (0.0, 30.0), method="rk4", dt=0.01, blowup=math.exp(3), adjoint=True)
    assert sol.status == Status.BLOWUP
    assert abs(sol.t_event - 3.0) < 1e-8 and float(sol.t[-1]) == sol.t_event
    assert sol.stats["steps"] == 301


def test_the_adjoint_fixed_grid_stops_at_a_terminal_event():
    u0 = torch.ones(3, dtype=torch.float64, requires_grad=True)
    sol = solvers.solve(
        grow, u0, (0.0, 30.0), method="rk4", dt=0.01, events=[solvers.norm_above(10.0)], adjoint=True, blowup=None
    )
    assert sol.status == Status.EVENT
    assert abs(sol.t_event - math.log(10 / math.sqrt(3))) < 1e-8
    (grad,) = torch.autograd.grad(sol.u[-1].sum(), u0)
    assert torch.allclose(grad, torch.full((3,), math.exp(sol.t_event), dtype=torch.float64), rtol=1e-8)


def test_the_adjoint_fixed_grid_gives_the_same_gradient_as_backprop_at_a_stop():
    weight = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    field = lambda t, u: weight * torch.sinh(u)  # noqa: E731
    grads = []
    for adjoint in (False, True):
        u0 = torch.full((2,), 0.5, dtype=torch.float64)
        sol = solvers.solve(
            field, u0, (0.0, 10.0), method="rk4", dt=0.01, t_eval=torch.linspace(0, 10, 6), blowup=50.0,
            adjoint=adjoint,
        )
        assert sol.status == Status.BLOWUP
        grads.append((sol.t_event, torch.autograd.grad(sol.u.sum(), weight)[0]))
    assert grads[0][0] == grads[1][0]
    assert torch.allclose(grads[0][1], grads[1][1], rtol=1e-12)


@pytest.mark.parametrize("method", ["rk4", "dopri5", "scipy-RK45"])
def test_an_initial_state_above_the_threshold_is_a_blowup_at_t0_for_every_driver(method):
    u0 = torch.full((2,), 10.0, dtype=torch.float64)
    sol = solvers.solve(grow, u0, (0.0, 1.0), method=method, blowup=1.0, **SETTINGS[method])
    assert sol.status == Status.BLOWUP and sol.t_event == 0.0
    assert sol.t.tolist() == [0.0] and torch.equal(sol.u[0], u0)


class SlowDecay:
    """du/dt = −u, sleeping a little in each call, so that a wall-time budget runs out mid-run."""

    def __init__(self, pause: float):
        self.pause = pause

    def __call__(self, t, u):
        time.sleep(self.pause)
        return -u


@pytest.mark.parametrize(("method", "adjoint"), [("rk4", False), ("rk4", True), ("dopri5", False)])
def test_a_wall_time_budget_ends_with_time_limit_and_the_state_reached(method, adjoint):
    u0 = torch.ones(2, dtype=torch.float64, requires_grad=adjoint)
    start = time.perf_counter()
    sol = solvers.solve(
        SlowDecay(0.002), u0, (0.0, 100.0), method=method, max_wall_time=0.3, adjoint=adjoint,
        **({"dt": 0.01} if method == "rk4" else {"rtol": 1e-10, "atol": 1e-12}),
    )
    assert time.perf_counter() - start < 3.0
    assert sol.status == Status.TIME_LIMIT and not sol.ok
    assert "max_wall_time=0.3s" in sol.message
    assert 0.0 < float(sol.t[-1]) < 100.0
    assert torch.allclose(sol.u[-1].detach(), torch.exp(-sol.t[-1]).expand(2), rtol=1e-8)
    if adjoint:
        (grad,) = torch.autograd.grad(sol.u[-1].sum(), u0)
        assert torch.allclose(grad, torch.exp(-sol.t[-1]).expand(2), rtol=1e-8)


def test_a_step_budget_ending_inside_an_interval_saves_the_state_reached_on_the_adjoint_path_too():
    u0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
    sol = solvers.solve(grow, u0, (0.0, 1.0), method="rk4", dt=0.01, max_steps=25, adjoint=True)
    assert sol.status == Status.MAX_STEPS and sol.stats["steps"] == 25
    assert sol.t.tolist() == pytest.approx([0.0, 0.25])
    (grad,) = torch.autograd.grad(sol.u[-1].sum(), u0)
    assert torch.allclose(grad, torch.full((2,), math.exp(0.25), dtype=torch.float64), rtol=1e-9)
