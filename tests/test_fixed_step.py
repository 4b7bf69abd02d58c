"""Fixed-step explicit Runge–Kutta: convergence orders against exact solutions, and statuses."""

import math

import pytest
import torch
from linear_systems import MatrixField, fitted_order, random_matrix

import solvers
from solvers import SolverInputError, Status

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "ralston": 2, "ssprk3": 3, "rk4": 4}


@pytest.fixture
def linear_problem():
    field = MatrixField(random_matrix(5, seed=1, shift=-0.2))
    u0 = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return field, u0


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_fitted_convergence_order_matches_theory(method, linear_problem):
    field, u0 = linear_problem
    exact = field.exact(u0, 1.0)
    steps = [1 / 8, 1 / 16, 1 / 32, 1 / 64]
    errors = [
        float((solvers.solve(field, u0, (0.0, 1.0), method=method, dt=h).u[-1] - exact).abs().max()) for h in steps
    ]
    assert abs(fitted_order(steps, errors) - ORDERS[method]) < 0.3


def test_rk4_is_accurate_at_every_save_point(linear_problem):
    field, u0 = linear_problem
    t_eval = torch.linspace(0, 2, 11, dtype=torch.float64)
    sol = solvers.solve(field, u0, (0.0, 2.0), method="rk4", dt=0.01, t_eval=t_eval)
    assert sol.status == "success" and sol.u.shape == (11, 2, 3, 5)
    assert torch.equal(sol.t, t_eval)
    for t, u in zip(sol.t.tolist(), sol.u):
        exact = field.exact(u0, t)
        assert float((u - exact).abs().max()) < 1e-9 * float(exact.abs().max())


def test_save_points_off_the_step_grid_are_hit_exactly_without_interpolation(linear_problem):
    field, u0 = linear_problem
    sol = solvers.solve(field, u0, (0.0, 1.0), method="rk4", dt=0.3, t_eval=[0.0, 0.1, 0.55, 1.0])
    assert sol.t.tolist() == [0.0, 0.1, 0.55, 1.0]
    assert sol.stats["steps"] == 1 + 2 + 2
    assert float((sol.u[2] - field.exact(u0, 0.55)).abs().max()) < 1e-4


def test_stats_count_every_evaluation_and_step(linear_problem):
    field, u0 = linear_problem
    sol = solvers.solve(field, u0, (0.0, 1.0), method="rk4", dt=0.1)
    assert sol.stats["nfe"] == 40 and sol.stats["steps"] == sol.stats["accepted"] == 10
    assert sol.stats["rejected"] == 0
    assert sol.stats["dt_min"] == pytest.approx(0.1) and sol.stats["dt_max"] == pytest.approx(0.1)


def test_backward_integration_returns_to_the_initial_state(linear_problem):
    field, u0 = linear_problem
    forward = solvers.solve(field, u0, (0.0, 1.0), method="rk4", dt=0.01).u[-1]
    back = solvers.solve(field, forward, (1.0, 0.0), method="rk4", dt=0.01).u[-1]
    assert float((back - u0).abs().max()) < 1e-9


def test_projection_after_each_step_keeps_the_state_on_the_sphere():
    rotation = MatrixField(torch.tensor([[0.0, 1.0, 0.3], [-1.0, 0.0, 0.0], [-0.3, 0.0, 0.5]], dtype=torch.float64))
    u0 = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    normalize = lambda u: u / u.norm(dim=-1, keepdim=True)
    sol = solvers.solve(
        rotation, u0, (0.0, 3.0), method="euler", dt=0.1, project=normalize, t_eval=torch.linspace(0, 3, 7)
    )
    assert torch.allclose(sol.u.norm(dim=-1), torch.ones(7, 1, dtype=torch.float64), atol=1e-14)
    free = solvers.solve(rotation, u0, (0.0, 3.0), method="euler", dt=0.1)
    assert float(free.u[-1].norm()) > 1.2


def test_exponential_growth_returns_blowup_with_the_partial_trajectory():
    grow = lambda t, u: u
    u0 = torch.ones(3, dtype=torch.float64)
    sol = solvers.solve(grow, u0, (0.0, 20.0), method="rk4", dt=0.01, t_eval=torch.linspace(0, 20, 41), blowup=1e3)
    assert sol.status == Status.BLOWUP
    assert torch.isfinite(sol.u).all()
    assert sol.t_event == pytest.approx(math.log(1e3), abs=1e-9)
    # the last saved state is the state at the located crossing, after the save points before it
    assert float(sol.t[-1]) == sol.t_event and float(sol.t[-2]) < sol.t_event
    assert sol.t[:-1].tolist() == pytest.approx(torch.linspace(0, 20, 41)[:14].tolist())
    assert float(sol.u[-1].abs().max()) == pytest.approx(1e3, rel=1e-9)


def test_a_non_finite_state_stops_the_run_and_keeps_what_was_finite():
    def poisoned(t, u):
        return u * (math.nan if t > 0.5 else 1.0)

    sol = solvers.solve(poisoned, torch.ones(2), (0.0, 1.0), method="euler", dt=0.01, t_eval=torch.linspace(0, 1, 11))
    assert sol.status == Status.NONFINITE
    # f(0.51) is the first nan: the step from 0.51 ends non-finite, so 0.51 is the last finite state
    assert torch.isfinite(sol.u).all() and sol.t[-1] == pytest.approx(0.51) and sol.t[-2] == pytest.approx(0.5)
    assert sol.t_event == pytest.approx(0.52)


