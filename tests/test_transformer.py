"""The discrete Transformer against its continuous limit, and against the textbook Transformer."""

import math

import pytest
import torch
from linear_systems import fitted_order

import pdesim
import solvers
from pdesim import ConfigError, Transformer

T_END = 1.0


def _model(**changes) -> pdesim.MasterPDE:
    settings = dict(tokens=12, dim=8, heads=2, diffusion=0.3, dtype="float64", seed=3) | changes
    cfg = pdesim.PDEConfig(**settings)
    return pdesim.MasterPDE(Transformer.continuous_config(cfg))


def _errors(model, layers, **options):
    u0 = model.initial_state(batch=2)
    reference = solvers.solve(model, u0, (0.0, T_END), method="rk4", dt=1 / 512, project=model.projection).u[-1]
    with torch.no_grad():
        return [float((Transformer.from_pde(model, L, T_END, **options)(u0) - reference).abs().max()) for L in layers]


@pytest.mark.parametrize(
    "changes",
    [dict(), dict(norm="none"), dict(residual=False), dict(norm="relax")],
    ids=["pre", "none", "no-residual", "relax"],
)
def test_lie_blocks_converge_to_the_pde_at_first_order(changes):
    layers = [8, 16, 32]
    errors = _errors(_model(**changes), layers)
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(abs(r - 2) < 0.3 for r in ratios), ratios


@pytest.mark.parametrize("substep", ["midpoint", "heun", "rk4"])
def test_strang_blocks_with_second_order_substeps_converge_at_second_order(substep):
    layers = [4, 8, 16]
    errors = _errors(_model(), layers, order="strang", substep=substep)
    assert abs(fitted_order([T_END / L for L in layers], errors) - 2) < 0.3


def test_strang_blocks_with_euler_substeps_stay_first_order():
    layers = [8, 16, 32]
    errors = _errors(_model(), layers, order="strang")
    assert abs(fitted_order([T_END / L for L in layers], errors) - 1) < 0.3


# -- h = 1 is the textbook Transformer ------------------------------------------------------------------
def _attention(model, x):
    att = model.attention
    b, n, d = x.shape
    heads, width = att.heads, d // att.heads
    split = lambda w: (x @ w.T).view(b, n, heads, width).transpose(1, 2)
    q, k, v = split(att.w_query), split(att.w_key), split(att.w_value)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, d) @ att.out.weight.T


def _mlp(model, x):
    rea = model.reaction
    return rea.w2(torch.nn.functional.gelu(rea.w1(x)))


def _textbook(model, x, layers):
    ln1, ln2, norm = model.ln1, model.ln2, model.cfg.norm
    for _ in range(layers):
        if norm == "pre":
            x = x + _attention(model, ln1(x))
            x = x + _mlp(model, ln2(x))
        elif norm == "post":
            x = ln1(x + _attention(model, x))
            x = ln2(x + _mlp(model, x))
        else:
            x = x + _attention(model, x)
            x = x + _mlp(model, x)
    return x


@pytest.mark.parametrize("norm", ["pre", "post", "none"])
def test_unit_steps_are_exactly_the_textbook_transformer(norm):
    model = _model(norm=norm, diffusion=0.0)
    with torch.no_grad():  # give the LayerNorms a non-trivial affine so that it is checked too
        for ln in (model.ln1, model.ln2):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.2, 0.2)
    u0 = model.initial_state(batch=2)
    tf = Transformer.from_pde(model, layers=3, t_end=3.0)
    assert tf.h == 1.0
    with torch.no_grad():
        assert torch.allclose(tf(u0), _textbook(model, u0, 3), rtol=1e-10, atol=1e-10)


def test_unit_steps_without_residual_map_each_sub_layer_to_its_branch():
    model = _model(residual=False, diffusion=0.0)
    u0 = model.initial_state(batch=1)
    with torch.no_grad():
        x = _attention(model, model.ln1(u0))
        expected = _mlp(model, model.ln2(x))
        assert torch.allclose(Transformer.from_pde(model, 1, 1.0)(u0), expected, atol=1e-12)


