"""BERT (``BertModel``) as a post-LN MasterPDE per layer.

BERT's layer is pdesim's post-LN block with h = 1:

    u ← LN₁(u + W_O·Att(u) + b_O)        attention.output.LayerNorm = ln1, attention.output.dense = W_O
    u ← LN₂(u + W₂σ(W₁u + b₁) + b₂)      output.LayerNorm = ln2, intermediate.dense = W₁, output.dense = W₂

with exact GELU (``hidden_act="gelu"``), temperature 1/√d_h, and the checkpoint's LayerNorm ε.
``encoder`` reads the config keys BERT and ALBERT share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..config import ConfigError, PDEConfig
from ..model import MasterPDE
from . import weights
from .architecture import Imported
from .embedding import TokenEmbedding
from .weights import Checkpoint, activation, fill_embedding, fill_layer, layer_config, require

PREFIXES = ("bert.",)  # BertForMaskedLM, BertForSequenceClassification, ... keep the model under "bert."
PROBE = "embeddings.word_embeddings.weight"
EMBEDDING = weights.EmbeddingNames(
    word="embeddings.word_embeddings.weight", position="embeddings.position_embeddings.weight",
    token_type="embeddings.token_type_embeddings.weight", norm="embeddings.LayerNorm",
)
LAYER = weights.LayerNames(
    attention=("attention.self.query", "attention.self.key", "attention.self.value"),
    attention_output="attention.output.dense", ln1="attention.output.LayerNorm",
    ffn_in="intermediate.dense", ffn_out="output.dense", ln2="output.LayerNorm",
)


@dataclass(frozen=True)
class Encoder:
    """The sizes of a BERT-family encoder (BERT, ALBERT) and the PDEConfig of its post-LN layers."""

    layers: int
    vocab: int
    positions: int
    token_types: int
    ln_eps: float
    cfg: PDEConfig


def encoder(config: Mapping[str, Any], source: str, *, dtype: torch.dtype, device: str) -> Encoder:
    """The config keys BERT and ALBERT share, read (with one-line refusals of what pdesim does not import)."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"{source}: position_embedding_type={config['position_embedding_type']!r}; pdesim imports 'absolute' only"
        )
    dim, layers = require(config, "hidden_size", source), require(config, "num_hidden_layers", source)
    heads, ffn = require(config, "num_attention_heads", source), require(config, "intermediate_size", source)
    vocab, positions = require(config, "vocab_size", source), require(config, "max_position_embeddings", source)
    types, eps = config.get("type_vocab_size", 2), config.get("layer_norm_eps", 1e-12)
    cfg = layer_config(
        tokens=positions, dim=dim, heads=heads, ffn_dim=ffn, activation=activation(config, "hidden_act", source),
        norm="post", ln_eps=eps, causal=False, dtype=dtype, device=device,
    )
    return Encoder(layers, vocab, positions, types, eps, cfg)


def build(
    config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], *, dtype: torch.dtype, device: str, source: str
) -> Imported:
    """The BERT of ``config`` with the weights of ``tensors``."""
    sizes = encoder(config, source, dtype=dtype, device=device)
    if config.get("is_decoder"):
        raise ConfigError(f"{source}: is_decoder=true (a causal BERT) is not supported; pdesim imports the encoder")
    checkpoint = Checkpoint(tensors, PROBE, PREFIXES, source)
    embedding = TokenEmbedding(
        sizes.vocab, sizes.positions, sizes.cfg.dim, token_types=sizes.token_types, ln_eps=sizes.ln_eps,
        dtype=dtype, device=device,
    )
    fill_embedding(embedding, checkpoint, EMBEDDING)
    pdes = [fill_layer(MasterPDE(sizes.cfg), checkpoint, f"encoder.layer.{index}", LAYER)
            for index in range(sizes.layers)]
    return Imported("bert", embedding, pdes, torch.nn.Identity())
