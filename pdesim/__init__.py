"""pdesim: the Transformer as a reaction–diffusion–nonlocal PDE (DESIGN.md).

``PDEConfig`` describes the system, ``MasterPDE`` is its right-hand side du/dt = f(t, u) for
``solvers.solve``, and ``pdesim.terms`` holds the individual PDE terms.
"""

from .config import ConfigError, PDEConfig
from .model import MasterPDE
from .terms import Diffusion, GradientReaction, MLPReaction, SoftmaxAttention, SymmetricAttention

__all__ = [
    "ConfigError", "Diffusion", "GradientReaction", "MLPReaction", "MasterPDE", "PDEConfig",
    "SoftmaxAttention", "SymmetricAttention",
]