def test_diffusion_sub_step_is_an_explicit_euler_heat_step():
    model = _model(diffusion=0.2, attention=False, reaction=False)
    u0 = model.initial_state(batch=1)
    with torch.no_grad():
        out = Transformer.from_pde(model, 1, 0.5)(u0)
        assert torch.allclose(out, u0 + 0.5 * model.diffusion(u0), atol=1e-14)


# -- weights, states, masks ---------------------------------------------------------------------------
def test_return_all_gives_every_layers_state():
    model = _model()
    u0 = model.initial_state(batch=2)
    tf = Transformer.from_pde(model, layers=5, t_end=T_END)
    with torch.no_grad():
        states = tf(u0, return_all=True)
        assert states.shape == (6, 2, 12, 8)
        assert torch.equal(states[0], u0) and torch.equal(states[-1], tf(u0))


def test_tied_blocks_share_the_pde_modules_and_their_gradients():
    model = _model()
    tf = Transformer.from_pde(model, layers=4, t_end=T_END)
    assert {id(p) for p in tf.parameters()} == {id(p) for p in model.parameters()}
    tf(model.initial_state(batch=1)).pow(2).sum().backward()
    assert model.attention.qkv.weight.grad is not None and model.attention.qkv.weight.grad.abs().sum() > 0


def test_per_layer_weights_act_only_from_their_layer_on_in_both_views():
    model = _model()
    u0 = model.initial_state(batch=1)
    tf = Transformer.from_pde(model, layers=4, t_end=T_END, per_layer=True)
    with torch.no_grad():
        assert torch.allclose(tf(u0), Transformer.from_pde(model, 4, T_END)(u0), atol=1e-14)
        before = tf(u0, return_all=True)
        tf.pdes[2].attention.out.weight.mul_(1.5)
        after = tf(u0, return_all=True)
        assert torch.equal(before[:3], after[:3]) and not torch.allclose(before[3], after[3])
        pde = tf.continuous()
        u = u0 + 0.1
        assert torch.equal(pde(0.6, u), tf.pdes[2](0.6, u)) and torch.equal(pde(0.3, u), tf.pdes[1](0.3, u))
        sol = pde.solve(u0, method="rk4", dt=0.01)
        assert (
            sol.status == "success" and sol.u.shape[0] == 5 and sol.t.tolist() == pytest.approx([0, 0.25, 0.5, 0.75, 1])
        )
        tied = solvers.solve(model, u0, (0.0, T_END), method="rk4", dt=0.01).u[-1]
        assert not torch.allclose(sol.u[-1], tied)


def test_padded_tokens_pass_through_unchanged_and_do_not_reach_valid_ones():
    model = _model()
    tf = Transformer.from_pde(model, layers=3, t_end=T_END)
    u0 = model.initial_state(batch=2)
    mask = torch.arange(12) < torch.tensor([[12], [7]])
    with torch.no_grad():
        out = tf(u0, mask)
        assert torch.equal(out[1, 7:], u0[1, 7:])
        poisoned = u0.clone()
        poisoned[1, 7:] = 1e3
        assert torch.allclose(tf(poisoned, mask)[1, :7], out[1, :7], atol=1e-12)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda m: Transformer.from_pde(m, 0, 1.0), "layers=0 must be an integer >= 1"),
        (lambda m: Transformer.from_pde(m, 2, 1.0, order="yoshida"), "order='yoshida' is not one of"),
        (
            lambda m: Transformer.from_pde(m, 2, 1.0, diffusion_at=["inside_ffn"]),
            "unknown diffusion position 'inside_ffn'",
        ),
        (lambda m: Transformer.from_pde(m, 2, -1.0), "t_end=-1.0 must be a positive number"),
    ],
)
def test_bad_transformer_arguments_are_one_clear_line(build, message):
    with pytest.raises(ConfigError, match=message) as info:
        build(_model())
    assert "\n" not in str(info.value)


