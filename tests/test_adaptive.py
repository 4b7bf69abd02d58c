"""Adaptive integrators (torchdiffeq and scipy): accuracy, gradients, statuses, stats, callbacks."""

from __future__ import annotations

import math

import pytest
import torch
from linear_systems import MatrixField, random_matrix
from torch import nn

from solvers.adaptive import solve_scipy, solve_torchdiffeq
from solvers.callbacks import Callback
from solvers.events import Event, norm_above
from solvers.solution import SolverInputError

TORCHDIFFEQ = ("dopri5", "bosh3", "adaptive_heun", "dopri8")
SCIPY = ("RK45", "RK23", "DOP853", "BDF", "Radau", "LSODA")
BACKENDS = ("torchdiffeq", "scipy")


def run(
    backend: str,
    f,
    u0,
    t_eval,
    *,
    method: str | None = None,
    rtol=1e-8,
    atol=1e-8,
    max_steps=10**6,
    blowup=None,
    events=(),
    callbacks=(),
    adjoint=False,
):
    """Either solver with the defaults the tests share."""
    t_eval = torch.as_tensor(t_eval, dtype=torch.float64)
    common = dict(rtol=rtol, atol=atol, max_steps=max_steps, blowup=blowup, events=events, callbacks=callbacks)
    if backend == "torchdiffeq":
        return solve_torchdiffeq(f, u0, t_eval, method=method or "dopri5", adjoint=adjoint, **common)
    return solve_scipy(f, u0, t_eval, method=method or "RK45", **common)


@pytest.fixture(scope="module")
def linear():
    """A 6×6 system with eigenvalues of real part -1.25, -1.01 and +0.025, acting on the last axis."""
    field = MatrixField(random_matrix(6, 0, shift=-0.5))
    u0 = torch.randn(2, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return field, u0


def max_relative_error(field: MatrixField, u0: torch.Tensor, t: torch.Tensor, u: torch.Tensor) -> float:
    """Worst over the saved times of max|u - exact| / max|exact|."""
    exact = torch.stack([field.exact(u0, float(s)) for s in t])
    dims = tuple(range(1, u.ndim))
    return float(((u - exact).abs().amax(dims) / exact.abs().amax(dims)).max())


# -- accuracy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", TORCHDIFFEQ)
def test_each_torchdiffeq_method_meets_its_tolerance_on_a_linear_system(linear, method):
    field, u0 = linear
    t_eval = torch.linspace(0, 2, 11, dtype=torch.float64)
    sol = run("torchdiffeq", field, u0, t_eval, method=method, rtol=1e-6, atol=1e-6)
    assert sol.status == "success"
    assert sol.u.shape == (11, 2, 3, 6)
    assert torch.equal(sol.t, t_eval)
    assert max_relative_error(field, u0, sol.t, sol.u) <= 1e-4


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
def test_a_tighter_tolerance_gives_a_smaller_error(linear, method):
    field, u0 = linear
    t_eval = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)  # few save points: long steps
    loose = run("torchdiffeq", field, u0, t_eval, method=method, rtol=1e-6, atol=1e-6)
    tight = run("torchdiffeq", field, u0, t_eval, method=method, rtol=1e-9, atol=1e-9)
    err_loose = max_relative_error(field, u0, loose.t, loose.u)
    err_tight = max_relative_error(field, u0, tight.t, tight.u)
    assert err_tight <= 1e-7
    assert err_tight < err_loose / 100
    assert tight.stats["steps"] > loose.stats["steps"]


@pytest.mark.parametrize("method", SCIPY)
def test_every_scipy_method_matches_the_exact_solution(linear, method):
    field, u0 = linear
    t_eval = torch.linspace(0, 2, 11, dtype=torch.float64)
    sol = run("scipy", field, u0, t_eval, method=method, rtol=1e-9, atol=1e-12)
    assert sol.status == "success"
    assert torch.equal(sol.t, t_eval)
    # every method lands near 1e-9 here; 1e-7 leaves two orders of margin
    assert max_relative_error(field, u0, sol.t, sol.u) <= 1e-7


