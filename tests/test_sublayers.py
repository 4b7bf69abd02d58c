"""Each sub-layer is defined once (``MasterPDE.branch``): the PDE's field, the blocks and the probes agree.

Also: a Transformer's state_dict names every tensor once, so it saves by name with safetensors.
"""

import pytest
import torch
from linear_systems import fitted_order
from safetensors.torch import load_model, save_model

import pdesim
import solvers
from pdesim import Transformer

IN_BLOCK = ("before_norm", "before_attention", "after_attention", "after_ffn")


def _model(**changes) -> pdesim.MasterPDE:
    settings = dict(tokens=10, dim=8, heads=2, diffusion=0.2, dtype="float64", seed=5) | changes
    return pdesim.MasterPDE(Transformer.continuous_config(pdesim.PDEConfig(**settings)))


def _sharpen(layer: torch.nn.Module) -> torch.nn.Module:
    """A diffusion layer with a strong, distinct τ so that its effect is far above round-off."""
    with torch.no_grad():
        layer.theta.fill_(2.0)
    return layer


def _with_inserts(model: pdesim.MasterPDE, positions) -> pdesim.MasterPDE:
    inserts = {p: _sharpen(pdesim.PDEDiffusion(model.cfg.dim).double()) for p in positions}
    model.add_inserts(inserts)
    return model


def _attention_inputs(block_owner, run) -> list[torch.Tensor]:
    seen = []
    handle = block_owner.attention.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_branch_input_is_exactly_what_the_attention_module_receives_in_a_block(norm):
    # no diffusion term: the block's first sub-step is then attention, at u0 itself
    model = _with_inserts(_model(norm=norm, diffusion=0.0), ("before_norm", "before_attention"))
    tf = Transformer.from_pde(model, layers=1, t_end=1.0)
    u0 = model.initial_state(batch=2)
    seen = _attention_inputs(model, lambda: tf(u0))
    expected = model.branch_input("attention", u0)
    assert len(seen) == 1
    assert torch.equal(seen[0], expected)


def test_the_pde_field_sums_the_branches_the_blocks_step():
    model = _with_inserts(_model(norm="pre"), IN_BLOCK)
    u = model.initial_state(batch=2)
    total = sum(model.branch(name, u) for name in ("diffusion", "attention", "reaction"))
    assert torch.allclose(model(0.0, u), total, rtol=0, atol=1e-13)


@pytest.mark.parametrize("positions", [("after_attention",), ("before_attention", "after_ffn"), ("before_norm",)])
def test_blocks_with_in_block_diffusion_layers_converge_to_the_pde_that_contains_them(positions):
    model = _with_inserts(_model(), positions)
    u0 = model.initial_state(batch=2)
    with torch.no_grad():
        reference = solvers.solve(model, u0, (0.0, 1.0), method="rk4", dt=1 / 256).u[-1]
    layers = [8, 16, 32]
    with torch.no_grad():
        errors = [float((Transformer.from_pde(model, L, 1.0)(u0) - reference).abs().max()) for L in layers]
    assert abs(fitted_order([1 / L for L in layers], errors) - 1) < 0.3
    # and the layers matter: without them the PDE is a different one
    with torch.no_grad():
        far = solvers.solve(_model(), u0, (0.0, 1.0), method="rk4", dt=1 / 256).u[-1]
    assert float((far - reference).abs().max()) > 10 * errors[-1]


def test_the_pde_classifier_trains_its_in_block_diffusion_layers():
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, seed=0)
    net = pdesim.PDEClassifier(
        cfg, vocab_size=11, num_classes=3, layers=2, t_end=2.0, solver="rk4", dt=0.5, adjoint=False,
        diffusion_at=("after_attention", "after_ffn", "after_embedding"),
    )
    ids = torch.randint(1, 11, (4, 12), generator=torch.Generator().manual_seed(0))
    torch.nn.functional.cross_entropy(net(ids), torch.tensor([0, 1, 2, 0])).backward()
    layers = [net.blocks.pdes[0].inserts["after_attention"], net.blocks.pdes[0].inserts["after_ffn"]]
    layers.append(net.blocks.inserts["after_embedding"])
    for layer in layers:
        assert layer.theta.grad is not None and float(layer.theta.grad.abs().max()) > 1e-8


def test_the_pde_classifier_refuses_between_layers_with_one_line():
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, seed=0)
    with pytest.raises(pdesim.ConfigError, match="between_layers"):
        pdesim.PDEClassifier(
            cfg, vocab_size=11, num_classes=3, layers=2, t_end=2.0, solver="rk4", dt=0.5, adjoint=False,
            diffusion_at=("between_layers",),
        )


def test_a_block_holds_its_pde_and_registers_no_copy_of_its_modules():
    model = _model()
    tf = Transformer.from_pde(model, layers=3, t_end=1.0)
    assert all(block.pde is model for block in tf.blocks)
    assert all(not list(block.parameters()) for block in tf.blocks)
    assert sum(p.numel() for p in tf.parameters()) == sum(p.numel() for p in model.parameters())


def _storages(module: torch.nn.Module) -> list[int]:
    return [t.untyped_storage().data_ptr() for t in module.state_dict().values()]


@pytest.mark.parametrize("per_layer", [False, True], ids=["tied", "per-layer"])
def test_state_dict_names_every_tensor_once_and_round_trips_through_safetensors_by_name(tmp_path, per_layer):
    def build(seed):
        model = _model(seed=seed)
        return Transformer.from_pde(
            model, layers=3, t_end=1.0, per_layer=per_layer,
            diffusion_at=("after_embedding", "after_attention", "between_layers"),
        )

    tf = build(seed=1)
    with torch.no_grad():
        for p in tf.parameters():
            p.add_(0.01 * torch.randn_like(p))
    storages = _storages(tf)
    assert len(storages) == len(set(storages))
    save_model(tf, str(tmp_path / "tf.safetensors"))
    other = build(seed=2)
    missing, unexpected = load_model(other, str(tmp_path / "tf.safetensors"))
    assert not missing and not unexpected
    u0 = tf.pdes[0].initial_state(batch=2)
    with torch.no_grad():
        assert torch.equal(tf(u0), other(u0))


def test_a_per_layer_classifier_gives_every_layer_its_own_in_block_diffusion_layer():
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, seed=0)
    net = pdesim.Classifier(cfg, vocab_size=11, num_classes=3, layers=3, diffusion_at=("after_ffn", "before_head"))
    layers = [pde.inserts["after_ffn"] for pde in net.blocks.pdes]
    assert len({id(layer) for layer in layers}) == 3
    storages = _storages(net)
    assert len(storages) == len(set(storages))


def test_layered_pde_saves_at_t_eval_and_reports_its_steps_and_timing():
    tf = Transformer.from_pde(_model(), layers=4, t_end=2.0, per_layer=True)
    pde = tf.continuous()
    u0 = tf.pdes[0].initial_state(batch=1)
    t_eval = torch.linspace(0, 2, 9, dtype=torch.float32)
    sol = pde.solve(u0, method="rk4", dt=0.125, t_eval=t_eval)
    assert sol.status == "success"
    assert sol.t.tolist() == pytest.approx(t_eval.double().tolist(), abs=1e-6)
    assert sol.stats["steps"] == 16
    assert sol.stats["nfe"] == 64
    assert sol.stats["dt_min"] == pytest.approx(0.125) and sol.stats["dt_max"] == pytest.approx(0.125)
    assert sol.stats["wall_time"] > 0
    whole = pde.solve(u0, method="rk4", dt=0.125)
    assert torch.equal(whole.u[-1], sol.u[-1])
    assert whole.t.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
