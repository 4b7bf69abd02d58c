"""``solve`` checks the first evaluation of f: shape, dtype and device, one line, every driver."""

from __future__ import annotations

import pytest
import torch

import solvers
from solvers import SemilinearField, SolverInputError, SplitField
from solvers.spectral import DiagonalLinear, Laplacian1D

METHODS = {
    "rk4": {"dt": 0.1},
    "dopri5": {},
    "scipy-RK45": {},
    "scipy-BDF": {},
}

BAD_FIELDS = {
    "a reduced axis": (lambda t, u: u.sum(0), r"returned shape \(4,\) for a state of shape \(3, 4\)"),
    "a scalar": (lambda t, u: u.sum(), r"returned shape \(\) for a state of shape \(3, 4\)"),
    "a float": (lambda t, u: 1.0, "must return a torch.Tensor, got float"),
    "another dtype": (lambda t, u: -u.double(), "returned dtype torch.float64 for a state of dtype torch.float32"),
    "another device": (
        lambda t, u: torch.zeros(u.shape, dtype=u.dtype, device="meta"),
        "returned a tensor on meta for a state on cpu",
    ),
}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bad", sorted(BAD_FIELDS))
def test_a_field_returning_the_wrong_thing_is_one_clear_input_error(method, bad):
    field, message = BAD_FIELDS[bad]
    with pytest.raises(SolverInputError, match=message) as info:
        solvers.solve(field, torch.ones(3, 4), (0.0, 1.0), method=method, **METHODS[method])
    assert "\n" not in str(info.value)


def test_the_check_names_the_part_of_a_split_field():
    split = SplitField({"decay": lambda t, u: -u, "reduce": lambda t, u: u.mean(0)})
    with pytest.raises(SolverInputError, match=r"part 'reduce' of the split field returned shape \(4,\)"):
        solvers.solve(split, torch.ones(3, 4), (0.0, 1.0), method="strang", dt=0.1)


def test_the_check_names_the_nonlinear_part_of_a_semilinear_field():
    heat = DiagonalLinear([Laplacian1D(3, "neumann", dim=-2)], [0.5])
    field = SemilinearField(heat, lambda t, u: (-u).double())
    with pytest.raises(SolverInputError, match=r"the nonlinear part N\(t, u\) returned dtype torch.float64"):
        solvers.solve(field, torch.ones(3, 4), (0.0, 1.0), method="etd-rk2", dt=0.1)


def test_a_correct_field_is_checked_once_and_every_call_is_still_counted():
    calls = []

    def field(t, u):
        calls.append(t)
        return -u

    sol = solvers.solve(field, torch.ones(3, 4), (0.0, 1.0), method="rk4", dt=0.1)
    assert sol.status == "success" and sol.stats["nfe"] == len(calls) == 40
