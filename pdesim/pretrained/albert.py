"""ALBERT (``AlbertModel``): one post-LN MasterPDE shared by every layer, an autonomous PDE.

ALBERT's layer is BERT's (attention.LayerNorm = ln1, full_layer_layer_norm = ln2, ffn = W₁,
ffn_output = W₂, GELU's tanh approximation by default), and its L layers reuse the weights of
``num_hidden_groups`` groups — one group in the released models, so θ(t) is constant and the
network is L Euler-type steps of one field. Layer l uses group ⌊l·G/L⌋, as transformers does.
The embedding (width E) is projected to the hidden width d by ``embedding_hidden_mapping_in``,
which pdesim counts as part of u(0).
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

PREFIXES = ("albert.",)
PROBE = "embeddings.word_embeddings.weight"


def build(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: str, source: str
) -> Imported:
    """The ALBERT of ``config`` with the weights of ``tensors``."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"{source}: position_embedding_type={config['position_embedding_type']!r}; pdesim imports 'absolute' only"
        )
    if config.get("inner_group_num", 1) != 1:
        raise ConfigError(f"{source}: inner_group_num={config['inner_group_num']!r}; pdesim imports 1 layer per group")
    checkpoint = Checkpoint(tensors, PROBE, PREFIXES, source)
    dim, layers = require(config, "hidden_size", source), require(config, "num_hidden_layers", source)
    heads, ffn = require(config, "num_attention_heads", source), require(config, "intermediate_size", source)
    vocab, positions = require(config, "vocab_size", source), require(config, "max_position_embeddings", source)
    width, groups = config.get("embedding_size", 128), config.get("num_hidden_groups", 1)
    types, eps = config.get("type_vocab_size", 2), config.get("layer_norm_eps", 1e-12)
    cfg = layer_config(
        tokens=positions, dim=dim, heads=heads, ffn_dim=ffn, activation=activation(config, "hidden_act", source),
        norm="post", ln_eps=eps, causal=False, dtype=dtype, device=device,
    )

    embedding = TokenEmbedding(
        vocab, positions, width, token_types=types, ln_eps=eps, project_to=dim, dtype=dtype, device=device
    )
    fill(embedding.word.weight, checkpoint.take("embeddings.word_embeddings.weight", (vocab, width)))
    fill(embedding.position.weight, checkpoint.take("embeddings.position_embeddings.weight", (positions, width)))
    fill(embedding.token_type.weight, checkpoint.take("embeddings.token_type_embeddings.weight", (types, width)))
    fill_layernorm(embedding.norm, checkpoint, "embeddings.LayerNorm", width)
    fill_linear(embedding.projection, *checkpoint.linear("encoder.embedding_hidden_mapping_in", dim, width))

    shared = []
    for group in range(groups):
        prefix = f"encoder.albert_layer_groups.{group}.albert_layers.0"
        pde = MasterPDE(cfg)
        fill_attention(
            pde,
            checkpoint.linear(f"{prefix}.attention.query", dim, dim),
            checkpoint.linear(f"{prefix}.attention.key", dim, dim),
            checkpoint.linear(f"{prefix}.attention.value", dim, dim),
            checkpoint.linear(f"{prefix}.attention.dense", dim, dim),
        )
        fill_layernorm(pde.ln1, checkpoint, f"{prefix}.attention.LayerNorm", dim)
        fill_linear(pde.reaction.w1, *checkpoint.linear(f"{prefix}.ffn", ffn, dim))
        fill_linear(pde.reaction.w2, *checkpoint.linear(f"{prefix}.ffn_output", dim, ffn))
        fill_layernorm(pde.ln2, checkpoint, f"{prefix}.full_layer_layer_norm", dim)
        shared.append(pde)
    # the group of layer l, computed as transformers does (float division, then truncation)
    sequence = [shared[int(index / (layers / groups))] for index in range(layers)]
    return Imported("albert", embedding, sequence, torch.nn.Identity())
