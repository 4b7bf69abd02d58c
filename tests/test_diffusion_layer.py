"""The PDE Diffusion Layer: CFL-bounded τ, non-expansiveness, masks, causality, spectrum."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pdesim.diffusion_layer import PDEDiffusion, heat_step
from solvers.spectral import Laplacian1D, dct2

F64 = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _layer(dim: int, scales=(1,), seed: int = 0, theta_scale: float = 2.0, **kwargs) -> PDEDiffusion:
    """A float64 layer with random θ and φ, so tests never rely on the symmetric initialization."""
    layer = PDEDiffusion(dim, scales, **kwargs).double()
    with torch.no_grad():
        layer.theta.copy_(theta_scale * _randn(*layer.theta.shape, seed=seed))
        layer.phi.copy_(_randn(*layer.phi.shape, seed=seed + 1))
    return layer


def _runs(mask_row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, stop) of each maximal run of True in a 1-D bool mask (test helper, loops allowed)."""
    runs, start = [], None
    for i, valid in enumerate([*mask_row.tolist(), False]):
        if valid and start is None:
            start = i
        elif not valid and start is not None:
            runs.append((start, i))
            start = None
    return runs


# -- stability -------------------------------------------------------------------------------


@st.composite
def _cases(draw):
    batch, n, dim = draw(st.integers(1, 3)), draw(st.integers(1, 24)), draw(st.integers(1, 4))
    scales = draw(st.lists(st.sampled_from([1, 2, 3, 4, 8]), min_size=1, max_size=5, unique=True))
    theta_scale = draw(st.sampled_from([0.5, 5.0, 60.0]))
    mask_kind = draw(st.sampled_from(["none", "right", "arbitrary"]))
    return dict(
        batch=batch,
        n=n,
        dim=dim,
        scales=tuple(scales),
        theta_scale=theta_scale,
        mask_kind=mask_kind,
        causal=draw(st.booleans()),
        per_channel=draw(st.booleans()),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _case_layer_and_mask(case, gen: torch.Generator) -> tuple[PDEDiffusion, torch.Tensor | None]:
    layer = PDEDiffusion(case["dim"], case["scales"], per_channel=case["per_channel"], causal=case["causal"]).double()
    with torch.no_grad():
        layer.theta.copy_(case["theta_scale"] * torch.randn(layer.theta.shape, generator=gen, dtype=F64))
        layer.phi.copy_(case["theta_scale"] * torch.randn(layer.phi.shape, generator=gen, dtype=F64))
    batch, n = case["batch"], case["n"]
    if case["mask_kind"] == "none":
        return layer, None
    if case["mask_kind"] == "right":
        return layer, torch.arange(n) < torch.randint(0, n + 1, (batch, 1), generator=gen)
    return layer, torch.rand(batch, n, generator=gen) < 0.7


@settings(max_examples=100, deadline=None)
@given(_cases())
def test_every_layer_is_non_expansive_in_l2_and_max_norm_per_sequence_and_channel(case):
    gen = torch.Generator().manual_seed(case["seed"])
    layer, mask = _case_layer_and_mask(case, gen)
    x = torch.randn(case["batch"], case["n"], case["dim"], generator=gen, dtype=F64)
    x = x * 10 ** torch.randint(-3, 4, (1,), generator=gen)
    y = layer(x, mask)

    assert y.shape == x.shape
    assert torch.all(y.norm(dim=1) <= x.norm(dim=1) * (1 + 1e-6))
    # A convex combination is bounded by its largest term exactly. 1e-12 only absorbs rounding.
    assert torch.all(y.abs().amax(dim=1) <= x.abs().amax(dim=1) * (1 + 1e-12))


@settings(max_examples=100, deadline=None)
@given(_cases())
def test_every_layers_operator_has_l2_and_max_norm_at_most_one(case):
    """The layer is linear in X, so its worst case over all inputs is an operator norm.

    Random inputs rarely find the worst case (e.g. a spike on the first token of a causal run).
    """
    gen = torch.Generator().manual_seed(case["seed"])
    layer, mask = _case_layer_and_mask(case, gen)
    n, dim = case["n"], case["dim"]
    # Column j of each channel's N×N operator is the response to the unit spike on token j.
    spikes = torch.eye(n, dtype=F64).unsqueeze(-1).expand(n, n, dim)
    for row in range(case["batch"]):
        row_mask = None if mask is None else mask[row].expand(n, n)
        operator = layer(spikes, row_mask).permute(2, 1, 0)  # (channel, output token i, input token j)
        assert torch.all(torch.linalg.matrix_norm(operator, ord=2) <= 1 + 1e-12)
        assert torch.all(operator.abs().sum(dim=-1).amax(dim=-1) <= 1 + 1e-12)


def test_tau_never_exceeds_tau_max_whatever_theta_is():
    layer = PDEDiffusion(4, (1, 2), tau_max=0.3).double()
    with torch.no_grad():
        layer.theta.copy_(torch.tensor([[1e4, 40.0, -1e4, 0.0], [math.inf, -math.inf, 1e300, -1e300]], dtype=F64))
    tau = layer.tau
    assert tau.shape == (2, 4)
    assert torch.all(tau <= 0.3) and torch.all(tau >= 0.0)
    assert tau.max().item() == 0.3


@pytest.mark.parametrize("tau_max", [0.5000001, 0.6, 1.0, 0.0, -0.1, math.nan])
def test_tau_max_outside_the_cfl_budget_is_one_clear_value_error(tau_max):
    with pytest.raises(ValueError, match=r"tau_max must lie in \(0, 0.5\]") as info:
        PDEDiffusion(8, tau_max=tau_max)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dim=0), "dim must be"),
        (dict(dim=4, scales=()), "scales must be"),
        (dict(dim=4, scales=(1, 0)), "scales must be"),
        (dict(dim=4, scales=(1.5,)), "scales must be"),
        (dict(dim=4, init_tau=0.5), "init_tau must"),
    ],
)
def test_bad_constructor_arguments_are_one_line_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        PDEDiffusion(**kwargs)
    assert "\n" not in str(info.value)


