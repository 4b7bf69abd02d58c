"""Energy: the diffusion energy identity, the gradient-flow configuration, Lyapunov monotonicity."""

from __future__ import annotations

import math

import pytest
import torch

import solvers
from pdesim import Diffusion, GradientReaction, MasterPDE, PDEConfig, SymmetricAttention
from pdesim.model import tangent_projection
from pdesim.terms import POTENTIALS


def gradient_flow_config(**changes) -> PDEConfig:
    # A small temperature: the USA energy is unbounded below off the sphere, so with a large β the
    # Euclidean flow reaches infinity in finite time (a true property, not a numerical one).
    base = dict(
        tokens=8, dim=4, heads=1, diffusion=0.3, attention_kind="symmetric", reaction_kind="gradient",
        activation="tanh", norm="none", dtype="float64", ffn_dim=8, temperature=0.05,
    )
    base.update(changes)
    return PDEConfig(**base)


def gradient_flow_model(**changes) -> MasterPDE:
    model = MasterPDE(gradient_flow_config(**changes))
    with torch.no_grad():  # non-zero biases, so the potential is not even in u
        generator = torch.Generator().manual_seed(5)
        model.reaction.w1.bias.copy_(torch.randn(model.reaction.w1.bias.shape, generator=generator))
    return model


def energy_gradient(model: MasterPDE, u: torch.Tensor) -> torch.Tensor:
    u = u.detach().requires_grad_()
    (grad,) = torch.autograd.grad(model.energy(u).sum(), u)
    return grad


def right_padding(lengths: list[int], tokens: int) -> torch.Tensor:
    return torch.arange(tokens) < torch.tensor(lengths).unsqueeze(-1)


# -- the diffusion energy --------------------------------------------------------------------------
@pytest.mark.parametrize("bc", ["neumann", "periodic", "dirichlet"])
@pytest.mark.parametrize("scales", [(1,), (1, 2, 5)])
def test_diffusion_energy_equals_minus_half_inner_product_with_the_stencil(bc, scales):
    generator = torch.Generator().manual_seed(0)
    coefficients = torch.rand(len(scales), 3, generator=generator, dtype=torch.float64)
    diffusion = Diffusion(7, 3, coefficients, scales=scales, bc=bc, spacing=0.5, dtype=torch.float64)
    u = torch.randn(2, 7, 3, generator=generator, dtype=torch.float64)
    matrix_form = -0.5 * (u * diffusion(u)).sum((1, 2))
    torch.testing.assert_close(diffusion.energy(u), matrix_form, atol=1e-12, rtol=0)
    valid = right_padding([7, 4], 7)
    masked_form = -0.5 * (u * diffusion(u, valid)).sum((1, 2))
    torch.testing.assert_close(diffusion.energy(u, valid), masked_form, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "bc, edges",
    [
        ("neumann", lambda u: u[1:] - u[:-1]),
        ("periodic", lambda u: torch.roll(u, -1, 0) - u),
        ("dirichlet", lambda u: torch.diff(u, prepend=u.new_zeros(1), append=u.new_zeros(1))),
    ],
)
def test_diffusion_energy_is_the_sum_of_squared_edge_differences(bc, edges):
    u = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0], dtype=torch.float64)
    diffusion = Diffusion(5, 1, [[0.4]], bc=bc, spacing=2.0, dtype=torch.float64)
    want = 0.4 / (2 * 2.0**2) * edges(u).pow(2).sum()
    torch.testing.assert_close(diffusion.energy(u.view(1, 5, 1)), want.view(1), atol=1e-14, rtol=0)


def test_dilated_neumann_energy_uses_delta_spaced_differences():
    u = torch.tensor([0.5, -1.0, 2.0, 0.25, 3.0, 1.0], dtype=torch.float64)
    diffusion = Diffusion(6, 1, [[1.0]], scales=(2,), bc="neumann", dtype=torch.float64)
    # interior δ-edges, plus the ghost edges u_{-1}=u_0, u_{-2}=u_1, u_6=u_5, u_7=u_4 (u_0–u_1 and u_4–u_5)
    interior = (u[2:] - u[:-2]).pow(2).sum()
    ghosts = (u[0] - u[1]).pow(2) + (u[4] - u[5]).pow(2)
    want = (interior + ghosts) / (2 * 2.0**2)
    torch.testing.assert_close(diffusion.energy(u.view(1, 6, 1)), want.view(1), atol=1e-14, rtol=0)


# -- the gradient terms ------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_gradient_reaction_is_minus_the_gradient_of_its_potential(activation):
    torch.manual_seed(0)
    reaction = GradientReaction(4, 6, activation).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(reaction.energy(x).sum(), x)
    torch.testing.assert_close(reaction(x), -grad, atol=1e-12, rtol=0)


def test_log_cosh_potential_is_stable_for_large_arguments():
    z = torch.tensor([-1e4, -3.0, 0.0, 0.5, 1e4], dtype=torch.float64)
    value = POTENTIALS["tanh"](z)
    assert bool(torch.isfinite(value).all())
    torch.testing.assert_close(value[1:4], torch.log(torch.cosh(z[1:4])), atol=1e-14, rtol=0)
    torch.testing.assert_close(value[[0, 4]], torch.full((2,), 1e4 - math.log(2.0), dtype=torch.float64))


