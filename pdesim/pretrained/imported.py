"""``PretrainedModel``: an imported network as its PDE and as its own h = 1 Transformer, sharing weights.

    u(0) = embed(ids)                      the model's own embedding (+ ALBERT's projection)
    du/dt = f_l(u) on [l, l + 1)           layer l's field (``pde``: MasterPDE or LayeredPDE)
    u_{l+1} = Block_l(u_l), h = 1          ``transformer``: the source network, layer for layer
    output = readout(u)                    GPT-2's ln_f, else the identity

``switched(norm=..., residual=...)`` turns the design's switches on the same weights.
``norm="tangent"`` is the continuous counterpart of post-LN; its Transformer stays post-LN.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import solvers

from ..config import ConfigError
from ..model import MasterPDE
from ..transformer import DISCRETE_NORMS, LayeredPDE, Transformer


def _distinct(pdes: Sequence[MasterPDE]) -> list[MasterPDE]:
    seen: dict[int, MasterPDE] = {}
    for pde in pdes:
        seen.setdefault(id(pde), pde)
    return list(seen.values())


def _shared_map(pdes: Sequence[MasterPDE], make: Any) -> list[MasterPDE]:
    """``make(pde)`` once per distinct PDE, in depth order: a shared layer stays shared."""
    made = {id(pde): make(pde) for pde in _distinct(pdes)}
    return [made[id(pde)] for pde in pdes]


class PretrainedModel:
    """A transformers checkpoint as ``pde`` (the field), ``transformer`` (h = 1) and ``embed``/``readout``.

    ``layers`` holds layer l's MasterPDE at index l (one object for all layers of a shared-weight
    model). ``tokenizer`` is transformers' tokenizer of the checkpoint, or None.
    """

    def __init__(
        self,
        architecture: str,
        embedding: nn.Module,
        layers: Sequence[MasterPDE],
        readout: nn.Module,
        *,
        tokenizer: Any = None,
        config: dict[str, Any] | None = None,
        source: str = "",
    ):
        self.architecture, self.embedding, self.tokenizer = architecture, embedding, tokenizer
        self.layers, self.readout_norm = list(layers), readout
        self.config, self.source = dict(config or {}), source
        depth = float(len(self.layers))
        distinct = _distinct(self.layers)
        self.pde: MasterPDE | LayeredPDE = distinct[0] if len(distinct) == 1 else LayeredPDE(self.layers, depth)
        # The discrete block of the tangent flow is post-LN (DESIGN §4): same modules, other norm.
        self._discrete = self.layers
        if self.layers[0].cfg.norm not in DISCRETE_NORMS:
            self._discrete = _shared_map(self.layers, lambda pde: pde.switched(norm="post"))
        self.transformer = Transformer(self._discrete, depth)

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """L, the number of layers: the PDE runs over [0, L]."""
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        return self.embedding.word.num_embeddings

    @property
    def max_positions(self) -> int:
        return self.embedding.position.num_embeddings

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].cfg.torch_dtype

    @property
    def device(self) -> torch.device:
        return torch.device(self.layers[0].cfg.device)

    # -- input and output ------------------------------------------------------------------------
    def check_ids(self, input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]) -> torch.Tensor:
        """``input_ids`` as a (B, n) long tensor on the model's device; one line if it cannot be read."""
        ids = torch.as_tensor(input_ids)
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        if ids.ndim != 2 or ids.shape[1] == 0 or ids.is_floating_point() or ids.is_complex():
            raise ConfigError(f"token ids must be integers of shape (batch, tokens), got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.max_positions:
            raise ConfigError(
                f"the input has {ids.shape[1]} tokens, more than the model's {self.max_positions} positions"
            )
        outside = (ids < 0) | (ids >= self.vocab_size)
        if bool(outside.any()):
            raise ConfigError(
                f"token id {int(ids[outside][0])} is outside the vocabulary (0..{self.vocab_size - 1})"
            )
        return ids.to(device=self.device, dtype=torch.long)

    def check_mask(self, attention_mask: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor | None:
        """transformers' attention_mask (1 = token, 0 = padding) as pdesim's (B, n) bool mask, right padding."""
        if attention_mask is None:
            return None
        mask = torch.as_tensor(attention_mask, device=ids.device).bool()
        if mask.shape != ids.shape:
            raise ConfigError(f"attention_mask has shape {tuple(mask.shape)} but the ids have {tuple(ids.shape)}")
        lengths = mask.sum(-1, keepdim=True)
        if not bool((lengths >= 1).all()):
            raise ConfigError("attention_mask has a sequence with no token")
        if not torch.equal(torch.arange(mask.shape[1], device=mask.device) < lengths, mask):
            raise ConfigError("attention_mask must be right padding (tokens first, then only padding)")
        return mask

    def embed(
        self,
        input_ids: torch.Tensor | Sequence[int] | Sequence[Sequence[int]],
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """u(0), shape (B, n, d): the model's own embedding of ``input_ids`` (checked: vocabulary, length)."""
        ids = self.check_ids(input_ids)
        self.check_mask(attention_mask, ids)
        if token_type_ids is not None:
            token_type_ids = torch.as_tensor(token_type_ids, device=ids.device).long()
        return self.embedding(ids, token_type_ids)

    def readout(self, u: torch.Tensor) -> torch.Tensor:
        """The final LayerNorm where the architecture has one (GPT-2's ln_f), else u itself."""
        return self.readout_norm(u)

    def encode(self, texts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, n), attention_mask (B, n)) of ``texts`` by the checkpoint's tokenizer, right-padded."""
        if self.tokenizer is None:
            raise ConfigError(
                "this checkpoint has no tokenizer here (or transformers is not installed: pip install 'pdesim[hf]'); "
                "pass token ids"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        rows = [list(self.tokenizer(text)["input_ids"]) for text in texts]
        longest = max(len(row) for row in rows)
        if longest > self.max_positions:
            raise ConfigError(f"a text has {longest} tokens, more than the model's {self.max_positions} positions")
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([row + [pad] * (longest - len(row)) for row in rows], device=self.device)
        mask = torch.tensor([[1] * len(row) + [0] * (longest - len(row)) for row in rows], device=self.device)
        return ids, mask

    # -- the two views ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def masked(self, mask: torch.Tensor | None):
        """Inside the block every layer's field uses the (B, n) bool padding ``mask``."""
        with contextlib.ExitStack() as stack:
            for pde in _distinct(self.layers):
                stack.enter_context(pde.masked(mask))
            yield self

    def solve(
        self,
        u0: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        method: str = "rk4",
        steps_per_layer: int = 4,
        **kwargs: Any,
    ) -> solvers.Solution:
        """The PDE from u(0) over [0, L], saved at t = 0, 1, ..., L (one state per layer, like ``return_all``).

        Fixed-step methods take ``steps_per_layer`` steps of dt = 1/k per layer (post-LN: each
        followed by the projection LN₂, the projected integrator); adaptive ones use rtol/atol.
        No step straddles two layers' weights.
        """
        if not isinstance(steps_per_layer, int) or isinstance(steps_per_layer, bool) or steps_per_layer < 1:
            raise ConfigError(f"steps_per_layer={steps_per_layer!r} must be an integer >= 1")
        dt = 1.0 / steps_per_layer if method in solvers.FIXED_METHODS else kwargs.pop("dt", None)
        t_eval = [float(t) for t in range(self.depth + 1)]
        with self.masked(mask):
            if isinstance(self.pde, LayeredPDE):
                return self.pde.solve(u0, method=method, dt=dt, t_eval=t_eval, **kwargs)
            return solvers.solve(
                self.pde, u0, (0.0, float(self.depth)), method=method, dt=dt, t_eval=t_eval,
                project=self.pde.projection, **kwargs,
            )

    def refined(self, steps_per_layer: int) -> Transformer:
        """The Transformer with k blocks of h = 1/k per layer (each layer's weights k times): → the PDE as k grows."""
        if not isinstance(steps_per_layer, int) or isinstance(steps_per_layer, bool) or steps_per_layer < 1:
            raise ConfigError(f"steps_per_layer={steps_per_layer!r} must be an integer >= 1")
        pdes = [pde for pde in self._discrete for _ in range(steps_per_layer)]
        return Transformer(pdes, float(self.depth))

    # -- switches --------------------------------------------------------------------------------
    def switched(self, **changes: Any) -> PretrainedModel:
        """The same weights with the design's switches changed: ``norm=``, ``residual=``, ``decay=``, ...

        The new PDEs and Transformer use this model's parameter tensors (``MasterPDE.switched``).
        ``residual=False`` sets the decay its blocks are consistent with
        (``Transformer.continuous_config``) unless ``decay`` is given; ``norm="none"`` also drops
        the read-out LayerNorm.
        """

        def switch(pde: MasterPDE) -> MasterPDE:
            twin = pde.switched(**changes)
            if not twin.cfg.residual and "decay" not in changes:
                twin = pde.switched(**changes, decay=Transformer.continuous_config(twin.cfg).decay)
            return twin

        layers = _shared_map(self.layers, switch)
        readout = nn.Identity() if layers[0].cfg.norm == "none" else self.readout_norm
        return PretrainedModel(
            self.architecture, self.embedding, layers, readout,
            tokenizer=self.tokenizer, config=self.config, source=self.source,
        )

    def __repr__(self) -> str:
        cfg = self.layers[0].cfg
        return (
            f"PretrainedModel({self.architecture}, layers={self.depth}, dim={cfg.dim}, heads={cfg.heads}, "
            f"norm={cfg.norm!r}, residual={cfg.residual}, source={self.source!r})"
        )
