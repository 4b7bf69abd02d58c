"""model.save(dir) / pdesim.load(dir): pdesim's own models come back bit for bit, without pickle."""

from __future__ import annotations

import pickle

import pytest
import torch

import pdesim
from pdesim import ConfigError

torch.set_num_threads(1)  # tiny models: one thread is fastest and steady on a shared machine


def _config(**changes) -> pdesim.PDEConfig:
    base = dict(tokens=10, dim=8, heads=2, dtype="float64", diffusion=[[0.1], [0.05]], diffusion_scales=(1, 2))
    return pdesim.PDEConfig(**(base | changes))


def test_a_saved_master_pde_loads_as_the_same_field_bit_for_bit(tmp_path):
    model = pdesim.MasterPDE(_config(norm="post", attention_bias=True, activation="gelu_tanh", seed=3))
    model.save(tmp_path)
    loaded = pdesim.load(tmp_path)
    u = model.initial_state(2)
    assert type(loaded) is pdesim.MasterPDE and loaded.cfg == model.cfg
    assert torch.equal(loaded(0.0, u), model(0.0, u))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("per_layer", [False, True], ids=["tied", "per-layer"])
def test_a_saved_transformer_keeps_its_layers_ties_and_diffusion_layers(tmp_path, per_layer):
    model = pdesim.MasterPDE(_config())
    transformer = pdesim.Transformer.from_pde(
        model, layers=3, t_end=1.5, per_layer=per_layer, order="strang", substep="midpoint",
        diffusion_at=["after_embedding", "after_attention"], diffusion_scales=(1, 2),
    )
    transformer.save(tmp_path)
    loaded = pdesim.load(tmp_path)
    u = model.initial_state(2)
    assert (loaded.layers, loaded.t_end, loaded.order, loaded.substep) == (3, 1.5, "strang", "midpoint")
    assert len(loaded.pdes) == (3 if per_layer else 1)
    assert torch.equal(loaded(u, return_all=True), transformer(u, return_all=True))


def test_a_saved_layered_pde_integrates_to_the_same_states(tmp_path):
    transformer = pdesim.Transformer.from_pde(pdesim.MasterPDE(_config(diffusion=0.0)), layers=2, t_end=2.0,
                                              per_layer="independent")
    layered = transformer.continuous()
    layered.save(tmp_path)
    loaded = pdesim.load(tmp_path)
    u0 = transformer.pdes[0].initial_state(1)
    with torch.no_grad():
        assert torch.equal(loaded.solve(u0, dt=0.25).u, layered.solve(u0, dt=0.25).u)


@pytest.mark.parametrize("kind", ["Classifier", "PDEClassifier"])
def test_a_saved_classifier_gives_the_same_logits(tmp_path, kind):
    options = dict(vocab_size=20, num_classes=3, pooling="cls", diffusion_at=["after_embedding", "after_ffn"])
    if kind == "Classifier":
        model = pdesim.Classifier(_config(tokens=9), layers=2, **options)
    else:
        model = pdesim.PDEClassifier(_config(tokens=9), layers=1, t_end=1.0, solver="rk4", dt=0.25, adjoint=False,
                                     pad_id=None, **options)
    model.save(tmp_path)
    loaded = pdesim.load(tmp_path)
    ids = torch.randint(1, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    assert type(loaded).__name__ == kind and loaded.pad_id == model.pad_id
    assert torch.equal(loaded(ids), model(ids))


def test_loading_reads_no_pickle(tmp_path, monkeypatch):
    pdesim.MasterPDE(_config()).save(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("load unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert isinstance(pdesim.load(tmp_path), pdesim.MasterPDE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model.toml"]


def test_loading_a_directory_without_a_saved_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="no model.toml") as error:
        pdesim.load(tmp_path)
    assert "\n" not in str(error.value)
