"""IMEX and exponential integrators: exact heat modes beyond the CFL limit, and their orders."""

import math

import pytest
import torch
from linear_systems import fitted_order, random_matrix

import solvers
from solvers import DiagonalLinear, Laplacian1D, SemilinearField


def _heat(n: int, bc: str, D: float) -> DiagonalLinear:
    return DiagonalLinear([Laplacian1D(n, bc, dim=-2)], [D])


@pytest.mark.parametrize("bc", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("method", ["etd1", "etd-rk2"])
def test_exponential_integrators_reproduce_every_heat_mode_at_tau_ten(bc, method):
    n, D, T = 32, 0.5, 2.0
    lap = Laplacian1D(n, bc, dim=-2)
    coeffs = torch.randn(
        1, lap.spectral_eigenvalues().numel(), 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )
    if bc == "periodic":
        coeffs = torch.complex(coeffs, torch.zeros_like(coeffs))
        coeffs[:, 0].imag = 0
    u0 = lap.from_spectral(coeffs)
    field = SemilinearField(_heat(n, bc, D), lambda t, u: torch.zeros_like(u))
    dt = 20.0  # tau = D dt / h^2 = 10: forward Euler would explode
    sol = solvers.solve(field, u0, (0.0, T * 20), method=method, dt=dt, t_eval=[0.0, 20.0, 40.0])
    for t, u in zip(sol.t.tolist(), sol.u):
        decayed = lap.from_spectral(torch.exp(D * t * lap.spectral_eigenvalues()).reshape(1, -1, 1) * coeffs)
        assert float((u - decayed).abs().max()) < 1e-13


def test_every_dct_mode_decays_as_exp_lambda_t_under_neumann_heat():
    n, D, t = 16, 0.3, 1.7
    lap = Laplacian1D(n, "neumann", dim=-1)
    heat = DiagonalLinear([lap], [D])
    modes = torch.eye(n, dtype=torch.float64)  # row k: the k-th DCT basis vector in spectral space
    u0 = lap.from_spectral(modes)
    reference = solvers.solve(lambda s, u: D * lap.apply(u), u0, (0.0, t), method="scipy-Radau", rtol=1e-11, atol=1e-13)
    decay = lap.to_spectral(reference.u[-1]).diagonal()
    assert torch.allclose(decay, torch.exp(D * t * lap.eigenvalues()), atol=1e-9)
    assert torch.allclose(
        lap.to_spectral(heat.flow(u0, t)).diagonal(), torch.exp(D * t * lap.eigenvalues()), atol=1e-14
    )


def test_forward_euler_at_tau_ten_explodes_where_the_exponential_step_does_not():
    n, D = 32, 0.5
    u0 = torch.randn(1, n, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    heat = _heat(n, "neumann", D)
    euler = solvers.solve(heat, u0, (0.0, 400.0), method="euler", dt=20.0, blowup=1e6)
    assert euler.status == "blowup"
    exp = solvers.solve(
        SemilinearField(heat, lambda t, u: torch.zeros_like(u)), u0, (0.0, 400.0), method="etd1", dt=20.0
    )
    assert exp.status == "success" and float(exp.u[-1].abs().max()) <= float(u0.abs().max())


def test_imex_euler_is_stable_at_tau_ten_and_never_expands_pure_diffusion():
    n, D = 32, 0.5
    u0 = torch.randn(2, n, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    field = SemilinearField(_heat(n, "neumann", D), lambda t, u: torch.zeros_like(u))
    sol = solvers.solve(field, u0, (0.0, 200.0), method="imex-euler", dt=20.0, t_eval=torch.linspace(0, 200, 11))
    norms = sol.u.flatten(1).norm(dim=1)
    assert (norms[1:] <= norms[:-1] + 1e-12).all()
    assert torch.allclose(sol.u[-1].mean(dim=1), u0.mean(dim=1), atol=1e-12)


@pytest.mark.parametrize(("method", "order"), [("imex-euler", 1), ("etd1", 1), ("etd-rk2", 2)])
def test_semilinear_methods_converge_at_their_order_with_a_non_commuting_rest(method, order):
    n, d = 8, 3
    D = torch.tensor([0.4, 1.0, 2.5], dtype=torch.float64)
    M = random_matrix(d, seed=7)
    lap = Laplacian1D(n, "neumann", dim=-2)
    full = torch.kron(lap.matrix(), torch.diag(D)) + torch.kron(torch.eye(n, dtype=torch.float64), M)
    u0 = torch.randn(n, d, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    exact = (torch.linalg.matrix_exp(full) @ u0.reshape(-1)).reshape(n, d)
    field = SemilinearField(DiagonalLinear([lap], [D]), lambda t, u: u @ M.T)
    steps = [1 / 8, 1 / 16, 1 / 32, 1 / 64]
    errors = [
        float((solvers.solve(field, u0, (0.0, 1.0), method=method, dt=h).u[-1] - exact).abs().max()) for h in steps
    ]
    assert abs(fitted_order(steps, errors) - order) < 0.3


def test_phi_functions_are_accurate_across_the_series_switch():
    from solvers.steppers import phi1, phi2

    z = torch.tensor([-50.0, -1.0, -1e-3, -1e-5, 0.0, 1e-5], dtype=torch.float64)
    exact1 = torch.tensor([(math.exp(x) - 1) / x if x else 1.0 for x in z.tolist()], dtype=torch.float64)
    assert torch.allclose(phi1(z), exact1, rtol=1e-12)
    assert phi2(torch.tensor([0.0], dtype=torch.float64)).item() == 0.5
    assert phi2(torch.tensor([-1.0], dtype=torch.float64)).item() == pytest.approx(math.exp(-1), rel=1e-12)
    for dtype in (torch.float32, torch.float64):
        small = torch.tensor([-0.09, -0.11], dtype=dtype)
        reference = phi2(small.double())
        assert torch.allclose(phi2(small).double(), reference, rtol=1e-5)