def test_scipy_takes_the_prefixed_name_and_returns_the_callers_dtype(linear):
    field, u0 = linear
    A32 = field.A.float()
    sol = solve_scipy(
        lambda t, u: u @ A32.T,  # f is called in u0's dtype: a float32 field for a float32 state
        u0.float(),
        torch.linspace(0, 1, 3, dtype=torch.float64),
        method="scipy-DOP853",
        rtol=1e-6,  # a float32 field: tolerances near its rounding would only shrink the steps
        atol=1e-8,
        max_steps=10**6,
        blowup=None,
        events=(),
        callbacks=(),
    )
    assert sol.status == "success" and sol.stats["method"] == "scipy-DOP853"
    assert sol.u.dtype == torch.float32
    exact = u0.float() @ torch.linalg.matrix_exp(A32).T
    assert torch.allclose(sol.u[-1], exact, rtol=1e-5, atol=1e-6)


def test_unknown_methods_are_input_errors(linear):
    field, u0 = linear
    with pytest.raises(SolverInputError):
        run("torchdiffeq", field, u0, [0.0, 1.0], method="rk4")
    with pytest.raises(SolverInputError):
        run("scipy", field, u0, [0.0, 1.0], method="scipy-Euler")


@pytest.mark.parametrize("backend", BACKENDS)
def test_integrating_backward_in_time_inverts_the_flow(linear, backend):
    field, u0 = linear
    t_eval = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    sol = run(backend, field, u0, t_eval, rtol=1e-10, atol=1e-12)
    assert sol.status == "success" and torch.equal(sol.t, t_eval)
    assert torch.allclose(sol.u[-1], field.flow(u0, -1.0), rtol=1e-7, atol=1e-9)


# -- gradients -----------------------------------------------------------------------------------


class TanhMLP(nn.Module):
    def __init__(self, d: int = 4, hidden: int = 16):
        super().__init__()
        self.inp, self.out = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, t, u):
        return self.out(torch.tanh(self.inp(u)))


