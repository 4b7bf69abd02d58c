"""The PDE Diffusion Layer at each of its seven positions changes the forward pass where it should."""

import pytest
import torch

import pdesim
from pdesim import POSITIONS, Classifier, PDEDiffusion, Transformer

H = 0.5


def _model(**changes):
    settings = dict(tokens=10, dim=8, heads=2, diffusion=0.0, dtype="float64", seed=5) | changes
    return pdesim.MasterPDE(pdesim.PDEConfig(**settings))


def _smoother():
    layer = PDEDiffusion(8, init_tau=0.4).double()
    return layer


def _pair(model, position, layers=1):
    smoother = _smoother()
    plain = Transformer.from_pde(model, layers, layers * H)
    with_layer = Transformer.from_pde(model, layers, layers * H, diffusion_at={position: smoother})
    return plain, with_layer, smoother


@torch.no_grad()
def test_after_embedding_smooths_the_input_once():
    model = _model()
    u0 = model.initial_state(batch=2)
    plain, tf, P = _pair(model, "after_embedding", layers=3)
    assert torch.allclose(tf(u0), plain(P(u0)), atol=1e-13)


@torch.no_grad()
def test_before_head_smooths_the_output_once():
    model = _model()
    u0 = model.initial_state(batch=2)
    plain, tf, P = _pair(model, "before_head", layers=3)
    assert torch.allclose(tf(u0), P(plain(u0)), atol=1e-13)
    assert torch.equal(tf(u0, return_all=True)[:-1], plain(u0, return_all=True)[:-1])


@torch.no_grad()
def test_between_layers_smooths_the_stream_between_consecutive_blocks_only():
    model = _model()
    u0 = model.initial_state(batch=2)
    plain, tf, P = _pair(model, "between_layers", layers=3)
    ours, theirs = tf(u0, return_all=True), plain(u0, return_all=True)
    assert torch.equal(ours[1], theirs[1])  # nothing before the first block
    block = plain.blocks[1]
    assert torch.allclose(ours[2], block(P(ours[1])), atol=1e-13)
    assert torch.allclose(ours[3], block(P(ours[2])), atol=1e-13)


@torch.no_grad()
def test_before_attention_smooths_only_the_attention_input_after_its_norm():
    model = _model(reaction=False)
    u0 = model.initial_state(batch=2)
    _, tf, P = _pair(model, "before_attention")
    assert torch.allclose(tf(u0), u0 + H * model.attention(P(model.ln1(u0))), atol=1e-13)


@torch.no_grad()
def test_after_attention_smooths_only_the_attention_output():
    model = _model(reaction=False)
    u0 = model.initial_state(batch=2)
    _, tf, P = _pair(model, "after_attention")
    assert torch.allclose(tf(u0), u0 + H * P(model.attention(model.ln1(u0))), atol=1e-13)


@torch.no_grad()
def test_after_ffn_smooths_only_the_ffn_output():
    model = _model(attention=False)
    u0 = model.initial_state(batch=2)
    _, tf, P = _pair(model, "after_ffn")
    assert torch.allclose(tf(u0), u0 + H * P(model.reaction(model.ln2(u0))), atol=1e-13)
    attention_only = _model(reaction=False)
    plain, tf, _ = _pair(attention_only, "after_ffn")
    assert torch.equal(tf(u0), plain(u0))  # no FFN, nothing to smooth


@torch.no_grad()
def test_before_norm_smooths_the_stream_entering_each_layernorm():
    model = _model()
    u0 = model.initial_state(batch=2)
    _, tf, P = _pair(model, "before_norm")
    mid = u0 + H * model.attention(model.ln1(P(u0)))
    assert torch.allclose(tf(u0), mid + H * model.reaction(model.ln2(P(mid))), atol=1e-13)


@torch.no_grad()
def test_before_norm_in_post_ln_smooths_the_input_of_each_projection():
    model = _model(norm="post")
    u0 = model.initial_state(batch=2)
    _, tf, P = _pair(model, "before_norm")
    mid = model.ln1(P(u0 + H * model.attention(u0)))
    assert torch.allclose(tf(u0), model.ln2(P(mid + H * model.reaction(mid))), atol=1e-13)


def test_several_positions_at_once_each_get_their_own_layer():
    model = _model()
    tf = Transformer.from_pde(model, 2, 1.0, diffusion_at=["after_embedding", "after_attention", "before_head"])
    layers = [m for m in tf.modules() if isinstance(m, PDEDiffusion)]
    assert len({id(m) for m in layers}) == 3


@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_changes_the_classifiers_logits(position):
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, diffusion=0.0, seed=1, dtype="float64")
    ids = torch.randint(1, 20, (3, 12), generator=torch.Generator().manual_seed(0))
    ids[1, 9:] = 0  # padding
    plain = Classifier(cfg, vocab_size=20, num_classes=4, layers=2)
    placed = Classifier(cfg, vocab_size=20, num_classes=4, layers=2, diffusion_at=[position])
    assert all(torch.equal(a, plain.state_dict()[k]) for k, a in placed.state_dict().items() if k in plain.state_dict())
    with torch.no_grad():
        assert not torch.allclose(placed(ids), plain(ids), atol=1e-6)


def test_classifier_logits_ignore_what_padding_holds():
    cfg = pdesim.PDEConfig(tokens=12, dim=8, heads=2, diffusion=0.2, seed=1, dtype="float64")
    model = Classifier(cfg, vocab_size=20, num_classes=4, layers=2, diffusion_at=["after_embedding"])
    ids = torch.randint(1, 20, (2, 12), generator=torch.Generator().manual_seed(0))
    ids[:, 8:] = 0
    masked = model(ids)
    with torch.no_grad():
        shorter = Classifier(
            cfg.replace(tokens=8), vocab_size=20, num_classes=4, layers=2, diffusion_at=["after_embedding"]
        )
        state = {k: v for k, v in model.state_dict().items() if "position" not in k}
        shorter.load_state_dict(state, strict=False)
        shorter.position.copy_(model.position[:8])
        assert torch.allclose(masked, shorter(ids[:, :8]), atol=1e-10)
    assert masked.shape == (2, 4)


def test_cls_pooling_reads_the_class_token_and_gradients_reach_every_weight():
    cfg = pdesim.PDEConfig(tokens=9, dim=8, heads=2, diffusion=0.1, seed=2)
    model = Classifier(cfg, vocab_size=10, num_classes=3, layers=2, pooling="cls")
    ids = torch.randint(1, 10, (4, 8), generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.cross_entropy(model(ids), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert model.cls.grad is not None and model.cls.grad.abs().sum() > 0
    assert model.embed.weight.grad.abs().sum() > 0
