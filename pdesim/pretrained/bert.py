"""BERT (``BertModel``) as a post-LN MasterPDE per layer.

BERT's layer is pdesim's post-LN block with h = 1:

    u ← LN₁(u + W_O·Att(u) + b_O)        attention.output.LayerNorm = ln1, attention.output.dense = W_O
    u ← LN₂(u + W₂σ(W₁u + b₁) + b₂)      output.LayerNorm = ln2, intermediate.dense = W₁, output.dense = W₂

with exact GELU (``hidden_act="gelu"``), temperature 1/√d_h, and the checkpoint's LayerNorm ε.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..config import ConfigError
from ..model import MasterPDE
from .architecture import Imported
from .embedding import TokenEmbedding
from .weights import Checkpoint, activation, fill, fill_attention, fill_layernorm, fill_linear, layer_config, require

PREFIXES = ("bert.",)  # BertForMaskedLM, BertForSequenceClassification, ... keep the model under "bert."
PROBE = "embeddings.word_embeddings.weight"


def build(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: str, source: str
) -> Imported:
    """The BERT of ``config`` with the weights of ``tensors``."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"{source}: position_embedding_type={config['position_embedding_type']!r}; pdesim imports 'absolute' only"
        )
    if config.get("is_decoder"):
        raise ConfigError(f"{source}: is_decoder=true (a causal BERT) is not supported; pdesim imports the encoder")
    checkpoint = Checkpoint(tensors, PROBE, PREFIXES, source)
    dim, layers = require(config, "hidden_size", source), require(config, "num_hidden_layers", source)
    heads, ffn = require(config, "num_attention_heads", source), require(config, "intermediate_size", source)
    vocab, positions = require(config, "vocab_size", source), require(config, "max_position_embeddings", source)
    types, eps = config.get("type_vocab_size", 2), config.get("layer_norm_eps", 1e-12)
    cfg = layer_config(
        tokens=positions, dim=dim, heads=heads, ffn_dim=ffn, activation=activation(config, "hidden_act", source),
        norm="post", ln_eps=eps, causal=False, dtype=dtype, device=device,
    )

    embedding = TokenEmbedding(vocab, positions, dim, token_types=types, ln_eps=eps, dtype=dtype, device=device)
    fill(embedding.word.weight, checkpoint.take("embeddings.word_embeddings.weight", (vocab, dim)))
    fill(embedding.position.weight, checkpoint.take("embeddings.position_embeddings.weight", (positions, dim)))
    fill(embedding.token_type.weight, checkpoint.take("embeddings.token_type_embeddings.weight", (types, dim)))
    fill_layernorm(embedding.norm, checkpoint, "embeddings.LayerNorm", dim)

    pdes = []
    for index in range(layers):
        prefix = f"encoder.layer.{index}"
        pde = MasterPDE(cfg)
        fill_attention(
            pde,
            checkpoint.linear(f"{prefix}.attention.self.query", dim, dim),
            checkpoint.linear(f"{prefix}.attention.self.key", dim, dim),
            checkpoint.linear(f"{prefix}.attention.self.value", dim, dim),
            checkpoint.linear(f"{prefix}.attention.output.dense", dim, dim),
        )
        fill_layernorm(pde.ln1, checkpoint, f"{prefix}.attention.output.LayerNorm", dim)
        fill_linear(pde.reaction.w1, *checkpoint.linear(f"{prefix}.intermediate.dense", ffn, dim))
        fill_linear(pde.reaction.w2, *checkpoint.linear(f"{prefix}.output.dense", dim, ffn))
        fill_layernorm(pde.ln2, checkpoint, f"{prefix}.output.LayerNorm", dim)
        pdes.append(pde)
    return Imported("bert", embedding, pdes, torch.nn.Identity())
