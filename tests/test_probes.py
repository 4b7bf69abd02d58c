"""Probes against known answers: closed forms, invariances and toy systems with exact results."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import probes
import solvers

DT = torch.float64
# torch scripts its forward-AD decompositions on first use and warns that scripting is deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=DT)


class LinearField:
    """du/dt = A u with A acting on the last axis (channels)."""

    def __init__(self, a: torch.Tensor):
        self.a = a

    def __call__(self, t, u: torch.Tensor) -> torch.Tensor:
        return u @ self.a.T


class QuadraticGradientFlow:
    """E(u) = ½ Σ_tokens uᵀQu per sample, f = −∇E = −Qu: an exact gradient flow."""

    energy_is_exact = True

    def __init__(self, q: torch.Tensor):
        self.q = q

    def __call__(self, t, u: torch.Tensor) -> torch.Tensor:
        return -u @ self.q

    def energy_parts(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        quadratic = 0.5 * ((u @ self.q) * u).flatten(1).sum(1)
        return {"quadratic": quadratic, "zero": torch.zeros_like(quadratic)}

    def energy(self, u: torch.Tensor) -> torch.Tensor:
        return sum(self.energy_parts(u).values())


def matrix_with_gap(eigenvalues: list[float], seed: int = 1) -> torch.Tensor:
    s = torch.eye(len(eigenvalues), dtype=DT) + 0.3 * randn(len(eigenvalues), len(eigenvalues), seed=seed)
    return s @ torch.diag(torch.tensor(eigenvalues, dtype=DT)) @ torch.linalg.inv(s)


def rank_one_state(batch: int = 2, tokens: int = 5, dim: int = 3) -> torch.Tensor:
    token = randn(batch, 1, dim, seed=3)
    return token.expand(batch, tokens, dim).clone()


# -- norms and drift ---------------------------------------------------------------------------------


def test_exponential_growth_has_rate_one_and_drift_e_to_the_t_minus_one():
    t = torch.linspace(0.0, 2.0, 9, dtype=DT)
    u0 = randn(2, 4, 3)
    u = torch.exp(t).view(-1, 1, 1, 1) * u0
    sizes = probes.norms(u)
    assert probes.growth_rate(t, sizes["mean_token_norm"]) == pytest.approx(1.0, abs=1e-10)
    assert probes.growth_rate(t, sizes["max_abs"]) == pytest.approx(1.0, abs=1e-10)
    torch.testing.assert_close(probes.drift(u)["relative_distance"], torch.exp(t) - 1, rtol=1e-12, atol=1e-12)


def test_norms_are_per_time_float64_batch_means():
    u = torch.zeros(3, 2, 4, 2)
    u[:, 0, 0, 0] = 3.0
    u[:, 0, 0, 1] = 4.0  # sample 0 has one token of norm 5, sample 1 is zero
    sizes = probes.norms(u)
    assert all(v.shape == (3,) and v.dtype == DT for v in sizes.values())
    torch.testing.assert_close(sizes["mean_token_norm"], torch.full((3,), 5.0 / 8, dtype=DT))
    torch.testing.assert_close(sizes["max_token_norm"], torch.full((3,), 2.5, dtype=DT))
    torch.testing.assert_close(sizes["max_abs"], torch.full((3,), 2.0, dtype=DT))


def test_growth_rate_is_nan_for_nonpositive_or_nonfinite_values():
    t = torch.arange(3.0)
    assert math.isnan(probes.growth_rate(t, torch.tensor([1.0, 0.0, 2.0])))
    assert math.isnan(probes.growth_rate(t, torch.tensor([1.0, math.inf, 2.0])))
    assert math.isnan(probes.growth_rate(t[:1], torch.tensor([1.0])))


def test_state_constant_in_time_has_no_drift():
    u = randn(2, 5, 3).expand(4, 2, 5, 3)
    result = probes.drift(u)
    torch.testing.assert_close(result["relative_distance"], torch.zeros(4, dtype=DT))
    torch.testing.assert_close(result["mean_cosine"], torch.ones(4, dtype=DT))
    torch.testing.assert_close(result["cka"], torch.ones(4, dtype=DT))


def test_cka_is_invariant_to_channel_rotation_and_isotropic_scaling():
    x = randn(2, 6, 4, seed=1)
    y = randn(2, 6, 4, seed=2)
    q, _ = torch.linalg.qr(randn(4, 4, seed=5))
    base = probes.linear_cka(x, y)
    assert bool((base > 0).all()) and bool((base < 1).all())
    torch.testing.assert_close(probes.linear_cka(x @ q, y), base)
    torch.testing.assert_close(probes.linear_cka(x, 3.5 * y), base)
    trajectory = torch.stack([x, 2.0 * x @ q])
    torch.testing.assert_close(probes.drift(trajectory)["cka"], torch.ones(2, dtype=DT))


def test_cka_agrees_between_gram_and_feature_space():
    x, y = randn(3, 5, 8, seed=1), randn(3, 5, 8, seed=2)  # N < d: Gram space
    centre = lambda m: m - m.mean(-2, keepdim=True)
    xc, yc = centre(x), centre(y)
    feature = (yc.transpose(-1, -2) @ xc).pow(2).sum((-1, -2)) / (
        (xc.transpose(-1, -2) @ xc).norm(dim=(-1, -2)) * (yc.transpose(-1, -2) @ yc).norm(dim=(-1, -2))
    )
    torch.testing.assert_close(probes.linear_cka(x, y), feature)


def test_drift_accepts_an_explicit_reference():
    u = randn(3, 2, 4, 3)
    result = probes.drift(u, reference=u[1])
    assert float(result["relative_distance"][1]) == 0.0
    assert float(result["mean_cosine"][1]) == pytest.approx(1.0)


# -- rank collapse and clustering ---------------------------------------------------------------------


def test_rank_one_input_has_zero_residual_unit_effective_rank_and_one_cluster():
    u = rank_one_state()
    result = probes.rank_collapse(u)
    assert float(result["residual"][0]) == pytest.approx(0.0, abs=1e-12)
    assert float(result["residual_composite"][0]) == pytest.approx(0.0, abs=1e-12)
    assert float(result["effective_rank"][0]) == pytest.approx(1.0, abs=1e-8)
    assert float(result["mean_pairwise_cosine"][0]) == pytest.approx(1.0, abs=1e-12)
    assert float(probes.cluster_count(u)[0]) == 1.0


def test_orthogonal_tokens_have_zero_mean_pairwise_cosine_and_full_rank():
    u = torch.eye(5, dtype=DT).expand(2, 5, 5)
    result = probes.rank_collapse(u)
    assert float(result["mean_pairwise_cosine"][0]) == pytest.approx(0.0, abs=1e-15)
    assert float(result["effective_rank"][0]) == pytest.approx(5.0, abs=1e-12)
    assert float(probes.cluster_count(u)[0]) == 5.0
    torch.testing.assert_close(probes.pairwise_cosines(u), torch.eye(5, dtype=DT).expand(2, 5, 5))


def test_mean_pairwise_cosine_matches_the_full_cosine_matrix():
    u = randn(3, 6, 4)
    cos = probes.pairwise_cosines(u)
    off_diagonal = (cos.sum((-1, -2)) - cos.diagonal(dim1=-1, dim2=-2).sum(-1)) / 30
    assert float(probes.rank_collapse(u)["mean_pairwise_cosine"][0]) == pytest.approx(float(off_diagonal.mean()))


def test_composite_norm_of_a_hand_computed_matrix():
    m = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=DT)
    # column abs sums 4, 6 -> ‖m‖₁ = 6; row abs sums 3, 7 -> ‖m‖∞ = 7
    assert float(probes.composite_norm(m)) == pytest.approx(math.sqrt(42.0))


def test_cluster_count_finds_two_opposite_groups_in_each_sample():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, -1.0])
    state = torch.stack([a, 2 * a, b, 0.5 * b, 3 * b]).to(DT).expand(2, 5, 3)
    assert float(probes.cluster_count(state)[0]) == 2.0


def test_cluster_count_links_a_chain_of_neighbours_into_one_cluster():
    angles = torch.linspace(0.0, math.pi, 200, dtype=DT)  # neighbours ~0.016 rad apart, ends opposite
    chain = torch.stack([angles.cos(), angles.sin()], dim=-1).unsqueeze(0)
    assert float(probes.cluster_count(chain, threshold=0.99)[0]) == 1.0
    shuffled = chain[:, torch.randperm(200, generator=gen(0))]
    assert float(probes.cluster_count(shuffled, threshold=0.99)[0]) == 1.0


def test_cluster_count_matches_breadth_first_search_on_random_states():
    for seed in range(5):
        state = randn(1, 30, 3, seed=seed)
        adjacent = probes.pairwise_cosines(state)[0] > 0.8
        unseen, components = set(range(30)), 0
        while unseen:
            components += 1
            frontier = [unseen.pop()]
            while frontier:
                i = frontier.pop()
                for j in adjacent[i].nonzero().flatten().tolist():
                    if j in unseen:
                        unseen.remove(j)
                        frontier.append(j)
        assert float(probes.cluster_count(state, threshold=0.8)[0]) == components


# -- energy -------------------------------------------------------------------------------------------


def spd_matrix(n: int = 4) -> torch.Tensor:
    m = randn(n, n, seed=7)
    return m @ m.T / n + 0.5 * torch.eye(n, dtype=DT)


def test_energy_rate_of_a_gradient_flow_equals_minus_velocity_squared():
    system = QuadraticGradientFlow(spd_matrix())
    u = randn(3, 2, 5, 4)
    check = probes.energy_rate_check(system, u)
    assert check["dE_dt"].shape == (3,)
    torch.testing.assert_close(check["dE_dt"], check["minus_velocity_sq"], rtol=1e-10, atol=1e-10)
    assert bool((check["dE_dt"] < 0).all())


def test_energy_reports_total_parts_norm_energy_and_exactness():
    system = QuadraticGradientFlow(spd_matrix())
    sol = solvers.solve(system, randn(2, 5, 4), (0.0, 2.0), method="rk4", dt=0.05, t_eval=torch.linspace(0, 2, 11))
    result = probes.energy(system, sol.u, t=sol.t)
    assert result["exact"] is True
    assert set(result) >= {"energy", "energy/quadratic", "energy/zero", "norm_energy", "t"}
    torch.testing.assert_close(result["energy"], result["energy/quadratic"])
    torch.testing.assert_close(result["norm_energy"], 0.5 * sol.u.pow(2).flatten(2).sum(2).mean(1))
    assert probes.monotone_fraction(result["energy"]) == 1.0
    assert not result["energy"].requires_grad


def test_energy_of_a_system_without_one_is_nan_and_not_exact():
    result = probes.energy(LinearField(torch.eye(3, dtype=DT)), randn(4, 1, 2, 3))
    assert bool(result["energy"].isnan().all()) and result["exact"] is False
    assert result["norm_energy"].shape == (4,)


def test_monotone_fraction_counts_non_increasing_steps():
    assert probes.monotone_fraction(torch.tensor([3.0, 2.0, 1.0, 0.5])) == 1.0
    assert probes.monotone_fraction([1.0, 2.0, 1.0]) == 0.5
    assert probes.monotone_fraction([1.0, 1.0 + 1e-14, 1.0]) == 1.0  # within the relative tolerance
    assert math.isnan(probes.monotone_fraction([1.0]))


# -- Lyapunov exponents -------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", [probes.ftle, probes.ftle_two_trajectories])
def test_ftle_of_a_linear_system_is_its_top_eigenvalue(estimator):
    a = matrix_with_gap([0.3, -0.4, -1.0, -2.0])
    result = estimator(LinearField(a), randn(1, 1, 4, seed=2), 200.0, dt=0.25, renormalize_every=10.0)
    assert result["t"].shape == result["ftle"].shape == (20,)
    assert float(result["t"][-1]) == 200.0
    assert result["final"] == pytest.approx(0.3, abs=1e-2)


def test_ftle_estimators_agree_on_a_contracting_batch():
    a = matrix_with_gap([-0.2, -0.7, -1.5])
    u0 = randn(3, 2, 3, seed=4)
    tangent = probes.ftle(LinearField(a), u0, 5.0, dt=0.1)
    pair = probes.ftle_two_trajectories(LinearField(a), u0, 5.0, dt=0.1)
    assert tangent["per_sample"].shape == (3,)
    torch.testing.assert_close(tangent["ftle"], pair["ftle"], rtol=1e-6, atol=1e-6)


def test_ftle_runs_through_fused_attention():
    def attention(t, u):
        x = u.unsqueeze(1)
        return F.scaled_dot_product_attention(x, x, x).squeeze(1) - u

    result = probes.ftle(attention, randn(2, 6, 4).float(), 1.0, dt=0.1, renormalize_every=0.5)
    assert math.isfinite(result["final"])


def test_lyapunov_spectrum_of_a_linear_system_is_the_real_parts_of_its_eigenvalues():
    a = matrix_with_gap([0.3, -0.4, -1.0, -2.0])
    u0 = randn(2, 1, 4, seed=2)
    result = probes.lyapunov_spectrum(LinearField(a), u0, 200.0, k=3, dt=0.25, renormalize_every=5.0)
    assert result["exponents"].shape == (40, 3) and result["per_sample"].shape == (2, 3)
    torch.testing.assert_close(result["final"], torch.tensor([0.3, -0.4, -1.0], dtype=DT), atol=2e-2, rtol=0)


def test_lyapunov_spectrum_of_a_rotation_has_equal_real_parts():
    # eigenvalues −0.1 ± 2i: every direction contracts at −0.1 on average
    a = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=DT)
    result = probes.lyapunov_spectrum(LinearField(a), randn(1, 1, 2, seed=1), 50.0, k=2, dt=0.05)
    torch.testing.assert_close(result["final"], torch.tensor([-0.1, -0.1], dtype=DT), atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_a_spectrum_with_tangents_as_extra_samples_equals_one_jvp_per_tangent(batch):
    """independent_samples=True pushes the k tangents through one call as k copies of the state."""
    import pdesim

    model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=8, dim=8, heads=2, diffusion=0.2, seed=3)).double()
    u0 = model.initial_state(batch=batch)
    settings = dict(k=3, dt=0.1, method="midpoint", renormalize_every=0.5, seed=1)
    one_by_one = probes.lyapunov_spectrum(model, u0, 1.0, **settings)
    batched = probes.lyapunov_spectrum(model, u0, 1.0, independent_samples=True, **settings)
    torch.testing.assert_close(batched["per_sample"], one_by_one["per_sample"], rtol=1e-10, atol=1e-12)
    assert batched["per_sample"].shape == (batch, 3) and bool(torch.isfinite(batched["per_sample"]).all())


def test_the_sum_of_all_exponents_is_the_time_averaged_trace_of_the_jacobian():
    w = 1.5 * randn(3, 3, seed=7)

    def field(t, u):
        return torch.tanh(u @ w.T) - 0.5 * u

    u0 = randn(1, 2, 3, seed=8)
    t_end, dt = 4.0, 0.01
    result = probes.lyapunov_spectrum(field, u0, t_end, k=6, dt=dt, renormalize_every=1.0)
    path = solvers.solve(field, u0, (0.0, t_end), method="rk4", dt=dt, t_eval=torch.linspace(0, t_end, 401))
    traces = torch.stack([torch.trace(probes.dense_jacobian(field, u)) for u in path.u])
    averaged_trace = float(torch.trapezoid(traces, path.t)) / t_end
    assert float(result["final"].sum()) == pytest.approx(averaged_trace, abs=1e-3)


def test_ftle_follows_the_given_direction():
    a = torch.diag(torch.tensor([0.5, -0.2, -1.0], dtype=DT))
    direction = torch.zeros(1, 1, 3, dtype=DT)
    direction[..., 2] = 1.0
    result = probes.ftle(LinearField(a), randn(1, 1, 3, seed=3), 10.0, dt=0.1, direction=direction)
    assert result["final"] == pytest.approx(-1.0, abs=1e-6)
    with pytest.raises(ValueError, match="direction"):
        probes.ftle(LinearField(a), randn(1, 1, 3), 1.0, dt=0.1, direction=torch.zeros(1, 1, 3, dtype=DT))


def test_ftle_of_a_projected_flow_is_the_exponent_on_the_sphere():
    # du/dt = A u projected onto the unit sphere: the attracting pole e₁ has tangent rate a₂ − a₁.
    a = torch.diag(torch.tensor([0.5, -0.2, -1.0], dtype=DT))

    def onto_sphere(u):
        return u / u.flatten(1).norm(dim=1).view(-1, 1, 1)

    u0 = onto_sphere(randn(1, 1, 3, seed=5))
    free = probes.ftle(LinearField(a), u0, 60.0, dt=0.05, renormalize_every=10.0)
    projected = probes.ftle(LinearField(a), u0, 60.0, dt=0.05, renormalize_every=10.0, project=onto_sphere)
    assert free["final"] == pytest.approx(0.5, abs=1e-2)
    assert projected["final"] == pytest.approx(-0.7, abs=3e-2)


# -- spectra and stability ----------------------------------------------------------------------------


@pytest.mark.parametrize("bc", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("n", [7, 8])
@pytest.mark.parametrize("dilation", [1, 2, 3])
def test_laplacian_spectrum_equals_the_closed_form(bc, n, dilation):
    numeric = probes.laplacian_spectrum(n, bc, spacing=0.5, dilation=dilation)
    torch.testing.assert_close(numeric, probes.laplacian_formula(n, bc, spacing=0.5, dilation=dilation),
                               rtol=0, atol=1e-10)


def test_jacobian_spectrum_of_a_linear_field_is_eig_a_repeated_per_token_and_sample():
    a = matrix_with_gap([0.5, -1.0, -2.0, -3.0]) + 0.2 * randn(4, 4, seed=9)  # complex pair possible
    found = probes.jacobian_spectrum(LinearField(a), randn(2, 3, 4))
    expected = torch.linalg.eigvals(a).repeat(6)
    key = lambda z: sorted(zip(z.real.tolist(), z.imag.tolist()))
    for (re1, im1), (re2, im2) in zip(key(found), key(expected)):
        assert re1 == pytest.approx(re2, abs=1e-9) and abs(im1) == pytest.approx(abs(im2), abs=1e-9)
    assert bool((found.real[:-1] >= found.real[1:]).all())  # sorted by decreasing real part


def test_jacobian_spectrum_through_fused_attention_matches_reverse_mode():
    def attention(t, u):
        x = u.unsqueeze(1)
        return F.scaled_dot_product_attention(x, x, x).squeeze(1)

    u = randn(1, 4, 3)
    found = probes.jacobian_spectrum(attention, u)
    jac = torch.autograd.functional.jacobian(lambda x: attention(0.0, x), u).reshape(12, 12)
    expected = torch.linalg.eigvals(jac)
    torch.testing.assert_close(found.abs().sort().values, expected.abs().sort().values)


def test_jacobian_spectrum_refuses_large_systems_in_one_line():
    with pytest.raises(ValueError, match="4096") as error:
        probes.jacobian_spectrum(LinearField(torch.eye(4097, dtype=DT)), torch.zeros(1, 1, 4097))
    assert "\n" not in str(error.value)


def test_stability_functions_of_euler_and_rk4_are_their_taylor_polynomials():
    z = torch.complex(randn(50, seed=1), randn(50, seed=2)) * 2
    torch.testing.assert_close(probes.stability_function(solvers.TABLEAUS["euler"], z), 1 + z)
    rk4 = 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24
    torch.testing.assert_close(probes.stability_function(solvers.TABLEAUS["rk4"], z), rk4)


def test_stability_function_of_an_implicit_tableau_uses_the_resolvent():
    backward_euler = SimpleNamespace(a=((1.0,),), b=(1.0,), c=(1.0,))
    z = torch.tensor([-3.0 + 0j, 0.5j, -0.25 + 1j])
    torch.testing.assert_close(probes.stability_function(backward_euler, z), 1 / (1 - z.to(torch.complex128)))


def test_forward_euler_on_the_laplacian_is_stable_up_to_tau_one_half():
    euler = solvers.TABLEAUS["euler"]
    assert probes.max_stable_dt(euler, torch.tensor([-4.0])) == pytest.approx(0.5, abs=1e-9)
    spectrum = probes.laplacian_spectrum(16, "periodic")  # λ_max = −4 for D = 1, h = 1, N even
    assert probes.max_stable_dt(euler, spectrum) == pytest.approx(0.5, abs=1e-9)
    assert bool(probes.step_is_stable(euler, 0.5, spectrum).all())
    assert not bool(probes.step_is_stable(euler, 0.51, spectrum).all())


def test_max_stable_dt_of_rk4_on_the_negative_axis_and_special_eigenvalues():
    rk4 = solvers.TABLEAUS["rk4"]
    assert probes.max_stable_dt(rk4, torch.tensor([-1.0 + 0j])) == pytest.approx(2.785293563405, abs=1e-9)
    assert probes.max_stable_dt(rk4, torch.tensor([2j])) == pytest.approx(math.sqrt(2.0), abs=1e-9)
    per = probes.max_stable_dt(rk4, torch.tensor([0.0, -2.0, 1.0]), per_eigenvalue=True)
    assert math.isinf(float(per[0])) and float(per[1]) == pytest.approx(2.785293563405 / 2) and float(per[2]) < 1e-3


def test_transfer_function_matches_its_formula_single_and_multiscale():
    omega = torch.linspace(0, math.pi, 33, dtype=DT)
    single = probes.transfer_function([0.25], [1], [1.0], omega)
    torch.testing.assert_close(single, 1 - torch.sin(omega / 2) ** 2)
    taus, scales, weights = torch.tensor([0.5, 0.2, 0.4], dtype=DT), [1, 2, 4], torch.tensor([0.5, 0.3, 0.2], dtype=DT)
    expected = sum(w * (1 - 4 * t * torch.sin(omega * s / 2) ** 2) for t, s, w in zip(taus, scales, weights))
    torch.testing.assert_close(probes.transfer_function(taus, scales, weights, omega), expected.to(DT))
    assert float(probes.transfer_function(taus, scales, weights, omega).abs().max()) <= 1.0 + 1e-12


def test_transfer_function_per_channel_matches_the_diffusion_layer():
    pdesim = pytest.importorskip("pdesim")
    layer = pdesim.PDEDiffusion(4, scales=(1, 2, 4))
    with torch.no_grad():
        layer.theta.copy_(randn(*layer.theta.shape, seed=11))
        layer.phi.copy_(randn(*layer.phi.shape, seed=12))
    omega = torch.linspace(0, math.pi, 17, dtype=DT)
    with torch.no_grad():
        ours = probes.transfer_function(layer.tau, layer.scales, layer.weights, omega)
        theirs = layer.transfer_function(omega)
    torch.testing.assert_close(ours, theirs.to(DT), rtol=1e-6, atol=1e-6)


# -- consistency and commutators ----------------------------------------------------------------------


def test_consistency_of_errors_proportional_to_one_over_l_has_order_one():
    reference = randn(2, 4, 3)
    outputs = {layers: reference + 0.8 / layers for layers in (32, 4, 16, 8)}
    found = probes.consistency(outputs, reference)
    assert found["layers"].tolist() == [4, 8, 16, 32]
    torch.testing.assert_close(found["errors"], 0.8 / torch.tensor([4.0, 8.0, 16.0, 32.0], dtype=DT))
    assert found["order"] == pytest.approx(1.0, abs=1e-10)
    assert found["ratios"] == pytest.approx([2.0, 2.0, 2.0])


def test_commutator_of_commuting_maps_is_zero_and_of_non_commuting_is_positive():
    u = randn(2, 5, 3)
    token_mix = randn(5, 5, seed=1)
    channel_mix = randn(3, 3, seed=2)
    along_tokens = lambda x: token_mix @ x
    along_channels = lambda x: x @ channel_mix
    assert probes.commutator(along_tokens, along_channels, u) == pytest.approx(0.0, abs=1e-12)
    other_tokens = randn(5, 5, seed=3)
    assert probes.commutator(along_tokens, lambda x: other_tokens @ x, u) > 0.1


# -- attention ----------------------------------------------------------------------------------------


def test_uniform_attention_has_entropy_log_n():
    q, k = torch.zeros(2, 3, 10, 4), randn(2, 3, 10, 4)
    torch.testing.assert_close(probes.attention_entropy(q, k, scale=0.5), torch.full((2, 3), math.log(10), dtype=DT))


def test_chunked_attention_entropy_equals_unchunked():
    q, k = randn(2, 2, 37, 4, seed=1), randn(2, 2, 37, 4, seed=2)
    whole = probes.attention_entropy(q, k, scale=1.0, chunk=1024)
    p = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    torch.testing.assert_close(whole, -(p * p.log()).sum(-1).mean(-1))
    torch.testing.assert_close(probes.attention_entropy(q, k, scale=1.0, chunk=5), whole)
    causal = probes.attention_entropy(q, k, scale=1.0, chunk=5, causal=True)
    torch.testing.assert_close(causal, probes.attention_entropy(q, k, scale=1.0, chunk=64, causal=True))
    assert bool((causal < whole).all())


def test_masked_keys_reduce_uniform_entropy_to_log_of_valid_count():
    q, k = torch.zeros(2, 1, 8, 4), randn(2, 1, 8, 4)
    mask = torch.arange(8) < torch.tensor([[3], [8]])
    found = probes.attention_entropy(q, k, scale=1.0, mask=mask, chunk=3)
    torch.testing.assert_close(found[:, 0], torch.tensor([math.log(3), math.log(8)], dtype=DT))


def test_attention_entropy_of_a_duck_typed_module_uses_its_queries_and_keys():
    module = SimpleNamespace(qkv=torch.nn.Linear(4, 12, bias=False, dtype=DT), heads=2, temperature=0.7)
    x = randn(3, 6, 4)
    q, k, _ = module.qkv(x).view(3, 6, 3, 2, 2).permute(2, 0, 3, 1, 4)
    expected = probes.attention_entropy(q, k, scale=0.7)
    found = probes.attention_entropy_of(module, x)
    assert found.shape == (3, 2) and not found.requires_grad
    torch.testing.assert_close(found, expected)
    with pytest.raises(TypeError):
        probes.attention_entropy_of(SimpleNamespace(heads=2), x)


def test_probes_do_not_import_pdesim():
    import pathlib

    for source in pathlib.Path(probes.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert "import pdesim" not in text and "from pdesim" not in text, source.name


def test_a_spectrum_whose_first_segment_blows_up_is_k_nans_not_a_scalar():
    exploding = lambda t, u: 1e3 * u.pow(3)  # noqa: E731 -- finite-time blow-up within the first step
    result = probes.lyapunov_spectrum(exploding, torch.ones(1, 4, 2, dtype=torch.float64), 2.0, k=3, dt=0.5)
    assert result["final"].shape == (3,) and bool(result["final"].isnan().all())
    assert result["per_sample"].shape == (1, 3)
