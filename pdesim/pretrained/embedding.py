"""The initial condition u(0) of an imported model: its own token, position and token-type embeddings.

    u(0) = P(LN_e(E_word[id] + E_pos[i] + E_type[type]))

with the embedding LayerNorm LN_e (BERT, ALBERT; GPT-2 has none), the token-type table (BERT,
ALBERT) and ALBERT's projection P from the embedding width to the hidden width. Positions are
0..n−1 for every sequence, as in the source models with right padding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError


class TokenEmbedding(nn.Module):
    """ids (B, n) → states (B, n, d): the embedding stage of BERT, ALBERT or GPT-2."""

    def __init__(
        self,
        vocab_size: int,
        positions: int,
        width: int,
        *,
        token_types: int = 0,
        ln_eps: float | None = None,
        project_to: int | None = None,
        dtype: torch.dtype = torch.float64,
        device: str = "cpu",
    ):
        super().__init__()
        factory = {"dtype": dtype, "device": device}
        self.word = nn.Embedding(vocab_size, width, **factory)
        self.position = nn.Embedding(positions, width, **factory)
        self.token_type = nn.Embedding(token_types, width, **factory) if token_types else None
        self.norm = nn.LayerNorm(width, eps=ln_eps, **factory) if ln_eps is not None else None
        self.projection = nn.Linear(width, project_to, **factory) if project_to is not None else None

    def forward(self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        u = self.word(ids) + self.position(positions)
        if self.token_type is not None:
            # no token types given: every token is of type 0, as in the source models
            types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids
            u = u + self.token_type(types)
        elif token_type_ids is not None:
            raise ConfigError("token_type_ids given, but this model has no token-type embedding")
        if self.norm is not None:
            u = self.norm(u)
        return u if self.projection is None else self.projection(u)
