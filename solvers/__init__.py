"""Generic time integration in PyTorch: ``solve(f, u0, t_span, method=...) -> Solution``.

Knows nothing of Transformers: ``f`` is any callable ``f(t, u)``. Structure-aware methods read
the structure a field exposes (``parts()`` for splitting, ``semilinear()`` for IMEX/exponential).
"""

from .api import DEFAULT_ATOL, DEFAULT_RTOL, solve
from .callbacks import Callback, Progress, Recorder
from .events import Event, norm_above, steady_state
from .fields import ExactFlow, SemilinearField, SplitField, SubFlow
from .methods import FIXED_METHODS, METHODS, SCIPY_METHODS, TORCHDIFFEQ_METHODS
from .solution import Solution, SolverInputError, Status
from .spectral import DiagonalLinear, Laplacian1D, dct2, dst1, idct2
from .tableau import TABLEAUS, ButcherTableau

__all__ = [
    "DEFAULT_ATOL", "DEFAULT_RTOL", "FIXED_METHODS", "METHODS", "SCIPY_METHODS", "TORCHDIFFEQ_METHODS", "TABLEAUS",
    "ButcherTableau", "Callback", "DiagonalLinear", "Event", "ExactFlow", "Laplacian1D",
    "Progress", "Recorder", "SemilinearField", "Solution", "SolverInputError", "SplitField",
    "Status", "SubFlow", "dct2", "dst1", "idct2", "norm_above", "solve", "steady_state",
]