def test_a_no_residual_model_with_the_wrong_decay_is_refused_with_the_fix():
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, residual=False)
    with pytest.raises(ConfigError, match=r"du/dt = Φ\(u\) − 2·u, but the model has decay=1"):
        Transformer.from_pde(pdesim.MasterPDE(cfg), 2, 1.0)


def test_tangent_has_no_discrete_block():
    with pytest.raises(ConfigError, match="'post' is the discrete counterpart of 'tangent'"):
        Transformer.from_pde(_model(norm="tangent"), 2, 1.0)


# -- the literature's standard set-ups ----------------------------------------------------------------
def test_identity_softmax_attention_is_the_particle_model_with_no_trainable_weight():
    model = _model(attention_matrix="identity", heads=1, reaction=False, diffusion=0.0, norm="none")
    u = model.initial_state(batch=2)
    beta = model.attention.temperature
    weights = torch.softmax(beta * u @ u.transpose(-1, -2), dim=-1)
    torch.testing.assert_close(model.attention(u), weights @ u, rtol=0, atol=1e-12)
    assert not any(p.requires_grad for p in model.attention.parameters())


def test_independent_layers_are_freshly_initialised_not_copies():
    model = _model()
    tf = Transformer.from_pde(model, layers=3, t_end=3.0, per_layer="independent")
    weights = [pde.attention.qkv.weight for pde in tf.pdes]
    assert torch.equal(weights[0], model.attention.qkv.weight) and tf.pdes[0] is not model
    assert not torch.equal(weights[1], weights[0]) and not torch.equal(weights[2], weights[1])
    third = pdesim.MasterPDE(model.cfg.replace(seed=pdesim.transformer.layer_seed(model.cfg.seed, 2)))
    assert torch.equal(weights[2], third.attention.qkv.weight)
    with pytest.raises(ConfigError, match="per_layer"):
        Transformer.from_pde(model, layers=2, t_end=1.0, per_layer="copies")


@pytest.mark.parametrize("order, per_block", [("lie", 2), ("strang", 3)])
def test_sublayer_states_are_the_state_after_every_attention_and_ffn_update(order, per_block):
    model = _model(diffusion=0.0)
    tf = Transformer.from_pde(model, layers=3, t_end=3.0, order=order)
    u0 = model.initial_state(batch=2)
    with torch.no_grad():
        sub = tf(u0, return_all="sublayers")
        layers = tf(u0, return_all=True)
    assert sub.shape == (1 + 3 * per_block, *u0.shape)
    torch.testing.assert_close(sub[::per_block], layers, rtol=0, atol=0)
    if order == "lie":  # h = 1, pre-LN: the first update is u + Att(LN₁u)
        with torch.no_grad():
            torch.testing.assert_close(sub[1], u0 + model.attention(model.ln1(u0)), rtol=0, atol=1e-12)


def test_without_residual_the_tangent_flow_is_unchanged():
    # −u is radial on the LayerNorm manifold, and the tangent projection removes it.
    with_residual = _model(norm="tangent", diffusion=0.0)
    without = pdesim.MasterPDE(with_residual.cfg.replace(residual=False))
    u = with_residual.initial_state(batch=2)
    torch.testing.assert_close(without(0.0, u), with_residual(0.0, u), rtol=0, atol=1e-12)


@pytest.mark.parametrize("h", [0.25, 0.5])
def test_a_post_ln_block_without_residual_at_step_h_is_the_residual_block_at_h_over_1_minus_h(h):
    settings = dict(norm="post", diffusion=0.0, ln_eps=0.0)
    with_residual = _model(**settings)
    without = _model(residual=False, **settings)
    u0 = with_residual.initial_state(batch=2)
    with torch.no_grad():
        a = Transformer.from_pde(without, layers=1, t_end=h)(u0)
        b = Transformer.from_pde(with_residual, layers=1, t_end=h / (1 - h))(u0)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
