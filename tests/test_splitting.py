"""Lie and Strang splitting: order 1 and 2 on non-commuting linear parts with exact solutions."""

import pytest
import torch
from linear_systems import MatrixField, fitted_order, random_matrix

import solvers
from solvers import SplitField, SubFlow


@pytest.fixture
def three_parts():
    mats = [random_matrix(4, seed=s, shift=-0.1) for s in (11, 12, 13)]
    assert not torch.allclose(mats[0] @ mats[1], mats[1] @ mats[0])  # the splitting error is real
    total = MatrixField(sum(mats))
    u0 = torch.randn(2, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    return [MatrixField(m) for m in mats], total, u0


def _order(split, total, u0, method, steps=(1 / 4, 1 / 8, 1 / 16, 1 / 32)):
    exact = total.exact(u0, 1.0)
    errors = [
        float((solvers.solve(split, u0, (0.0, 1.0), method=method, dt=h).u[-1] - exact).abs().max()) for h in steps
    ]
    return fitted_order(list(steps), errors), errors


@pytest.mark.parametrize(("method", "order"), [("lie", 1), ("strang", 2)])
def test_splitting_with_exact_sub_flows_converges_at_its_order(three_parts, method, order):
    parts, total, u0 = three_parts
    split = SplitField({"a": parts[0], "b": parts[1], "c": parts[2]})
    fitted, errors = _order(split, total, u0, method)
    assert abs(fitted - order) < 0.3
    assert errors[-1] > 1e-9  # a real splitting error, not an exact answer


@pytest.mark.parametrize("sub", ["midpoint", "heun", "rk4"])
def test_strang_stays_second_order_with_second_order_sub_flows(three_parts, sub):
    parts, total, u0 = three_parts
    split = SplitField(
        {"a": parts[0], "b": SubFlow(parts[1].__call__, method=sub), "c": SubFlow(parts[2].__call__, method=sub)}
    )
    assert abs(_order(split, total, u0, "strang")[0] - 2) < 0.3


def test_lie_with_euler_sub_flows_is_first_order(three_parts):
    parts, total, u0 = three_parts
    split = SplitField({name: SubFlow(p.__call__, method="euler") for name, p in zip("abc", parts)})
    assert abs(_order(split, total, u0, "lie")[0] - 1) < 0.3


def test_commuting_parts_split_without_error():
    A = random_matrix(3, seed=5)
    parts = SplitField({"a": MatrixField(A), "b": MatrixField(2 * A)})
    u0 = torch.ones(1, 3, dtype=torch.float64)
    sol = solvers.solve(parts, u0, (0.0, 1.0), method="lie", dt=0.25)
    assert torch.allclose(sol.u[-1], MatrixField(3 * A).exact(u0, 1.0), rtol=1e-12, atol=1e-12)


def test_a_field_exposing_parts_is_split_and_counts_only_evaluated_parts(three_parts):
    parts, total, u0 = three_parts

    class Model:
        def __call__(self, t, u):
            return total(t, u)

        def parts(self):
            return {"exact": parts[0], "rk": parts[1].__call__}

    sol = solvers.solve(Model(), u0, (0.0, 1.0), method="strang", dt=0.1)
    assert sol.stats["nfe"] == 10 * 4  # one rk4 sub-flow of 4 stages per step; the exact part is free
    assert sol.stats["order"] == 2


def test_splitting_a_plain_callable_is_one_clear_line():
    with pytest.raises(solvers.SolverInputError, match="splitting methods need a SplitField"):
        solvers.solve(lambda t, u: u, torch.ones(2), (0.0, 1.0), method="lie", dt=0.1)