def test_tau_is_shared_across_channels_when_not_per_channel_and_init_tau_sets_its_value():
    layer = PDEDiffusion(6, (1, 4), per_channel=False, init_tau=0.1)
    assert layer.tau.shape == (2, 1)
    assert torch.allclose(layer.tau, torch.full((2, 1), 0.1), atol=1e-7)
    assert PDEDiffusion(6, (1, 4)).tau.shape == (2, 6)
    assert torch.allclose(PDEDiffusion(6).tau, torch.full((1, 6), 0.25))


# -- agreement with the discrete Laplacian ---------------------------------------------------


def test_theta_minus_40_is_the_identity_to_1e_12():
    x = _randn(2, 30, 5)
    for causal in (False, True):
        layer = _layer(5, (1, 2, 8), causal=causal)
        with torch.no_grad():
            layer.theta.fill_(-40.0)
        mask = torch.arange(30) < torch.tensor([[30], [17]])
        assert torch.allclose(layer(x), x, atol=1e-12, rtol=0)
        assert torch.allclose(layer(x, mask), x, atol=1e-12, rtol=0)


def test_single_scale_layer_is_exactly_x_plus_tau_times_the_neumann_laplacian():
    layer = _layer(5)
    x = _randn(3, 40, 5)
    expected = x + layer.tau[0] * Laplacian1D(40, "neumann", dim=-2).apply(x)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("dilation", [2, 3, 4, 8])
def test_dilated_scale_is_delta_squared_times_the_dilated_neumann_laplacian(dilation):
    layer = _layer(3, (dilation,))
    x = _randn(2, 21, 3)
    lap = Laplacian1D(21, "neumann", dim=-2, dilation=dilation)
    expected = x + layer.tau[0] * dilation**2 * lap.apply(x)
    assert torch.allclose(layer(x), expected, atol=1e-12, rtol=0)


def test_dilation_longer_than_the_sequence_keeps_reflecting_and_is_the_symmetric_dct_step():
    n, dilation, tau = 3, 8, 0.4
    x = _randn(1, n, 2)
    y = heat_step(x, tau, dilation)
    k = torch.arange(n, dtype=F64).unsqueeze(-1)
    multiplier = 1 - 4 * tau * torch.sin(math.pi * k * dilation / (2 * n)) ** 2
    assert torch.allclose(dct2(y, dim=-2), multiplier * dct2(x, dim=-2), atol=1e-12)


