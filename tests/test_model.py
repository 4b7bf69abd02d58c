"""MasterPDE and PDEConfig: validation, the attention kernel, determinism, the field's views, masks."""

from __future__ import annotations

import json
import math

import pytest
import torch

import solvers
from pdesim import ConfigError, Diffusion, MasterPDE, PDEConfig, SoftmaxAttention
from pdesim.model import layernorm_manifold, tangent_projection

NORMS = ("pre", "post", "tangent", "relax", "none")


def small_config(**changes) -> PDEConfig:
    base = dict(tokens=8, dim=8, heads=2, diffusion=0.2, dtype="float64", diffusion_scales=(1, 2))
    base.update(changes)
    return PDEConfig(**base)


def random_state(cfg: PDEConfig, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.tokens, cfg.dim, generator=generator, dtype=cfg.torch_dtype)


def right_padding(lengths: list[int], tokens: int) -> torch.Tensor:
    return torch.arange(tokens) < torch.tensor(lengths).unsqueeze(-1)


# -- configuration ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(diffusion=-0.1), "diffusion"),
        (dict(diffusion=math.nan), "diffusion"),
        (dict(diffusion=[0.1] * 31 + [-1.0]), "diffusion"),
        (dict(spacing=math.nan), "spacing"),
        (dict(relax_kappa=math.inf), "relax_kappa"),
        (dict(temperature=math.nan), "temperature"),
        (dict(tokens=0), "tokens"),
        (dict(dim=30), "dim=30"),
        (dict(bc="reflecting"), "bc"),
        (dict(norm="batch"), "norm"),
        (dict(activation="swish"), "activation"),
        (dict(attention_kind="linear"), "attention_kind"),
        (dict(reaction_kind="gradient", activation="gelu"), "activation"),
        (dict(diffusion_scales=(1, 65)), "diffusion_scales"),
        (dict(dtype="float8"), "dtype"),
        (dict(attention="yes"), "attention"),
    ],
)
def test_bad_config_value_is_a_one_line_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        PDEConfig(**changes)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in message
    assert field in message


def test_dim_not_divisible_by_heads_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"^dim=30 is not divisible by heads=4$"):
        PDEConfig(dim=30, heads=4)


def test_negative_diffusion_names_the_value_and_the_allowed_range():
    with pytest.raises(ConfigError, match=r"^diffusion=-0\.1 must be a finite number >= 0$"):
        PDEConfig(diffusion=-0.1)


def test_config_round_trips_through_json_and_rejects_unknown_keys():
    cfg = PDEConfig(diffusion=[[0.1], [0.02] * 32], diffusion_scales=(1, 4), dtype=torch.float64)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert "temperature" not in data  # None is left out: TOML has no null
    assert PDEConfig.from_dict(data) == cfg
    assert cfg.dtype == "float64" and cfg.torch_dtype is torch.float64
    with pytest.raises(ConfigError, match=r"^unknown config key 'layers'"):
        PDEConfig.from_dict({**data, "layers": 3})


def test_replace_validates_again():
    cfg = PDEConfig()
    assert cfg.replace(norm="none").norm == "none"
    with pytest.raises(ConfigError, match="heads"):
        cfg.replace(heads=5)
    with pytest.raises(ConfigError, match="unknown config key"):
        cfg.replace(depth=2)


def test_diffusion_rule_float_per_channel_and_per_scale():
    assert PDEConfig(dim=2, heads=1, diffusion=0.3, diffusion_scales=(1, 2)).diffusion_table() == [[0.3, 0.3]] * 2
    per_channel = PDEConfig(dim=2, heads=1, diffusion=[0.1, 0.2], diffusion_scales=(1, 2))
    assert per_channel.diffusion_table() == [[0.1, 0.2], [0.1, 0.2]]
    per_scale = PDEConfig(dim=2, heads=1, diffusion=[[0.1], [0.3, 0.4]], diffusion_scales=(1, 2))
    assert per_scale.diffusion_table() == [[0.1, 0.1], [0.3, 0.4]]
    with pytest.raises(ConfigError, match="per channel"):
        PDEConfig(dim=4, heads=1, diffusion=[0.1, 0.2], diffusion_scales=(1, 2))
    assert not PDEConfig(diffusion=0.0).has_diffusion


