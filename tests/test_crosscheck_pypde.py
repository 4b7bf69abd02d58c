"""Cross-check against py-pde, an independent solver, on the Allen–Cahn equation in 1-D.

u_t = D u_xx + u − u³ on 64 cells of width 1 with zero-flux (Neumann) walls. py-pde discretizes
it on a cell-centred grid with a ghost cell equal to the boundary cell, which is the reflecting
stencil of ``solvers.spectral.Laplacian1D(bc="neumann")``: both sides integrate the same ODE
system, so the difference at t_end measures the two integrators, not the discretizations.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from solvers.adaptive import solve_torchdiffeq
from solvers.spectral import Laplacian1D

pde = pytest.importorskip("pde")

N, D, T_END = 64, 0.7, 2.0


def smooth_random_profile(seed: int) -> np.ndarray:
    """A few low cosine modes (compatible with the walls) with seeded random amplitudes."""
    rng = np.random.default_rng(seed)
    x = (np.arange(N) + 0.5) / N
    modes = range(8)
    return sum(rng.normal() * np.cos(np.pi * k * x) / (1 + k) for k in modes)


class AllenCahn(pde.PDEBase):
    """u_t = D Δu + u − u³ with zero-flux walls, on py-pde's own operators."""

    def evolution_rate(self, state, t=0):
        return D * state.laplace(bc={"derivative": 0}) + state - state**3


def test_allen_cahn_agrees_with_py_pde_to_1e_4():
    start = time.perf_counter()
    u0 = smooth_random_profile(seed=0)

    grid = pde.CartesianGrid([[0, N]], N)
    np.testing.assert_allclose(grid.axes_coords[0], np.arange(N) + 0.5)
    # the right-hand side as a PDEBase subclass, run with the numpy backend: the equivalent
    # pde.PDE({"u": "D*laplace(u) + u - u**3"}) is compiled by numba first, which takes 3-17 s here
    reference = (
        AllenCahn()
        .solve(
            pde.ScalarField(grid, u0),
            t_range=T_END,
            solver="scipy",
            method="DOP853",
            rtol=1e-11,
            atol=1e-11,
            backend="numpy",
            tracker=None,
        )
        .data
    )

    lap = Laplacian1D(N, bc="neumann", dim=-2)

    def allen_cahn(t, u):
        return D * lap.apply(u) + u - u**3

    state = torch.tensor(u0, dtype=torch.float64).reshape(1, N, 1)
    sol = solve_torchdiffeq(
        allen_cahn,
        state,
        torch.tensor([0.0, T_END], dtype=torch.float64),
        method="dopri5",
        rtol=1e-10,
        atol=1e-10,
        adjoint=False,
        max_steps=10**6,
        blowup=None,
        events=(),
        callbacks=(),
    )
    assert sol.status == "success"
    ours = sol.u[-1].reshape(N).numpy()

    # the dynamics did something: the profile moved well away from its start
    assert np.linalg.norm(reference - u0) > 0.1 * np.linalg.norm(u0)
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 1e-4
    assert time.perf_counter() - start < 60
