"""The discrete Laplacian: spectrum, eigenbasis transforms, conservation and the CFL boundary."""

import math

import numpy as np
import pytest
import scipy.fft
import torch

from solvers import DiagonalLinear, Laplacian1D, dct2, dst1, idct2

CASES = [(n, bc, d) for n in (1, 2, 7, 16, 33) for bc in ("neumann", "periodic", "dirichlet") for d in (1, 2, 3)
         if d <= (n + 1 if bc == "dirichlet" else n)]


@pytest.mark.parametrize(("n", "bc", "dilation"), CASES)
def test_laplacian_eigenvalues_equal_the_closed_form(n, bc, dilation):
    lap = Laplacian1D(n, bc, dim=-1, spacing=0.5, dilation=dilation)
    matrix = lap.matrix()
    assert torch.allclose(matrix, matrix.T, atol=1e-12)
    numeric = torch.linalg.eigvalsh(matrix).sort().values
    assert torch.allclose(numeric, lap.eigenvalues().sort().values, atol=1e-10, rtol=0)


def test_neumann_formula_is_the_design_formula():
    n, h = 12, 0.5
    k = torch.arange(n, dtype=torch.float64)
    expected = -(4 / h**2) * torch.sin(math.pi * k / (2 * n)) ** 2
    assert torch.allclose(Laplacian1D(n, "neumann", spacing=h).eigenvalues(), expected, atol=1e-12)


@pytest.mark.parametrize(("n", "bc", "dilation"), CASES)
def test_the_transform_diagonalizes_the_stencil(n, bc, dilation):
    lap = Laplacian1D(n, bc, dim=-2, dilation=dilation)
    u = torch.randn(3, n, 4, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    coeffs = lap.to_spectral(u)
    assert torch.allclose(lap.from_spectral(coeffs), u, atol=1e-12)
    lam = lap.spectral_eigenvalues().reshape(-1, 1)
    assert torch.allclose(lap.from_spectral(lam * coeffs), lap.apply(u), atol=1e-10)


def test_fft_based_transforms_match_scipy():
    x = np.random.default_rng(0).standard_normal((3, 17))
    t = torch.from_numpy(x)
    assert np.allclose(dct2(t).numpy(), scipy.fft.dct(x, type=2, norm="ortho"), atol=1e-12)
    assert np.allclose(idct2(t).numpy(), scipy.fft.idct(x, type=2, norm="ortho"), atol=1e-12)
    assert np.allclose(dst1(t).numpy(), scipy.fft.dst(x, type=1, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("dilation", [1, 2, 5])
def test_neumann_diffusion_conserves_every_channels_token_mean(dilation):
    u = torch.randn(2, 20, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    D = torch.rand(6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    op = DiagonalLinear([Laplacian1D(20, "neumann", dilation=dilation)], [D])
    assert torch.allclose(op(0.0, u).sum(dim=1), torch.zeros(2, 6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(op.flow(u, 3.0).mean(dim=1), u.mean(dim=1), atol=1e-12)


def _euler_step_norm(n: int, bc: str, tau: float) -> float:
    step = torch.eye(n, dtype=torch.float64) + tau * Laplacian1D(n, bc, dim=-1).matrix()
    return float(torch.linalg.matrix_norm(step, ord=2))


@pytest.mark.parametrize("bc", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("n", [2, 8, 31, 64])
def test_explicit_diffusion_step_is_non_expansive_up_to_tau_star_and_expands_beyond(n, bc):
    tau_star = 2.0 / float(Laplacian1D(n, bc).eigenvalues().abs().max())
    assert tau_star >= 0.5 - 1e-12  # tau <= 1/2 is safe for every N and boundary
    for tau in (0.1, 0.25, 0.5, tau_star):
        assert _euler_step_norm(n, bc, tau) <= 1 + 1e-12
    assert _euler_step_norm(n, bc, tau_star * (1 + 1e-3)) > 1 + 1e-4
    # and the expansion is visible on an actual input: the highest mode grows
    worst = torch.linalg.eigh(Laplacian1D(n, bc, dim=-1).matrix()).eigenvectors[:, 0]
    stepped = worst + tau_star * 1.01 * Laplacian1D(n, bc, dim=-1).apply(worst)
    assert float(stepped.norm()) > float(worst.norm())


def test_periodic_tau_star_is_one_half_for_even_n_and_neumann_slightly_above():
    assert 2.0 / float(Laplacian1D(16, "periodic").eigenvalues().abs().max()) == pytest.approx(0.5, abs=1e-14)
    neumann = 2.0 / float(Laplacian1D(16, "neumann").eigenvalues().abs().max())
    assert neumann == pytest.approx(1 / (2 * math.cos(math.pi / 32) ** 2), abs=1e-14) and neumann > 0.5


def test_bad_operator_arguments_are_one_line():
    with pytest.raises(ValueError, match="unknown boundary condition 'robin'"):
        Laplacian1D(8, "robin")
    with pytest.raises(ValueError, match="dilation must lie in 1..8"):
        Laplacian1D(8, "neumann", dilation=9)