def test_the_adjoint_gradient_matches_backprop_through_the_solver():
    torch.manual_seed(0)
    model = TanhMLP().double()
    u0 = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    t_eval = torch.linspace(0, 1, 5, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        sol = run("torchdiffeq", model, u0, t_eval, rtol=1e-10, atol=1e-10, adjoint=adjoint)
        assert sol.status == "success"
        loss = sol.u[-1].pow(2).sum()
        grads.append(torch.autograd.grad(loss, [u0, *model.parameters()]))
    for backprop, adjoint in zip(*grads):
        assert adjoint.abs().max() > 0
        assert float((adjoint - backprop).abs().max() / backprop.abs().max()) <= 1e-4


def test_backprop_through_the_solver_gives_the_exact_gradient_of_a_linear_flow(linear):
    field, u0 = linear
    u0 = u0.clone().requires_grad_(True)
    sol = run("torchdiffeq", field, u0, [0.0, 0.5, 1.0], rtol=1e-10, atol=1e-10)
    (grad,) = torch.autograd.grad(sol.u[-1].pow(2).sum(), [u0])
    E = torch.linalg.matrix_exp(field.A)
    exact = 2 * (u0.detach() @ E.T) @ E  # d/du0 of |u0 Eᵀ|²
    assert torch.allclose(grad, exact, rtol=1e-7, atol=1e-9)


# -- statuses ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_growth_past_the_blowup_threshold_returns_a_finite_partial_trajectory(backend):
    t_eval = torch.linspace(0, 3, 7, dtype=torch.float64)  # crossing at ln(1000)/5 ≈ 1.38
    sol = run(backend, lambda t, u: 5 * u, torch.ones(3, dtype=torch.float64), t_eval, blowup=1e3)
    crossing = math.log(1e3) / 5
    assert sol.status == "blowup"
    assert torch.isfinite(sol.u).all()
    assert abs(sol.t_event - crossing) < 1e-6
    # the t_eval points before the crossing, then the state at the crossing itself
    assert torch.equal(sol.t[:-1], t_eval[:3])
    assert float(sol.t[-2]) < sol.t_event < float(t_eval[3])
    assert float(sol.t[-1]) == sol.t_event
    assert float(sol.u[-1].abs().max()) == pytest.approx(1e3, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_finite_time_singularity_ends_in_step_underflow(backend):
    # u' = u², u(0) = 1 has the solution 1/(1 - t): the controller shrinks dt to nothing at t = 1
    sol = run(backend, lambda t, u: u * u, torch.ones(3, dtype=torch.float64), [0.0, 0.5, 1.5, 3.0])
    assert sol.status == "step_underflow"
    assert torch.isfinite(sol.u).all()
    assert abs(sol.t_event - 1.0) < 1e-3
    assert float(sol.t[1]) == 0.5 and float(sol.t[-1]) == sol.t_event
    assert float(sol.u[-1].max()) > 1e4


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tiny_step_budget_ends_with_status_max_steps_counted_over_the_whole_run(linear, backend):
    field, u0 = linear
    t_eval = torch.linspace(0, 2, 41, dtype=torch.float64)  # one step per interval at least
    sol = run(backend, field, u0, t_eval, max_steps=15)
    assert sol.status == "max_steps"
    if backend == "torchdiffeq":
        # integrated interval by interval, at least one step each: a per-interval budget never runs out
        assert sol.stats["steps"] == 15
        assert 1 < len(sol.t) <= 17
    else:
        assert sol.stats["accepted"] == 15
    assert float(sol.t[-1]) < 2.0
    assert torch.equal(sol.t[:-1], t_eval[: len(sol.t) - 1])


class InterruptOnCall:
    """du/dt = -u, but the n-th call raises KeyboardInterrupt (Ctrl-C in the middle of a step)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self, t, u):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return -u


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_in_the_field_returns_status_interrupted_with_the_states_saved_so_far(backend):
    t_eval = torch.linspace(0, 5, 51, dtype=torch.float64)
    f = InterruptOnCall(50)
    sol = run(backend, f, torch.ones(3, dtype=torch.float64), t_eval, rtol=1e-6, atol=1e-6)
    assert sol.status == "interrupted"
    assert f.calls == 50 and sol.stats["nfe"] == 50
    assert 1 < len(sol.t) < 51
    # the save points reached, then the last completed step (when it lies beyond them)
    saved = len(sol.t) - 1 if float(sol.t[-1]) not in t_eval.tolist() else len(sol.t)
    assert torch.equal(sol.t[:saved], t_eval[:saved])
    assert saved == len(sol.t) or float(t_eval[saved - 1]) < float(sol.t[-1]) < float(t_eval[saved])
    assert torch.allclose(sol.u[:, 0], torch.exp(-sol.t), rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_terminal_norm_event_stops_at_the_analytic_crossing_time(backend):
    # u' = u from (1, 1, 1): |u| = √3 eᵗ crosses 10 at t = ln(10/√3)
    sol = run(
        backend, lambda t, u: u, torch.ones(3, dtype=torch.float64), torch.linspace(0, 3, 7), events=[norm_above(10.0)]
    )
    crossing = math.log(10 / math.sqrt(3))
    assert sol.status == "event" and sol.ok
    assert abs(sol.t_event - crossing) < 1e-5
    assert float(sol.t[-1]) == sol.t_event
    assert float(sol.u[-1].norm()) == pytest.approx(10.0, rel=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_non_terminal_event_does_not_stop_the_run(backend):
    marker = Event(lambda t, u: u.norm() - 2.0, terminal=False)
    sol = run(backend, lambda t, u: u, torch.ones(3, dtype=torch.float64), [0.0, 1.0], events=[marker])
    assert sol.status == "success" and sol.t_event is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_field_that_turns_nan_returns_status_nonfinite(backend):
    def f(t, u):
        return torch.full_like(u, math.nan) if float(t) > 0.6 else -u

    sol = run(backend, f, torch.ones(3, dtype=torch.float64), torch.linspace(0, 1, 5), blowup=1e3)
    assert sol.status == "nonfinite"
    assert torch.isfinite(sol.u).all()
    # the save points before the failure, then the last finite state (every stage of an accepted
    # step was finite, and the last stage of a step lies at its end, so it lies at t <= 0.6)
    assert torch.equal(sol.t[:3], torch.tensor([0.0, 0.25, 0.5], dtype=torch.float64))
    assert len(sol.t) <= 4 and 0.5 <= float(sol.t[-1]) <= 0.6
    assert float(sol.t[-1]) <= sol.t_event <= 0.75
    assert torch.allclose(sol.u[:, 0], torch.exp(-sol.t), rtol=1e-6)


def test_an_initial_state_above_the_threshold_is_a_blowup_at_t0():
    sol = run("torchdiffeq", lambda t, u: -u, torch.full((3,), 10.0, dtype=torch.float64), [0.0, 1.0], blowup=1.0)
    assert sol.status == "blowup" and sol.t_event == 0.0 and len(sol.t) == 1


# -- stats and callbacks -------------------------------------------------------------------------


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, t, u):
        self.calls += 1
        return self.f(t, u)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stats_count_every_call_of_f_and_add_up(backend):
    # a stiff-ish nonlinear problem, so that the controller rejects some steps
    f = Counting(lambda t, u: u * u - 30.0 * u * torch.sin(10 * torch.as_tensor(t)))
    sol = run(backend, f, torch.full((4,), 0.5, dtype=torch.float64), torch.linspace(0, 2, 5), rtol=1e-6, atol=1e-9)
    stats = sol.stats
    assert sol.status == "success"
    assert stats["nfe"] == f.calls > 0
    assert stats["accepted"] + stats["rejected"] == stats["steps"]
    assert stats["rejected"] > 0
    assert 0 < stats["dt_min"] <= stats["dt_mean"] <= stats["dt_max"]
    if backend == "torchdiffeq":
        # the accepted steps tile [0, 2] exactly (the last one of each interval lands on its end)
        assert stats["dt_mean"] * stats["accepted"] == pytest.approx(2.0, rel=1e-12)


def test_the_adjoint_backward_pass_is_not_counted_as_forward_work():
    torch.manual_seed(1)
    model = TanhMLP().double()
    u0 = torch.randn(3, 4, dtype=torch.float64)
    sol = run("torchdiffeq", model, u0, [0.0, 1.0], adjoint=True)
    nfe = sol.stats["nfe"]
    sol.u[-1].sum().backward()
    assert sol.stats["nfe"] == nfe and model.inp.weight.grad is not None


class SavedTimes(Callback):
    def __init__(self):
        self.times: list[float] = []
        self.states: list[torch.Tensor] = []

    def on_save(self, t: float, u: torch.Tensor) -> None:
        self.times.append(t)
        self.states.append(u)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callbacks_see_every_saved_time_in_order(linear, backend):
    field, u0 = linear
    t_eval = torch.linspace(0, 1, 9, dtype=torch.float64)
    first, second = SavedTimes(), SavedTimes()
    sol = run(backend, field, u0, t_eval, callbacks=[first, second])
    assert first.times == second.times == t_eval.tolist() == sol.t.tolist()
    assert all(isinstance(t, float) for t in first.times)
    assert torch.equal(torch.stack(first.states), sol.u)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callbacks_also_see_the_state_at_a_stop(backend):
    cb = SavedTimes()
    sol = run(
        backend, lambda t, u: 5 * u, torch.ones(2, dtype=torch.float64), [0.0, 1.0, 2.0], blowup=1e3, callbacks=[cb]
    )
    assert sol.status == "blowup" and cb.times == sol.t.tolist() and cb.times[-1] == sol.t_event
