"""pdesim: the Transformer as a reaction–diffusion–nonlocal PDE (DESIGN.md).

``PDEConfig`` describes the system, ``MasterPDE`` is its right-hand side du/dt = f(t, u) for
``solvers.solve``, and ``pdesim.terms`` holds the individual PDE terms. ``Transformer`` is the
discrete network that shares a MasterPDE's weights, and ``PDEDiffusion`` the paper's learnable
diffusion layer, insertable at the seven ``POSITIONS``. ``model.save(dir)`` and ``load(dir)`` keep a
model as TOML + safetensors; ``load_pretrained`` imports BERT, ALBERT and GPT-2 checkpoints as PDEs.
"""

from importlib.metadata import PackageNotFoundError, version

from .classifier import Classifier, PDEClassifier
from .config import ConfigError, PDEConfig
from .diffusion_layer import PDEDiffusion
from .model import MasterPDE
from .persist import load
from .pretrained import PretrainedModel, load_pretrained
from .terms import Diffusion, GradientReaction, MLPReaction, SoftmaxAttention, SymmetricAttention
from .transformer import POSITIONS, LayeredPDE, Transformer

try:
    __version__ = version("pdesim")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "POSITIONS", "Classifier", "ConfigError", "Diffusion", "GradientReaction", "LayeredPDE", "MLPReaction",
    "MasterPDE", "PDEClassifier", "PDEConfig", "PDEDiffusion", "PretrainedModel", "SoftmaxAttention",
    "SymmetricAttention", "Transformer", "load", "load_pretrained",
]
