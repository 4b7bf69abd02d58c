"""Fields that expose their structure to structure-aware integrators.

A plain callable ``f(t, u)`` is all the explicit and adaptive methods need. Splitting methods
need the field as a sum of named parts; IMEX and exponential methods need it as a stiff linear
part with a known eigenbasis plus a non-stiff remainder. A model offers these views through
``parts()`` and ``semilinear()``; ``as_split_field`` / ``as_semilinear_field`` find them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from .solution import SolverInputError
from .spectral import DiagonalLinear

Field = Callable[[Any, torch.Tensor], torch.Tensor]


@runtime_checkable
class ExactFlow(Protocol):
    """A field that also knows its exact flow map u ↦ φ_dt(u) (e.g. a linear operator)."""

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor: ...

    def flow(self, u: torch.Tensor, dt: float) -> torch.Tensor: ...


@dataclass(frozen=True)
class SubFlow:
    """How a splitting method advances one part: ``method`` is 'exact' or an explicit RK name."""

    field: Field
    method: str = "rk4"
    substeps: int = 1

    def __post_init__(self) -> None:
        if self.substeps < 1:
            raise SolverInputError(f"substeps must be at least 1, got {self.substeps}")
        if self.method == "exact" and not isinstance(self.field, ExactFlow):
            raise SolverInputError("method='exact' needs a part with a flow(u, dt) method")


class SplitField:
    """f = Σ parts, in order. Each part is a field, an ``ExactFlow`` or a ``SubFlow``."""

    def __init__(self, parts: Mapping[str, Field | SubFlow]):
        if not parts:
            raise SolverInputError("a split field needs at least one part")
        self.parts = dict(parts)

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        total = None
        for part in self.parts.values():
            field = part.field if isinstance(part, SubFlow) else part
            value = field(t, u)
            total = value if total is None else total + value
        return total


class SemilinearField:
    """f(t, u) = A u + N(t, u) with A diagonal in a known basis (stiff) and N the rest."""

    def __init__(self, linear: DiagonalLinear, nonlinear: Field):
        self.linear = linear
        self.nonlinear = nonlinear

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.linear(t, u) + self.nonlinear(t, u)


def as_split_field(f: Any) -> SplitField:
    if isinstance(f, SplitField):
        return f
    parts = getattr(f, "parts", None)
    if callable(parts):
        return SplitField(parts())
    raise SolverInputError(
        "splitting methods need a SplitField or a field with a parts() method returning named sub-fields"
    )


def as_semilinear_field(f: Any) -> SemilinearField:
    if isinstance(f, SemilinearField):
        return f
    semilinear = getattr(f, "semilinear", None)
    if callable(semilinear):
        return semilinear()
    raise SolverInputError(
        "IMEX and exponential methods need a SemilinearField or a field with a semilinear() method"
    )
