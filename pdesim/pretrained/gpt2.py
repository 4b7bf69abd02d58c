"""GPT-2 (``GPT2Model``) as a pre-LN, causal MasterPDE per layer, with ln_f as the read-out.

GPT-2's block is pdesim's pre-LN block with h = 1:

    u ← u + W_O·Att(LN₁u) + b_O          ln_1 = ln1, attn.c_attn = W_Q|W_K|W_V, attn.c_proj = W_O
    u ← u + W₂σ(W₁·LN₂u + b₁) + b₂       ln_2 = ln2, mlp.c_fc = W₁, mlp.c_proj = W₂

with causal attention and GELU's tanh approximation ("gelu_new"). Its Conv1D layers store their
weights as (in, out), the transpose of nn.Linear's. The temperature is 1/√d_h, or 1 without
``scale_attn_weights``, divided by l + 1 in layer l with ``scale_attn_by_inverse_layer_idx``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..model import MasterPDE
from . import weights
from .architecture import Imported
from .embedding import TokenEmbedding
from .weights import Checkpoint, activation, fill_embedding, fill_layer, fill_layernorm, layer_config, require

PREFIXES = ("transformer.",)  # GPT2LMHeadModel and the other heads keep the model under "transformer."
PROBE = "wte.weight"
EMBEDDING = weights.EmbeddingNames(word="wte.weight", position="wpe.weight")
LAYER = weights.LayerNames(
    attention=("attn.c_attn",), attention_output="attn.c_proj", ln1="ln_1", ffn_in="mlp.c_fc", ffn_out="mlp.c_proj",
    ln2="ln_2", conv1d=True,
)


def build(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: str, source: str
) -> Imported:
    """The GPT-2 of ``config`` with the weights of ``tensors``."""
    checkpoint = Checkpoint(tensors, PROBE, PREFIXES, source)
    dim, layers = require(config, "n_embd", source), require(config, "n_layer", source)
    heads, vocab = require(config, "n_head", source), require(config, "vocab_size", source)
    positions = require(config, "n_positions", source)
    ffn = config.get("n_inner") or 4 * dim
    eps = config.get("layer_norm_epsilon", 1e-5)
    act = activation(config, "activation_function", source)
    base = 1.0 / math.sqrt(dim // heads) if config.get("scale_attn_weights", True) else 1.0

    embedding = TokenEmbedding(vocab, positions, dim, dtype=dtype, device=device)
    fill_embedding(embedding, checkpoint, EMBEDDING)

    pdes = []
    for index in range(layers):
        scale = base / (index + 1) if config.get("scale_attn_by_inverse_layer_idx", False) else base
        cfg = layer_config(
            tokens=positions, dim=dim, heads=heads, ffn_dim=ffn, activation=act, norm="pre", ln_eps=eps,
            causal=True, dtype=dtype, device=device, temperature=scale,
        )
        pdes.append(fill_layer(MasterPDE(cfg), checkpoint, f"h.{index}", LAYER))

    readout = nn.LayerNorm(dim, eps=eps, dtype=dtype, device=device)
    fill_layernorm(readout, checkpoint, "ln_f", dim)
    return Imported("gpt2", embedding, pdes, readout)
