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
from .architecture import Imported
from .embedding import TokenEmbedding
from .weights import Checkpoint, activation, fill, fill_attention, fill_layernorm, fill_linear, layer_config, require

PREFIXES = ("transformer.",)  # GPT2LMHeadModel and the other heads keep the model under "transformer."
PROBE = "wte.weight"


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
    fill(embedding.word.weight, checkpoint.take("wte.weight", (vocab, dim)))
    fill(embedding.position.weight, checkpoint.take("wpe.weight", (positions, dim)))

    pdes = []
    for index in range(layers):
        scale = base / (index + 1) if config.get("scale_attn_by_inverse_layer_idx", False) else base
        cfg = layer_config(
            tokens=positions, dim=dim, heads=heads, ffn_dim=ffn, activation=act, norm="pre", ln_eps=eps,
            causal=True, dtype=dtype, device=device, temperature=scale,
        )
        prefix = f"h.{index}"
        pde = MasterPDE(cfg)
        qkv_weight, qkv_bias = checkpoint.conv1d(f"{prefix}.attn.c_attn", 3 * dim, dim)
        fill_attention(
            pde,
            (qkv_weight[:dim], qkv_bias[:dim]),
            (qkv_weight[dim : 2 * dim], qkv_bias[dim : 2 * dim]),
            (qkv_weight[2 * dim :], qkv_bias[2 * dim :]),
            checkpoint.conv1d(f"{prefix}.attn.c_proj", dim, dim),
        )
        fill_layernorm(pde.ln1, checkpoint, f"{prefix}.ln_1", dim)
        fill_linear(pde.reaction.w1, *checkpoint.conv1d(f"{prefix}.mlp.c_fc", ffn, dim))
        fill_linear(pde.reaction.w2, *checkpoint.conv1d(f"{prefix}.mlp.c_proj", dim, ffn))
        fill_layernorm(pde.ln2, checkpoint, f"{prefix}.ln_2", dim)
        pdes.append(pde)

    readout = nn.LayerNorm(dim, eps=eps, dtype=dtype, device=device)
    fill_layernorm(readout, checkpoint, "ln_f", dim)
    return Imported("gpt2", embedding, pdes, readout)