@pytest.mark.parametrize("heads, identity", [(1, True), (1, False), (2, False)])
def test_symmetric_attention_is_minus_the_gradient_of_its_energy(heads, identity):
    torch.manual_seed(0)
    attention = SymmetricAttention(4, heads, identity=identity).double()
    x = torch.randn(2, 6, 4, dtype=torch.float64, requires_grad=True)
    valid = right_padding([6, 4], 6)
    for mask in (None, valid):
        (grad,) = torch.autograd.grad(attention.energy(x, mask).sum(), x)
        got = attention(x, mask)
        if mask is not None:
            got = torch.where(mask.unsqueeze(-1), got, 0.0)
        torch.testing.assert_close(got, -grad, atol=1e-12, rtol=0)


def test_symmetric_attention_matches_the_usa_formula():
    torch.manual_seed(1)
    attention = SymmetricAttention(3, 1, temperature=0.7).double()
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    a = attention.matrices()[0]
    u = x[0]
    want = torch.stack([sum(torch.exp(0.7 * u[i] @ a @ u[j]) * (a @ u[j]) for j in range(4)) / 4 for i in range(4)])
    torch.testing.assert_close(attention(x)[0], want, atol=1e-12, rtol=0)
    torch.testing.assert_close(a, a.T)
    assert torch.linalg.eigvalsh(a).min() > -1e-12


# -- the gradient-flow configuration -----------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [dict(), dict(residual=False), dict(residual=False, decay=2.0),
     dict(attention_matrix="identity", diffusion_scales=(1, 3), bc="periodic"),
     dict(norm="relax", ln_eps=0.0, relax_kappa=0.7), dict(activation="relu", bc="dirichlet")],
    ids=["none", "no-residual", "no-residual-decay2", "identity-multiscale-periodic", "relax-eps0", "relu-dirichlet"],
)
def test_gradient_flow_velocity_is_exactly_minus_the_energy_gradient(changes):
    model = gradient_flow_model(**changes)
    assert model.energy_is_exact
    u = model.initial_state(2)
    torch.testing.assert_close(model(0.0, u), -energy_gradient(model, u), atol=1e-10, rtol=0)


def test_tangent_gradient_flow_velocity_is_minus_the_projected_gradient():
    model = gradient_flow_model(norm="tangent", residual=False)
    assert model.energy_is_exact
    u = model.initial_state(2)
    want = -tangent_projection(u, energy_gradient(model, u))
    torch.testing.assert_close(model(0.0, u), want, atol=1e-10, rtol=0)


def test_masked_gradient_flow_is_minus_the_gradient_of_the_valid_tokens_energy():
    model = gradient_flow_model(residual=False)
    u = model.initial_state(2)
    with model.masked(right_padding([8, 5], 8)):
        torch.testing.assert_close(model(0.0, u), -energy_gradient(model, u), atol=1e-10, rtol=0)


@pytest.mark.parametrize("changes", [dict(), dict(residual=False), dict(norm="tangent")],
                         ids=["none", "no-residual", "tangent"])
def test_energy_never_increases_along_an_rk4_gradient_flow(changes):
    model = gradient_flow_model(**changes)
    u0 = model.initial_state(2)
    with torch.no_grad():
        sol = solvers.solve(model, u0, (0.0, 1.0), method="rk4", dt=0.01, t_eval=torch.linspace(0, 1, 11))
    assert sol.status == "success"
    energies = torch.stack([model.energy(u) for u in sol.u])
    assert bool((energies[1:] <= energies[:-1] + 1e-12).all())
    assert bool((energies[-1] < energies[0]).all())
    for u in sol.u:
        velocity = model(0.0, u).detach()
        rate = (energy_gradient(model, u) * velocity).sum((1, 2))  # dE/dt = ⟨∇E, du/dt⟩
        dissipation = velocity.pow(2).sum((1, 2))
        torch.testing.assert_close(rate, -dissipation, rtol=1e-3, atol=0)
    if model.cfg.norm == "tangent":
        last = sol.u[-1]
        torch.testing.assert_close(last.mean(-1), torch.zeros_like(last[..., 0]), atol=1e-6, rtol=0)
        torch.testing.assert_close(last.pow(2).sum(-1), torch.full_like(last[..., 0], 4.0), atol=1e-6, rtol=0)


# -- which energies are Lyapunov functions -----------------------------------------------------------
@pytest.mark.parametrize(
    "changes, exact",
    [
        (dict(), True),
        (dict(norm="tangent"), True),
        (dict(norm="pre"), False),
        (dict(norm="post"), False),
        (dict(norm="relax"), False),  # ε > 0: LN is not the gradient of the stabilizer potential
        (dict(norm="relax", ln_eps=0.0), True),
        (dict(attention_kind="softmax", heads=2), False),
        (dict(reaction_kind="mlp", activation="gelu"), False),
        (dict(attention_kind="softmax", attention=False, reaction_kind="mlp", reaction=False), True),
    ],
)
def test_energy_is_exact_only_for_gradient_terms_and_compatible_norms(changes, exact):
    assert MasterPDE(gradient_flow_config(**changes)).energy_is_exact is exact


def test_energy_parts_name_every_potential_and_sum_to_the_energy():
    model = gradient_flow_model(norm="relax", residual=False)
    u = model.initial_state(3)
    parts = model.energy_parts(u)
    assert list(parts) == ["diffusion", "attention", "reaction", "residual", "stabilizer"]
    torch.testing.assert_close(sum(parts.values()), model.energy(u), atol=1e-12, rtol=0)
    torch.testing.assert_close(parts["residual"], model.norm_energy(u))
    torch.testing.assert_close(model.norm_energy(u), 0.5 * u.pow(2).sum((1, 2)))
    assert MasterPDE(gradient_flow_config(attention_kind="softmax", reaction_kind="mlp",
                                          activation="gelu")).energy_parts(u).keys() == {"diffusion"}
