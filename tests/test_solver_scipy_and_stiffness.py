"""scipy from any dtype, scipy failures as statuses, and runs that cannot progress saying why."""

from __future__ import annotations

import math
import time

import pytest
import torch
from torch import nn

import solvers
from solvers import Status

SCIPY = ("scipy-RK45", "scipy-RK23", "scipy-DOP853", "scipy-BDF", "scipy-Radau", "scipy-LSODA")


def linear_model(dtype: torch.dtype) -> nn.Module:
    """u ↦ u Wᵀ + b with W = −I + a small random matrix: a stable linear field as an nn.Linear."""
    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    with torch.no_grad():
        layer.weight.mul_(0.3).sub_(torch.eye(4))
    return layer.to(dtype)


class Field(nn.Module):
    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, t, u):
        return self.layer(u)


@pytest.mark.parametrize("method", SCIPY)
def test_every_scipy_method_runs_a_float32_field_from_a_float32_state(method):
    field32 = Field(linear_model(torch.float32))
    field64 = Field(linear_model(torch.float64))
    u0 = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    sol = solvers.solve(field32, u0, (0.0, 2.0), method=method, rtol=1e-6, atol=1e-8, t_eval=[0.0, 1.0, 2.0])
    reference = solvers.solve(field64, u0.double(), (0.0, 2.0), method=method, rtol=1e-10, atol=1e-12)
    assert sol.status == "success" and sol.u.dtype == torch.float32
    # as accurate as the float32 field and the tolerance allow
    assert torch.allclose(sol.u[-1].double(), reference.u[-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["scipy-BDF", "scipy-Radau", "scipy-LSODA"])
def test_an_implicit_scipy_method_with_a_field_that_returns_nan_ends_nonfinite(method):
    def poisoned(t, u):
        return torch.full_like(u, math.nan) if t > 0.3 else -u

    sol = solvers.solve(poisoned, torch.ones(3, dtype=torch.float64), (0.0, 1.0), method=method, t_eval=[0, 0.25, 1])
    assert sol.status == Status.NONFINITE and not sol.ok
    assert torch.isfinite(sol.u).all()
    assert sol.t[:2].tolist() == [0.0, 0.25] and 0.25 < float(sol.t[-1]) <= 0.3 + 1e-9
    assert float(sol.t[-1]) <= sol.t_event
    assert torch.allclose(sol.u[:, 0], torch.exp(-sol.t), rtol=1e-4)


def stiff(t, u):
    return -1e6 * u


def test_an_explicit_adaptive_run_on_a_stiff_field_ends_at_its_time_limit_naming_stiff_methods():
    start = time.perf_counter()
    sol = solvers.solve(
        stiff, torch.ones(3, dtype=torch.float64), (0.0, 10.0), method="dopri5", rtol=1e-10, atol=1e-10, max_wall_time=1
    )
    elapsed = time.perf_counter() - start
    assert sol.status == Status.TIME_LIMIT and not sol.ok
    assert elapsed < 4.0
    assert 0 < float(sol.t[-1]) < 10.0 and torch.isfinite(sol.u).all()
    assert "limited by stiffness" in sol.message
    for name in ("etd-rk2", "imex-euler", "scipy-BDF", "scipy-Radau"):
        assert name in sol.message
    assert sol.stats["dt_mean"] < 1e-5 and sol.stats["rejected"] > 0


def test_a_step_budget_spent_on_a_stiff_field_says_so_too():
    sol = solvers.solve(
        stiff, torch.ones(3, dtype=torch.float64), (0.0, 10.0), method="scipy-RK45", rtol=1e-10, atol=1e-10,
        max_steps=2000,
    )
    assert sol.status == Status.MAX_STEPS and sol.stats["accepted"] == 2000
    assert "limited by stiffness" in sol.message and "scipy-BDF" in sol.message


def test_a_stiff_method_solves_the_same_field_and_a_plain_budget_run_gets_no_hint():
    sol = solvers.solve(stiff, torch.ones(3, dtype=torch.float64), (0.0, 10.0), method="scipy-BDF", rtol=1e-8)
    assert sol.status == "success" and sol.stats["accepted"] < 1000
    plain = solvers.solve(lambda t, u: -u, torch.ones(3), (0.0, 10.0), method="dopri5", max_steps=5)
    assert plain.status == Status.MAX_STEPS and "stiff" not in plain.message


def test_a_finite_time_singularity_is_not_mistaken_for_stiffness():
    u0 = torch.ones(3, dtype=torch.float64)
    sol = solvers.solve(lambda t, u: u * u, u0, (0.0, 3.0), method="dopri5", blowup=None)
    assert sol.status == Status.STEP_UNDERFLOW and abs(sol.t_event - 1.0) < 1e-6
    assert "stiff" not in sol.message


def test_time_limit_is_a_status_that_is_not_ok():
    assert Status.TIME_LIMIT == "time_limit" and not Status.TIME_LIMIT.ok