def test_multi_scale_layer_is_the_softmax_mix_of_single_scale_heat_steps():
    scales = (1, 2, 4)
    layer = _layer(4, scales)
    x = _randn(2, 19, 4)
    mask = torch.rand(2, 19, generator=torch.Generator().manual_seed(3)) < 0.6
    expected = sum(w * heat_step(x, tau, s, mask) for w, tau, s in zip(layer.weights, layer.tau, scales))
    assert torch.allclose(layer(x, mask), expected, atol=1e-13, rtol=0)


@pytest.mark.parametrize("scales", [(1,), (1, 2, 3, 8)])
def test_neumann_step_conserves_every_channels_token_mean(scales):
    layer = _layer(6, scales, theta_scale=3.0)
    x = _randn(3, 25, 6)
    assert torch.allclose(layer(x).mean(dim=1), x.mean(dim=1), atol=1e-12, rtol=0)

    mask = torch.rand(3, 25, generator=torch.Generator().manual_seed(4)) < 0.6
    mask[0] = torch.arange(25) < 11
    valid = mask.unsqueeze(-1).to(F64)
    assert torch.allclose((layer(x, mask) * valid).sum(dim=1), (x * valid).sum(dim=1), atol=1e-12, rtol=0)


# -- masks ------------------------------------------------------------------------------------


def _masks() -> torch.Tensor:
    right = torch.arange(24) < torch.tensor([[24], [13], [1], [0]])
    arbitrary = torch.rand(2, 24, generator=torch.Generator().manual_seed(5)) < 0.5
    return torch.cat([right, arbitrary])


@pytest.mark.parametrize("causal", [False, True])
def test_padded_tokens_are_returned_unchanged_exactly(causal):
    layer, x, mask = _layer(3, (1, 3, 8), causal=causal), _randn(6, 24, 3), _masks()
    y = layer(x, mask)
    assert torch.equal(y[~mask], x[~mask])
    assert not torch.equal(y[mask], x[mask])


@pytest.mark.parametrize("causal", [False, True])
def test_valid_outputs_ignore_whatever_the_padding_holds(causal):
    layer, x, mask = _layer(3, (1, 2, 4), causal=causal), _randn(6, 24, 3), _masks()
    reference = layer(x, mask)[mask]
    for filler in (1e300, -1e300, math.inf, math.nan):
        assert torch.equal(layer(x.masked_fill(~mask.unsqueeze(-1), filler), mask)[mask], reference)
    noise = 1e6 * _randn(6, 24, 3, seed=9)
    assert torch.equal(layer(torch.where(mask.unsqueeze(-1), x, noise), mask)[mask], reference)


def test_padding_gradients_never_reach_valid_outputs_even_with_nan_padding():
    layer, mask = _layer(2, (1, 2)), _masks()
    x = _randn(6, 24, 2).masked_fill(~mask.unsqueeze(-1), math.nan).requires_grad_()
    layer(x, mask)[mask].sum().backward()
    assert torch.isfinite(layer.theta.grad).all() and torch.isfinite(layer.phi.grad).all()
    assert torch.all(x.grad[~mask] == 0)


def test_an_all_true_mask_is_exactly_no_mask():
    layer, x = _layer(4, (1, 2, 8)), _randn(2, 17, 4)
    assert torch.equal(layer(x, torch.ones(2, 17, dtype=torch.bool)), layer(x))


@pytest.mark.parametrize("causal", [False, True])
def test_each_run_of_valid_tokens_is_smoothed_as_its_own_sequence(causal):
    """Reflection at the last valid token: a padded sequence is the unpadded shorter one."""
    layer, x, mask = _layer(3, (1, 2, 3, 8), causal=causal), _randn(6, 24, 3), _masks()
    y = layer(x, mask)
    for b in range(mask.shape[0]):
        for start, stop in _runs(mask[b]):
            alone = layer(x[b : b + 1, start:stop])[0]
            assert torch.allclose(y[b, start:stop], alone, atol=1e-14, rtol=0)