# -- attention -------------------------------------------------------------------------------------
def explicit_softmax_attention(attn: SoftmaxAttention, x: torch.Tensor, valid=None) -> torch.Tensor:
    batch, tokens, dim = x.shape
    heads, width = attn.heads, dim // attn.heads
    q = (x @ attn.w_query.T).view(batch, tokens, heads, width).transpose(1, 2)
    k = (x @ attn.w_key.T).view(batch, tokens, heads, width).transpose(1, 2)
    v = (x @ attn.w_value.T).view(batch, tokens, heads, width).transpose(1, 2)
    scores = attn.temperature * q @ k.transpose(-1, -2)
    allowed = torch.ones(batch, 1, tokens, tokens, dtype=torch.bool)
    if attn.causal:
        allowed = allowed & torch.ones(tokens, tokens, dtype=torch.bool).tril()
    if valid is not None:
        allowed = allowed & valid[:, None, None, :]
    weights = torch.softmax(scores.masked_fill(~allowed, -math.inf), dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
    return y @ attn.out.weight.T


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_sdpa_attention_equals_an_explicit_softmax_reference(causal, padded):
    torch.manual_seed(0)
    attn = SoftmaxAttention(8, 2, causal=causal).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    valid = right_padding([6, 4, 1], 6) if padded else None
    got = attn(x, valid)
    want = explicit_softmax_attention(attn, x, valid)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_padded_keys_get_no_attention_weight():
    torch.manual_seed(0)
    attn = SoftmaxAttention(8, 2).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    valid = right_padding([3, 5], 6)
    changed = torch.where(valid.unsqueeze(-1), x, 100.0 * torch.randn_like(x))
    torch.testing.assert_close(attn(changed, valid)[valid], attn(x, valid)[valid], atol=1e-12, rtol=0)


# -- shapes, dtype, device, determinism ------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_velocity_has_the_state_shape_dtype_and_device(dtype):
    cfg = small_config(dtype=dtype)
    model = MasterPDE(cfg)
    u = model.initial_state(3)
    velocity = model(0.0, u)
    assert u.shape == velocity.shape == (3, 8, 8)
    assert u.dtype == velocity.dtype == cfg.torch_dtype
    assert velocity.device == u.device == torch.device("cpu")
    assert model.energy(u).shape == model.norm_energy(u).shape == (3,)
    assert model(torch.tensor(0.5), u).shape == u.shape


def test_same_seed_gives_identical_weights_and_state_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = MasterPDE(small_config(seed=7)), MasterPDE(small_config(seed=7))
    ua, ub = a.initial_state(2), b.initial_state(2)
    assert torch.equal(torch.get_rng_state(), before)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert torch.equal(ua, ub)
    other = MasterPDE(small_config(seed=8))
    assert not torch.equal(other.reaction.w1.weight, a.reaction.w1.weight)
    assert not torch.equal(other.initial_state(2), ua)
    assert not torch.equal(a.initial_state(2, seed=3), ua)


def test_switching_attention_off_keeps_the_reaction_weights():
    on, off = MasterPDE(small_config()), MasterPDE(small_config(attention=False))
    assert torch.equal(on.reaction.w1.weight, off.reaction.w1.weight)


def test_weights_follow_init_scale_over_sqrt_fan_in():
    model = MasterPDE(PDEConfig(dim=64, heads=4, init_scale=2.0, dtype="float64"))
    std = model.reaction.w1.weight.std().item()
    assert abs(std - 2.0 / math.sqrt(64)) < 0.02
    assert torch.count_nonzero(model.reaction.w1.bias) == 0


def test_diffusion_is_exactly_the_configured_value_and_stays_nonnegative():
    cfg = small_config(diffusion=[0.1, 0.0, 0.3, 0.7, 0.0, 1.1, 0.2, 0.05], diffusion_scales=(1,))
    model = MasterPDE(cfg)
    assert model.diffusion.coefficients.tolist() == [list(cfg.diffusion)]
    optimizer = torch.optim.SGD(model.diffusion.parameters(), lr=10.0)
    model.diffusion.coefficients.sum().backward()  # pushes every D down, far past zero
    optimizer.step()
    assert bool((model.diffusion.coefficients >= 0).all())


def test_initial_state_is_on_the_layernorm_manifold_for_tangent_and_post():
    tangent = MasterPDE(small_config(norm="tangent")).initial_state(2)
    torch.testing.assert_close(tangent.mean(-1), torch.zeros(2, 8, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(tangent.pow(2).sum(-1), torch.full((2, 8), 8.0, dtype=torch.float64))
    post_model = MasterPDE(small_config(norm="post"))
    post = post_model.initial_state(2)
    torch.testing.assert_close(post, post_model.ln2(post), atol=1e-4, rtol=0)  # LN is idempotent up to ε
    assert MasterPDE(small_config()).projection is None and post_model.projection is not None


# -- the views of the field ------------------------------------------------------------------------
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("residual", [True, False])
def test_parts_and_semilinear_views_sum_to_forward(norm, residual):
    model = MasterPDE(small_config(norm=norm, residual=residual))
    u = random_state(model.cfg)
    velocity = model(0.0, u)
    parts = model.parts()
    assert list(parts)[:1] == ["diffusion"] and "attention" in parts and "reaction" in parts
    assert ("stabilizer" in parts) == (norm == "relax")
    exact_tol = 0.0 if norm != "tangent" else 1e-12
    torch.testing.assert_close(solvers.SplitField(parts)(0.0, u), velocity, atol=exact_tol, rtol=0)
    field = model.semilinear()
    assert isinstance(field.linear, solvers.DiagonalLinear)
    assert field.linear.shift == (0.0 if residual else -1.0)
    torch.testing.assert_close(field.linear(0.0, u) + field.nonlinear(0.0, u), velocity, atol=1e-12, rtol=0)


def test_parts_use_the_exact_linear_flow_when_there_is_one():
    parts = MasterPDE(small_config(residual=False)).parts()
    assert isinstance(parts["diffusion"], solvers.ExactFlow)
    no_diffusion = MasterPDE(small_config(residual=False, diffusion=0.0)).parts()
    assert isinstance(no_diffusion["residual"], solvers.ExactFlow) and "diffusion" not in no_diffusion


def test_switched_off_terms_are_skipped():
    model = MasterPDE(small_config(attention=False, reaction=False, diffusion=0.0))
    u = random_state(model.cfg)
    assert model.parts().keys() == {"zero"}
    assert torch.count_nonzero(model(0.0, u)) == 0
    decay = MasterPDE(small_config(attention=False, reaction=False, diffusion=0.0, residual=False))
    torch.testing.assert_close(decay(0.0, u), -u, atol=0, rtol=0)


def test_splitting_and_exponential_solutions_agree_with_rk4():
    model = MasterPDE(small_config(norm="none", residual=False, diffusion=0.4))
    u0 = model.initial_state(1)
    with torch.no_grad():
        reference = solvers.solve(model, u0, (0.0, 0.5), method="rk4", dt=0.005).u[-1]
        for method in ("strang", "etd-rk2"):
            result = solvers.solve(model, u0, (0.0, 0.5), method=method, dt=0.005).u[-1]
            assert (result - reference).abs().max() < 1e-3, method


def test_tangent_projection_keeps_mean_and_centred_norm_fixed():
    generator = torch.Generator().manual_seed(0)
    u = layernorm_manifold(torch.randn(3, 5, 16, generator=generator, dtype=torch.float64)) + 0.7
    w = torch.randn(3, 5, 16, generator=generator, dtype=torch.float64)
    velocity = tangent_projection(u, w)
    centred = u - u.mean(-1, keepdim=True)
    assert velocity.mean(-1).abs().max() < 1e-15
    assert (2 * (centred * velocity).sum(-1)).abs().max() < 1e-13  # d/dt ‖u − ū‖²
    torch.testing.assert_close(tangent_projection(u, velocity), velocity, atol=1e-14, rtol=0)


def test_tangent_model_velocity_is_tangent():
    model = MasterPDE(small_config(norm="tangent"))
    u = model.initial_state(2)
    velocity = model(0.0, u)
    assert velocity.mean(-1).abs().max() < 1e-14
    assert (u * velocity).sum(-1).abs().max() < 1e-12


def test_post_norm_run_stays_layernormed_through_the_projection():
    model = MasterPDE(small_config(norm="post"))
    with torch.no_grad():
        sol = solvers.solve(model, model.initial_state(2), (0.0, 1.0), method="rk4", dt=0.1, project=model.projection)
    last = sol.u[-1]
    torch.testing.assert_close(last.mean(-1), torch.zeros_like(last.mean(-1)), atol=1e-12, rtol=0)
    # var = σ²/(σ² + ε) for the pre-projection variance σ²: one up to ε
    torch.testing.assert_close(last.var(-1, unbiased=False), torch.ones_like(last[..., 0]), atol=1e-4, rtol=0)


def test_growing_reaction_without_layernorm_is_a_blowup_status_not_an_exception():
    cfg = small_config(norm="none", attention=False, diffusion=0.0, activation="relu", ffn_dim=8)
    model = MasterPDE(cfg)
    with torch.no_grad():
        model.reaction.w1.weight.copy_(2.0 * torch.eye(8))
        model.reaction.w2.weight.copy_(2.0 * torch.eye(8))
    u0 = model.initial_state(2).abs()
    with torch.no_grad():
        sol = solvers.solve(model, u0, (0.0, 20.0), method="rk4", dt=0.05, blowup=1e4)
    assert sol.status == "blowup"
    assert bool(torch.isfinite(sol.u).all())
    assert sol.t_event is not None and sol.t_event < 20.0


# -- padding masks ---------------------------------------------------------------------------------
def test_padded_tokens_do_not_move_and_do_not_influence_valid_ones():
    model = MasterPDE(small_config(norm="none"))
    u = random_state(model.cfg)
    valid = right_padding([8, 5], 8)
    scrambled = torch.where(valid.unsqueeze(-1), u, 50.0 * torch.randn_like(u))
    with model.masked(valid):
        velocity = model(0.0, u)
        assert torch.count_nonzero(velocity[~valid]) == 0
        torch.testing.assert_close(model(0.0, scrambled), velocity, atol=1e-12, rtol=0)
        torch.testing.assert_close(solvers.SplitField(model.parts())(0.0, u), velocity, atol=0, rtol=0)
        with pytest.raises(ValueError, match="padding mask"):
            model.semilinear()
    assert model.padding_mask is None


def test_an_all_valid_mask_changes_nothing():
    model = MasterPDE(small_config(norm="pre", bc="periodic"))
    u = random_state(model.cfg)
    with model.masked(torch.ones(2, 8, dtype=torch.bool)):
        masked = model(0.0, u)
    torch.testing.assert_close(masked, model(0.0, u), atol=1e-13, rtol=0)


def test_masked_diffusion_reflects_at_the_last_valid_token():
    diffusion = Diffusion(6, 1, [[1.0]], bc="neumann", dtype=torch.float64)
    u = torch.tensor([[1.0, 2.0, 4.0, 9.0, 9.0, 9.0]], dtype=torch.float64).unsqueeze(-1)
    got = diffusion(u, right_padding([3], 6)).squeeze(-1)
    # valid prefix [1, 2, 4] with ghosts u_{-1} = u_0 = 1 and u_3 = u_2 = 4; padding stays still
    want = torch.tensor([[1.0, 1.0, -2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


@pytest.mark.parametrize("bad", ["left", "empty", "float"])
def test_bad_padding_masks_are_rejected(bad):
    model = MasterPDE(small_config())
    masks = {
        "left": ~right_padding([8, 5], 8),
        "empty": right_padding([8, 0], 8),
        "float": right_padding([8, 5], 8).double(),
    }
    with pytest.raises(ValueError, match="padding mask"):
        model.set_padding_mask(masks[bad])


def test_sdpa_agrees_with_reference_inside_the_model_with_causal_and_padding():
    model = MasterPDE(small_config(causal=True, norm="none"))
    x = random_state(model.cfg)
    valid = right_padding([8, 3], 8)
    got = model.attention(x, valid)
    torch.testing.assert_close(got, explicit_softmax_attention(model.attention, x, valid), atol=1e-6, rtol=0)
