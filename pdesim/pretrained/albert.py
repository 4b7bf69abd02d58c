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
from dataclasses import replace
from typing import Any

import torch

from ..config import ConfigError
from ..model import MasterPDE
from . import bert
from .architecture import Imported
from .embedding import TokenEmbedding
from .weights import Checkpoint, LayerNames, fill_embedding, fill_layer

PREFIXES = ("albert.",)
PROBE = "embeddings.word_embeddings.weight"
EMBEDDING = replace(bert.EMBEDDING, projection="encoder.embedding_hidden_mapping_in")
LAYER = LayerNames(
    attention=("attention.query", "attention.key", "attention.value"), attention_output="attention.dense",
    ln1="attention.LayerNorm", ffn_in="ffn", ffn_out="ffn_output", ln2="full_layer_layer_norm",
)


def build(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: str, source: str
) -> Imported:
    """The ALBERT of ``config`` with the weights of ``tensors``."""
    sizes = bert.encoder(config, source, dtype=dtype, device=device)
    if config.get("inner_group_num", 1) != 1:
        raise ConfigError(f"{source}: inner_group_num={config['inner_group_num']!r}; pdesim imports 1 layer per group")
    checkpoint = Checkpoint(tensors, PROBE, PREFIXES, source)
    width, groups = config.get("embedding_size", 128), config.get("num_hidden_groups", 1)
    embedding = TokenEmbedding(
        sizes.vocab, sizes.positions, width, token_types=sizes.token_types, ln_eps=sizes.ln_eps,
        project_to=sizes.cfg.dim, dtype=dtype, device=device,
    )
    fill_embedding(embedding, checkpoint, EMBEDDING)
    prefixes = [f"encoder.albert_layer_groups.{group}.albert_layers.0" for group in range(groups)]
    shared = [fill_layer(MasterPDE(sizes.cfg), checkpoint, prefix, LAYER) for prefix in prefixes]
    # the group of layer l, computed as transformers does (float division, then truncation)
    sequence = [shared[int(index / (sizes.layers / groups))] for index in range(sizes.layers)]
    return Imported("albert", embedding, sequence, torch.nn.Identity())
