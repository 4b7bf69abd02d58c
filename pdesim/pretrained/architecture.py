"""What an architecture module hands the loader: embedding, the layers' PDEs in depth order, read-out."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..model import MasterPDE


@dataclass
class Imported:
    """An imported network: u(0) = embedding(ids), layer l is the field ``layers[l]`` on [l, l + 1).

    ``layers`` lists one MasterPDE per layer, the same object where the source shares weights
    (ALBERT); ``readout`` is the final LayerNorm (GPT-2's ln_f) or the identity.
    """

    architecture: str
    embedding: nn.Module
    layers: list[MasterPDE]
    readout: nn.Module
