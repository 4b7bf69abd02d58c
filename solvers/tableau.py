"""Explicit Runge–Kutta methods as data: a Butcher tableau that checks itself.

A tableau is validated on construction: it must be explicit (strictly lower-triangular A),
consistent (c_i = Σ_j a_ij, Σ b_i = 1) and satisfy the order conditions up to the order it
claims (up to 4). A typo in a coefficient is an error at import, not a silent loss of order.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

_TOL = 1e-12

Number = float | Fraction


def _order_conditions(a: tuple[tuple[float, ...], ...], b: tuple[float, ...], c: tuple[float, ...]):
    """Yields (order, name, value, required) for the rooted-tree conditions up to order 4."""
    s = len(b)
    rng = range(s)
    ac = [sum(a[i][j] * c[j] for j in rng) for i in rng]
    ac2 = [sum(a[i][j] * c[j] ** 2 for j in rng) for i in rng]
    aac = [sum(a[i][j] * ac[j] for j in rng) for i in rng]
    yield 1, "sum(b) = 1", sum(b), 1.0
    yield 2, "sum(b c) = 1/2", sum(b[i] * c[i] for i in rng), 1 / 2
    yield 3, "sum(b c^2) = 1/3", sum(b[i] * c[i] ** 2 for i in rng), 1 / 3
    yield 3, "sum(b A c) = 1/6", sum(b[i] * ac[i] for i in rng), 1 / 6
    yield 4, "sum(b c^3) = 1/4", sum(b[i] * c[i] ** 3 for i in rng), 1 / 4
    yield 4, "sum(b c A c) = 1/8", sum(b[i] * c[i] * ac[i] for i in rng), 1 / 8
    yield 4, "sum(b A c^2) = 1/12", sum(b[i] * ac2[i] for i in rng), 1 / 12
    yield 4, "sum(b A A c) = 1/24", sum(b[i] * aac[i] for i in rng), 1 / 24


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit RK method: stages k_i = f(t + c_i h, u + h Σ_j a_ij k_j), u⁺ = u + h Σ b_i k_i."""

    name: str
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    def __post_init__(self) -> None:
        s = len(self.b)
        if s == 0:
            raise ValueError(f"tableau {self.name!r}: no stages")
        if len(self.c) != s or len(self.a) != s or any(len(row) != s for row in self.a):
            raise ValueError(f"tableau {self.name!r}: A must be {s}x{s} and c must have {s} entries")
        for i, row in enumerate(self.a):
            if any(row[j] != 0 for j in range(i, s)):
                raise ValueError(f"tableau {self.name!r}: row {i} of A is not strictly lower-triangular (explicit)")
            if abs(sum(row) - self.c[i]) > _TOL:
                raise ValueError(f"tableau {self.name!r}: c[{i}]={self.c[i]} but row {i} of A sums to {sum(row)}")
        if not 1 <= self.order <= 4:
            raise ValueError(f"tableau {self.name!r}: order conditions are checked up to 4, got order={self.order}")
        for order, name, value, required in _order_conditions(self.a, self.b, self.c):
            if order <= self.order and abs(value - required) > _TOL:
                raise ValueError(
                    f"tableau {self.name!r} claims order {self.order} but violates {name} (got {value:.15g})"
                )

    @property
    def stages(self) -> int:
        return len(self.b)

    @classmethod
    def from_fractions(cls, name: str, a, b, c, order: int) -> ButcherTableau:
        as_float = lambda row: tuple(float(Fraction(x)) for x in row)  # noqa: E731
        return cls(name, tuple(as_float(row) for row in a), as_float(b), as_float(c), order)


EULER = ButcherTableau.from_fractions("euler", [[0]], [1], [0], order=1)
MIDPOINT = ButcherTableau.from_fractions("midpoint", [[0, 0], ["1/2", 0]], [0, 1], [0, "1/2"], order=2)
HEUN = ButcherTableau.from_fractions("heun", [[0, 0], [1, 0]], ["1/2", "1/2"], [0, 1], order=2)
RALSTON = ButcherTableau.from_fractions("ralston", [[0, 0], ["2/3", 0]], ["1/4", "3/4"], [0, "2/3"], order=2)
SSPRK3 = ButcherTableau.from_fractions(
    "ssprk3",
    [[0, 0, 0], [1, 0, 0], ["1/4", "1/4", 0]],
    ["1/6", "1/6", "2/3"],
    [0, 1, "1/2"],
    order=3,
)
RK4 = ButcherTableau.from_fractions(
    "rk4",
    [[0, 0, 0, 0], ["1/2", 0, 0, 0], [0, "1/2", 0, 0], [0, 0, 1, 0]],
    ["1/6", "1/3", "1/3", "1/6"],
    [0, "1/2", "1/2", 1],
    order=4,
)

TABLEAUS: dict[str, ButcherTableau] = {t.name: t for t in (EULER, MIDPOINT, HEUN, RALSTON, SSPRK3, RK4)}
