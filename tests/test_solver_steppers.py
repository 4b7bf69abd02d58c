"""Steppers take the field: ``step(f, t, u, dt)``; structure and per-step-size constants are cached."""

from __future__ import annotations

import pytest
import torch
from linear_systems import MatrixField, random_matrix

import solvers
from solvers import DiagonalLinear, Laplacian1D, SemilinearField, SolverInputError, SplitField, SubFlow
from solvers.steppers import ExplicitRK, Semilinear, Splitting, explicit_rk


def test_an_rk4_step_of_exponential_growth_is_the_fourth_order_taylor_polynomial():
    rk = explicit_rk("rk4")
    assert isinstance(rk, ExplicitRK) and rk.order == 4 and not hasattr(rk, "f")
    h = 0.1
    u = rk.step(lambda t, u: u, 0.0, torch.ones(2, dtype=torch.float64), h)
    assert torch.equal(u, torch.full((2,), 1 + h + h**2 / 2 + h**3 / 6 + h**4 / 24, dtype=torch.float64))


def test_one_stepper_serves_any_field_and_calls_it_at_the_stage_times():
    rk = ExplicitRK(solvers.TABLEAUS["rk4"])
    times: list[float] = []

    def decay(t, u):
        times.append(t)
        return -u

    rk.step(decay, 1.0, torch.ones(1), 0.5)
    assert times == [1.0, 1.25, 1.25, 1.5]
    assert float(rk.step(lambda t, u: 2 * u, 0.0, torch.ones(1), 0.0)) == 1.0


def test_an_unknown_explicit_method_is_one_clear_line():
    with pytest.raises(SolverInputError, match="unknown explicit method 'rk5'; choose one of euler"):
        explicit_rk("rk5")


def test_splitting_works_out_each_fields_part_flows_once_and_shares_one_rk_per_method():
    mats = [MatrixField(random_matrix(3, seed=s)) for s in (1, 2, 3)]
    sub = [SubFlow(m.__call__, "midpoint") for m in mats[1:]]
    split = SplitField({"a": mats[0], "b": sub[0], "c": sub[1]})
    stepper = Splitting("strang")
    u = torch.ones(1, 3, dtype=torch.float64)
    stepper.step(split, 0.0, u, 0.1)
    flows = stepper.flows(split)
    stepper.step(split, 0.1, u, 0.1)
    assert stepper.flows(split) is flows
    assert flows[0].exact and flows[1].rk is flows[2].rk and flows[1].rk.order == 2
    assert stepper.order == 2 and stepper.order_for(split) == 2
    euler = SplitField({"a": SubFlow(mats[0].__call__, "euler"), "b": mats[1]})
    assert stepper.order_for(euler) == 1


class CountingHeat(DiagonalLinear):
    """A Neumann heat operator that counts how often its spectral multiplier is built."""

    def __init__(self, n: int, coefficient):
        super().__init__([Laplacian1D(n, "neumann", dim=-2)], [coefficient])
        self.built = 0

    def multiplier(self, like):
        self.built += 1
        return super().multiplier(like)


def test_a_fixed_grid_builds_the_exponential_factors_once_per_step_size():
    heat = CountingHeat(16, 0.5)
    field = SemilinearField(heat, lambda t, u: torch.sin(u))
    u0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sol = solvers.solve(field, u0, (0.0, 2.0), method="etd-rk2", dt=0.1)
    assert sol.stats["steps"] == 20 and heat.built == 1
    # the same steps with the factors rebuilt every step give the same states, bit for bit
    stepper, u = Semilinear("etd-rk2"), u0
    for k in range(20):
        stepper._cache.clear()
        u = stepper.step(field, k * 0.1, u, 0.1)
    assert torch.equal(u, sol.u[-1])


def test_an_in_place_update_of_a_coefficient_invalidates_its_cached_factors():
    coefficient = torch.tensor([0.5, 1.0], dtype=torch.float64)
    heat = CountingHeat(8, coefficient)
    field = SemilinearField(heat, lambda t, u: torch.zeros_like(u))
    stepper = Semilinear("etd1")
    u = torch.randn(8, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first = stepper.step(field, 0.0, u, 0.5)
    coefficient.mul_(2.0)
    second = stepper.step(field, 0.0, u, 0.5)
    assert heat.built == 2
    assert torch.allclose(second, heat.flow(u, 0.5), atol=1e-14) and not torch.allclose(first, second)


def test_learnable_coefficients_get_fresh_factors_each_step_and_the_same_gradient_with_recomputation():
    grads = []
    for adjoint in (False, True):
        coefficient = torch.tensor([0.3, 0.8], dtype=torch.float64, requires_grad=True)
        heat = CountingHeat(8, coefficient)
        field = SemilinearField(heat, lambda t, u: torch.tanh(u))
        u0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        sol = solvers.solve(field, u0, (0.0, 1.0), method="etd-rk2", dt=0.1, t_eval=[0.0, 0.5, 1.0], adjoint=adjoint)
        assert heat.built == 10  # one per step: factors that carry a gradient are never cached
        grads.append(torch.autograd.grad(sol.u[-1].pow(2).sum(), coefficient)[0])
    assert grads[0].abs().min() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-12)