def test_a_mask_of_the_wrong_shape_or_dtype_is_a_value_error():
    layer, x = PDEDiffusion(3), torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        layer(x, torch.ones(2, 5))
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        layer(x, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected 3 channels"):
        layer(torch.randn(2, 5, 4))


# -- causality --------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
def test_causal_output_token_has_exactly_zero_jacobian_on_every_later_input_token(masked):
    n, d = 12, 2
    layer = _layer(d, (1, 2, 3), causal=True)
    mask = (torch.rand(1, n, generator=torch.Generator().manual_seed(6)) < 0.8) if masked else None
    jac = torch.autograd.functional.jacobian(lambda x: layer(x, mask), _randn(1, n, d))[0, :, :, 0]  # (N, d, N, d)
    per_token = jac.abs().sum(dim=(1, 3))  # (i, j)
    later = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
    assert torch.all(per_token[later] == 0)
    assert per_token[~later].max() > 0


def test_symmetric_layer_is_not_causal():
    jac = torch.autograd.functional.jacobian(_layer(1), _randn(1, 6, 1))[0, :, 0, 0, :, 0]
    assert jac[2, 3] != 0


def test_causal_step_damps_the_first_token_with_zero_inflow_rather_than_copying_it():
    x = torch.tensor([[[1.0], [0.0]]], dtype=F64)
    y = heat_step(x, 0.4, causal=True)
    assert torch.allclose(y[0, :, 0], torch.tensor([0.6, 0.4], dtype=F64), atol=1e-15)
    # A copy ghost would give (1, 0.4), whose ℓ2 norm exceeds ‖x‖ = 1.
    assert y.norm() <= x.norm()


# -- spectrum ---------------------------------------------------------------------------------


def test_transfer_function_is_the_neumann_eigenvalue_of_the_multi_scale_step():
    n, scales = 16, (1, 2, 3, 8)
    layer = _layer(3, scales)
    omega = math.pi * torch.arange(n, dtype=F64) / n
    h = layer.transfer_function(omega)
    assert h.shape == (n, 3)

    expected = sum(
        w * (1 + tau * s**2 * Laplacian1D(n, "neumann", dilation=s).eigenvalues().unsqueeze(-1))
        for w, tau, s in zip(layer.weights, layer.tau, scales)
    )
    assert torch.allclose(h, expected, atol=1e-12, rtol=0)

    x = _randn(2, n, 3)
    assert torch.allclose(dct2(layer(x), dim=-2), h * dct2(x, dim=-2), atol=1e-12, rtol=0)


def test_transfer_function_is_at_most_one_in_magnitude_and_one_at_zero_frequency():
    omega = torch.linspace(0, math.pi, 101, dtype=F64)
    for causal in (False, True):
        layer = _layer(4, (1, 2, 4), causal=causal, per_channel=False)
        h = layer.transfer_function(omega)
        assert h.shape == (101, 1)
        assert h.is_complex() == causal
        assert torch.all(h.abs() <= 1 + 1e-12)
        assert torch.allclose(h[0], torch.ones_like(h[0]), atol=1e-12)


# -- practicalities ----------------------------------------------------------------------------


def test_a_hundred_thousand_tokens_run_in_linear_memory():
    layer = PDEDiffusion(8, (1, 2, 4, 8))
    x = torch.randn(1, 100_000, 8)
    mask = torch.ones(1, 100_000, dtype=torch.bool)
    mask[:, 90_000:] = False
    with torch.no_grad():
        assert layer(x).shape == (1, 100_000, 8)
        assert layer(x, mask).shape == (1, 100_000, 8)


def test_float32_input_gives_float32_output_and_trainable_tau_and_weights():
    layer = PDEDiffusion(4, (1, 2))
    x = torch.randn(2, 9, 4)
    y = layer(x, torch.arange(9) < torch.tensor([[9], [5]]))
    assert y.dtype == torch.float32
    (y * torch.randn_like(y)).sum().backward()
    assert layer.theta.grad.abs().sum() > 0 and layer.phi.grad.abs().sum() > 0


def test_extra_repr_names_the_configuration():
    text = repr(PDEDiffusion(8, (1, 4), tau_max=0.25, per_channel=False, causal=True))
    assert "dim=8, scales=(1, 4), tau_max=0.25, per_channel=False, causal=True" in text
