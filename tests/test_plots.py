"""Every plot function writes a real, non-trivial PNG headlessly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probes import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, expected):
    assert path == expected
    data = expected.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024


@pytest.fixture
def times():
    return torch.linspace(0.0, 4.0, 21, dtype=torch.float64)


def test_plot_curves_overlays_pde_and_transformer(tmp_path, times):
    series = {
        "standard (pde)": torch.exp(0.3 * times),
        "standard (transformer)": (times[::4], torch.exp(0.3 * times[::4]) * 1.05),
        "no-layernorm (pde)": np.exp(times.numpy()),
    }
    target = tmp_path / "curves" / "norms.png"
    assert_png(plots.plot_curves(target, times, series, ylabel="mean token norm", title="Norms", logy=True), target)


def test_plot_curves_with_own_times_log_axes_and_gaps(tmp_path):
    layers = torch.tensor([4.0, 8.0, 16.0, 32.0])
    errors = torch.tensor([0.2, 0.1, math.nan, 0.025])
    target = tmp_path / "consistency.png"
    path = plots.plot_curves(target, None, {"transformer vs PDE": (layers, errors)}, ylabel="max error",
                             xlabel="layers L", title="Consistency", logy=True, logx=True)
    assert_png(path, target)


def test_plot_energy(tmp_path, times):
    target = tmp_path / "energy.png"
    energies = {"E": -times, "½‖u‖²": torch.exp(-times)}
    assert_png(plots.plot_energy(target, times, energies, title="Energy"), target)


@pytest.mark.parametrize("quantity", ["norm", "channel0"])
def test_plot_kymograph(tmp_path, times, quantity):
    u = torch.randn(21, 16, 4, generator=torch.Generator().manual_seed(0)) * torch.exp(-times).view(-1, 1, 1)
    target = tmp_path / f"kymograph_{quantity}.png"
    assert_png(plots.plot_kymograph(target, times, u, title="Tokens over time", quantity=quantity), target)


def test_plot_spectrum_complex_and_real(tmp_path):
    eig = torch.complex(-torch.rand(20), torch.randn(20))
    target = tmp_path / "jacobian.png"
    assert_png(plots.plot_spectrum(target, {"Jacobian": eig}, title="Jacobian spectrum"), target)
    real = tmp_path / "laplacian.png"
    values = -4 * torch.sin(torch.arange(16) * math.pi / 32) ** 2
    assert_png(plots.plot_spectrum(real, {"numeric": values, "formula": values.numpy()}, title="Laplacian"), real)


def test_plot_transfer(tmp_path):
    omega = torch.linspace(0, math.pi, 65)
    curves = {"single τ=0.5": 1 - 2 * torch.sin(omega / 2) ** 2, "per channel": torch.stack([torch.cos(omega)] * 3, -1)}
    target = tmp_path / "transfer.png"
    assert_png(plots.plot_transfer(target, omega, curves), target)


def test_plot_bars(tmp_path):
    labels = ["none", "after_embedding", "before_attention", "after_attention"]
    target = tmp_path / "positions.png"
    path = plots.plot_bars(target, labels, [0.61, 0.65, 0.62, 0.58], [0.01, 0.02, 0.015, 0.03],
                           ylabel="accuracy", title="Diffusion layer position")
    assert_png(path, target)


def test_kymographs_side_by_side_share_a_log_colour_scale_across_decades(tmp_path, times):
    calm = torch.ones(21, 16, 4)
    exploding = torch.exp(3 * times).view(-1, 1, 1) * torch.ones(21, 16, 4)
    target = tmp_path / "kymograph.pdf"
    path = plots.plot_kymographs(target, {"standard": (times, calm), "no-layernorm": (times, exploding)})
    assert path == target and target.read_bytes().startswith(b"%PDF")
    norm = plots.colour_norm([calm.norm(dim=-1), exploding.norm(dim=-1)])
    assert type(norm).__name__ == "LogNorm" and norm.vmin == 2.0 and math.isclose(norm.vmax, 2.0 * math.exp(12))
    assert type(plots.colour_norm([calm.norm(dim=-1)])).__name__ == "Normalize"