def test_the_step_budget_ends_the_run_with_max_steps_and_the_state_reached():
    sol = solvers.solve(lambda t, u: -u, torch.ones(2), (0.0, 1.0), method="euler", dt=0.01, max_steps=25)
    assert sol.status == Status.MAX_STEPS
    assert sol.t[-1] == pytest.approx(0.25) and sol.stats["steps"] == 25
    assert torch.allclose(sol.u[-1], torch.full((2,), 0.99**25))


def test_ctrl_c_returns_an_interrupted_partial_solution():
    calls = {"n": 0}

    def field(t, u):
        calls["n"] += 1
        if calls["n"] == 500:
            raise KeyboardInterrupt
        return -u

    sol = solvers.solve(field, torch.ones(2), (0.0, 1.0), method="rk4", dt=0.001, t_eval=torch.linspace(0, 1, 11))
    assert sol.status == Status.INTERRUPTED
    # the save points reached, then the last completed step: call 500 is the last stage of step 125
    assert sol.t.tolist() == pytest.approx([0.0, 0.1, 0.124])
    assert sol.stats["steps"] == 124 and sol.stats["nfe"] == 500
    assert float(sol.u[-1, 0]) == pytest.approx(math.exp(-0.124), rel=1e-6)  # a float32 state


def test_a_terminal_event_stops_at_the_located_crossing():
    grow = lambda t, u: u
    sol = solvers.solve(
        grow, torch.ones(1, dtype=torch.float64), (0.0, 5.0), method="rk4", dt=0.01, events=[solvers.norm_above(2.0)]
    )
    assert sol.status == Status.EVENT
    assert sol.t_event == pytest.approx(math.log(2.0), abs=1e-4)


def test_callbacks_observe_every_requested_save_point_in_order():
    recorder = solvers.Recorder(lambda t, u: float(u.sum()))
    solvers.solve(
        lambda t, u: -u, torch.ones(1), (0.0, 1.0), method="rk4", dt=0.05, t_eval=[0.25, 0.5, 1.0], callbacks=[recorder]
    )
    assert recorder.times == [0.25, 0.5, 1.0]
    assert recorder.values == pytest.approx([math.exp(-t) for t in recorder.times], rel=1e-6)


def test_recomputing_gradients_matches_plain_backpropagation(linear_problem):
    field, u0 = linear_problem
    weight = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    f = lambda t, u: torch.tanh(weight * field(t, u))
    grads = []
    for recompute in (False, True):
        sol = solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=0.05, t_eval=torch.linspace(0, 1, 5), adjoint=recompute)
        (grad,) = torch.autograd.grad(sol.u.pow(2).sum(), weight)
        grads.append(grad)
    assert torch.allclose(grads[0], grads[1], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "rk5", "dt": 0.1}, "unknown method 'rk5'; choose one of euler"),
        ({"method": "rk4"}, "method 'rk4' is fixed-step: pass dt"),
        ({"method": "rk4", "dt": -0.1}, "dt must be a finite positive number"),
        ({"method": "rk4", "dt": 0.1, "t_eval": [0.0, 2.0]}, r"t_eval must lie within t_span=\(0, 1\)"),
        ({"method": "rk4", "dt": 0.1, "t_eval": [0.5, 0.2]}, "strictly monotone"),
        ({"method": "rk4", "dt": 0.1, "rtol": 1e-3}, "rtol/atol apply to adaptive methods"),
        ({"method": "dopri5", "project": lambda u: u}, "project= needs a fixed-step method"),
    ],
)
def test_bad_arguments_fail_with_one_clear_line(kwargs, message):
    with pytest.raises(SolverInputError, match=message) as info:
        solvers.solve(lambda t, u: -u, torch.ones(2), (0.0, 1.0), **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("size", [3, 20_000], ids=["kept-states-guard", "buffered-extremes-guard"])
def test_the_blowup_guard_locates_the_same_crossing_for_small_and_large_states(size):
    # a small state is reduced once per flush from kept references, a large one writes its
    # extremes into a buffer each step: both stop at the located crossing ln(1000) of e^t
    u0 = torch.ones(size, dtype=torch.float64)
    u0[-1] = -1.0  # the crossing is |u| > 1e3, whichever sign
    sol = solvers.solve(lambda t, u: u, u0, (0.0, 20.0), method="rk4", dt=0.01, blowup=1e3)
    assert sol.status == Status.BLOWUP
    assert sol.t_event == pytest.approx(math.log(1e3), abs=1e-9)
    assert float(sol.u[-1].abs().max()) == pytest.approx(1e3, rel=1e-9)
    assert sol.stats["accepted"] == 691  # ln(1000)/0.01 = 690.8: 690 whole steps and the located part


@pytest.mark.parametrize("size", [2, 20_000], ids=["kept-states-guard", "buffered-extremes-guard"])
def test_a_nan_in_one_entry_stops_the_run_for_small_and_large_states(size):
    def poisoned(t, u):
        du = -u.clone()
        if t > 0.5:
            du[..., -1] = math.nan
        return du

    sol = solvers.solve(poisoned, torch.ones(size), (0.0, 1.0), method="euler", dt=0.01, blowup=None)
    assert sol.status == Status.NONFINITE
    assert torch.isfinite(sol.u).all() and sol.t[-1] == pytest.approx(0.51)
    assert sol.t_event == pytest.approx(0.52)
