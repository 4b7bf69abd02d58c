"""The method names ``solve`` accepts, defined once: each family's table and their union.

Kept free of heavy imports (torchdiffeq and scipy are only imported when a run uses them), so
``solvers.api`` and the drivers can both read the tables.
"""

from __future__ import annotations

from .steppers import Semilinear
from .tableau import TABLEAUS

EXPLICIT_METHODS = tuple(TABLEAUS)
SPLITTING_METHODS = ("lie", "strang")
SEMILINEAR_METHODS = tuple(Semilinear.ORDERS)
TORCHDIFFEQ_METHODS = ("dopri5", "bosh3", "adaptive_heun", "dopri8", "fehlberg2")
SCIPY_SOLVERS = ("RK45", "RK23", "DOP853", "BDF", "Radau", "LSODA")  # scipy.integrate's class names
SCIPY_METHODS = tuple(f"scipy-{name}" for name in SCIPY_SOLVERS)
FIXED_METHODS = EXPLICIT_METHODS + SPLITTING_METHODS + SEMILINEAR_METHODS
ADAPTIVE_METHODS = TORCHDIFFEQ_METHODS + SCIPY_METHODS
METHODS = FIXED_METHODS + ADAPTIVE_METHODS

# what a run that could not progress suggests instead (see solvers.record's stiffness hint)
STIFF_ADVICE = (
    "etd-rk2 or imex-euler for a diffusion-dominated field (a SemilinearField, or a model with semilinear()), "
    "or scipy-BDF / scipy-Radau"
)
