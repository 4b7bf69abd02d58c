"""One-step maps u(t) ↦ u(t + dt): explicit Runge–Kutta, splitting, IMEX and exponential.

A stepper is the arithmetic of one step and nothing else: ``step(f, t, u, dt)`` advances u by dt
under the field ``f`` it is handed (a callable for ``ExplicitRK``, a ``SplitField`` for
``Splitting``, a ``SemilinearField`` for ``Semilinear``), and ``order`` is its order. Steppers
hold no field, so a driver wraps the field once (to count its evaluations, say) and passes the
wrapper in; the fixed-grid driver (``solvers.fixed``) owns time, saving, projection and stopping.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from .fields import ExactFlow, Field, SemilinearField, SplitField, SubFlow
from .solution import SolverInputError
from .tableau import TABLEAUS, ButcherTableau


class Stepper(Protocol):
    order: int

    def step(self, f: Any, t: float, u: torch.Tensor, dt: float) -> torch.Tensor: ...


class ExplicitRK:
    """One step of an explicit Butcher tableau for du/dt = f(t, u); holds no field."""

    def __init__(self, tableau: ButcherTableau):
        self.tableau = tableau
        self.order = tableau.order
        # Precompute which stage couplings are non-zero so a step does no arithmetic on zeros.
        rows = [[(j, a) for j, a in enumerate(row[:i]) if a != 0.0] for i, row in enumerate(tableau.a)]
        self._stages = tuple((c, tuple(row)) for c, row in zip(tableau.c, rows))
        self._weights = tuple((i, b) for i, b in enumerate(tableau.b) if b != 0.0)
        self._number_step = _straight_line(self._stages, self._weights)

    def step(self, f: Field, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        """u(t + dt) from u(t): the stages call ``f(t + c_i dt, stage_i)``; ``t``, ``dt`` may be 0-d tensors."""
        if not isinstance(dt, torch.Tensor):
            return self._number_step(f, t, u, dt)
        axpy = axpy_for(dt)
        ks: list[torch.Tensor] = []
        for c, row in self._stages:
            stage = u
            for j, a in row:
                stage = axpy(stage, ks[j], dt * a)
            ks.append(f(t + c * dt, stage))
        out = u
        for i, b in self._weights:
            out = axpy(out, ks[i], dt * b)
        return out


@functools.lru_cache(maxsize=64)  # one per tableau: compiling the source costs more than a solve of a few steps
def _straight_line(
    stages: tuple[tuple[float, tuple[tuple[int, float], ...]], ...], weights: tuple[tuple[int, float], ...]
) -> Callable[[Field, float, torch.Tensor, float], torch.Tensor]:
    """``ExplicitRK.step`` for a Python-number step, written out from the tableau as straight-line code.

    The same operations in the same order as the loop (``x.add(k, alpha=dt·a)``, ``f(t + c·dt, ·)``;
    coefficients by ``repr``, which round-trips floats exactly), without its per-stage loop, tuple
    unpacking and calls: on a small state those are a visible share of a step (rk4 on (1, 8): ~1 µs
    of ~18). For example rk4 becomes ``k0 = f(t + 0.0 * dt, u); k1 = f(t + 0.5 * dt, u.add(k0,
    alpha=dt * 0.5)); ...; return u.add(k0, alpha=dt * 0.16666666666666666).add(...)``.
    """
    lines = ["def step(f, t, u, dt):"]
    for index, (c, row) in enumerate(stages):
        stage = "u" + "".join(f".add(k{j}, alpha=dt * {a!r})" for j, a in row)
        lines.append(f"    k{index} = f(t + {c!r} * dt, {stage})")
    lines.append("    return u" + "".join(f".add(k{i}, alpha=dt * {b!r})" for i, b in weights))
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<explicit Runge-Kutta step>", "exec"), namespace)  # noqa: S102
    return namespace["step"]


def _add_scaled_by_number(x: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    return x.add(k, alpha=scale)


def _add_scaled_by_tensor(x: torch.Tensor, k: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.addcmul(k, scale)


def axpy_for(dt: float | torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """x + scale·k for a step ``dt``: ``add(alpha=)`` for a Python number; ``addcmul`` for a 0-d tensor
    (the compiled step, ``solvers.compiled``), which a compiled graph keeps where reading the number
    out of the tensor would break the graph at every stage."""
    return _add_scaled_by_tensor if isinstance(dt, torch.Tensor) else _add_scaled_by_number


def explicit_rk(method: str) -> ExplicitRK:
    """The explicit Runge–Kutta stepper named ``method`` (a key of ``solvers.TABLEAUS``)."""
    try:
        return ExplicitRK(TABLEAUS[method])
    except KeyError:
        raise SolverInputError(f"unknown explicit method {method!r}; choose one of {', '.join(TABLEAUS)}") from None


class _PartFlow:
    """How one part of a split field is advanced over dt: exactly, or by sub-stepping an RK method."""

    def __init__(self, part: Any, default_method: str, rk: dict[str, ExplicitRK]):
        if isinstance(part, SubFlow):
            field, method, substeps = part.field, part.method, part.substeps
        else:
            field, substeps = part, 1
            method = "exact" if isinstance(part, ExactFlow) else default_method
        self.exact = method == "exact"
        self.field = field
        self.substeps = substeps
        if not self.exact and method not in rk:
            rk[method] = explicit_rk(method)  # one stepper per method, shared by the parts using it
        self.rk = None if self.exact else rk[method]
        self.order = math.inf if self.exact else self.rk.order

    def advance(self, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        if self.exact:
            return self.field.flow(u, dt)
        h = dt / self.substeps
        for k in range(self.substeps):
            u = self.rk.step(self.field, t + k * h, u, h)
        return u


class Splitting:
    """Lie–Trotter (parts in order, order 1) or Strang (symmetric, order 2) composition.

    ``step(f, t, u, dt)`` takes a ``SplitField``. How each part is advanced (exact flow or an
    explicit method with sub-steps) is worked out once per field and cached, so a step only runs
    the part flows. ``order`` is the scheme's; ``order_for(f)`` also counts the sub-flows' orders.
    """

    def __init__(self, scheme: str, default_method: str = "rk4"):
        if scheme not in ("lie", "strang"):
            raise SolverInputError(f"unknown splitting scheme {scheme!r}; choose lie or strang")
        if default_method not in TABLEAUS:
            raise SolverInputError(f"unknown sub_method {default_method!r}; choose one of {', '.join(TABLEAUS)}")
        self.scheme = scheme
        self.default_method = default_method
        self.order = 1 if scheme == "lie" else 2
        self._rk: dict[str, ExplicitRK] = {}
        self._plan: tuple[SplitField, list[_PartFlow]] | None = None

    def flows(self, f: SplitField) -> list[_PartFlow]:
        """The part flows of ``f`` (built on the first step with a new field, then reused)."""
        if self._plan is None or self._plan[0] is not f:
            self._plan = (f, [_PartFlow(p, self.default_method, self._rk) for p in f.parts.values()])
        return self._plan[1]

    def order_for(self, f: SplitField) -> int:
        return int(min(self.order, *(fl.order for fl in self.flows(f))))

    def step(self, f: SplitField, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        flows = self.flows(f)
        if self.scheme == "lie" or len(flows) == 1:
            for flow in flows:
                u = flow.advance(t, u, dt)
            return u
        half = 0.5 * dt
        *outer, middle = flows
        for flow in outer:
            u = flow.advance(t, u, half)
        u = middle.advance(t, u, dt)
        for flow in reversed(outer):
            u = flow.advance(t + half, u, half)
        return u


def _series_threshold(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float64 else 1e-1


def phi1(z: torch.Tensor) -> torch.Tensor:
    """φ₁(z) = (e^z − 1)/z, with a Taylor series near 0 where the quotient cancels."""
    small = z.abs() < _series_threshold(z.dtype)
    safe = torch.where(small, torch.ones_like(z), z)
    series = 1 + z / 2 * (1 + z / 3 * (1 + z / 4))
    return torch.where(small, series, torch.expm1(safe) / safe)


def phi2(z: torch.Tensor) -> torch.Tensor:
    """φ₂(z) = (e^z − 1 − z)/z², with a Taylor series near 0."""
    small = z.abs() < _series_threshold(z.dtype)
    safe = torch.where(small, torch.ones_like(z), z)
    series = 0.5 + z / 6 * (1 + z / 4 * (1 + z / 5))
    return torch.where(small, series, (torch.expm1(safe) - safe) / safe**2)


def _coefficient_key(values: Any) -> tuple | None:
    """What identifies the coefficients' current values: storage, layout and version counter of each
    tensor (an in-place update bumps the version), the value of each number. None: not cacheable."""
    out = []
    for c in values:
        if isinstance(c, torch.Tensor):
            if c.is_inference():
                return None  # inference tensors have no version counter
            out.append((c.data_ptr(), tuple(c.shape), c.stride(), c.dtype, c.device, c._version))
        else:
            out.append(float(c))
    return tuple(out)


class Semilinear:
    """du/dt = A u + N(t, u) with A diagonal in a known basis; A is treated exactly or implicitly.

    - ``imex-euler``: (I − dt A) u⁺ = u + dt N(u)  (order 1, unconditionally stable in A)
    - ``etd1``: exponential Euler, u⁺ = e^{dtA} u + dt φ₁(dtA) N(u)  (order 1, exact when N = 0)
    - ``etd-rk2``: Cox–Matthews ETD2RK, a predictor of etd1 and a φ₂ corrector  (order 2)

    ``step(f, t, u, dt)`` takes a ``SemilinearField`` (A = ``f.linear``, N = ``f.nonlinear``).
    The spectral factors of a step size (1/(1 − z), e^z, φ₁(z), φ₂(z) with z = dt·λ) are cached
    per (operator, dt, dtype, device) while they carry no gradient: a fixed grid reuses them on
    every step. Factors of learnable coefficients under autograd are rebuilt each step instead,
    so the graph stays correct (and recomputation under checkpointing sees the same operations);
    an in-place update of a coefficient tensor invalidates its cached factors.
    """

    ORDERS = {"imex-euler": 1, "etd1": 1, "etd-rk2": 2}
    _CACHE_SIZE = 8  # a fixed grid has one or two distinct step sizes; a few more cost nothing

    def __init__(self, scheme: str):
        if scheme not in self.ORDERS:
            raise SolverInputError(f"unknown semilinear scheme {scheme!r}; choose one of {', '.join(self.ORDERS)}")
        self.scheme = scheme
        self.order = self.ORDERS[scheme]
        self._cache: dict[tuple, tuple[Any, tuple, tuple[torch.Tensor, ...]]] = {}

    def _factors(self, A: Any, u: torch.Tensor, dt: float) -> tuple[torch.Tensor, ...]:
        if torch.compiler.is_compiling():
            # inside a compiled step dt is a traced 0-d tensor: the factors become part of the graph
            # (fused with the step's other kernels), where a cache keyed by float(dt) would break it
            return self._compute_factors(A, u, dt)
        coefficients = A.coefficients() if hasattr(A, "coefficients") else ()
        key = (id(A), float(dt), u.dtype, u.device, u.ndim, torch.is_grad_enabled(), _coefficient_key(coefficients))
        hit = self._cache.get(key) if key[-1] is not None else None
        if hit is not None and hit[0] is A:
            return hit[2]
        factors = self._compute_factors(A, u, dt)
        if key[-1] is not None and not any(x.requires_grad for x in factors):
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            # the entry keeps A and the coefficient tensors alive, so that neither A's id nor a
            # tensor's storage address can be reused by another object while the entry exists
            self._cache[key] = (A, tuple(coefficients), factors)
        return factors

    def _compute_factors(self, A: Any, u: torch.Tensor, dt: Any) -> tuple[torch.Tensor, ...]:
        z = dt * A.multiplier(u)
        if self.scheme == "imex-euler":
            return (1 / (1 - z),)
        if self.scheme == "etd1":
            return (torch.exp(z), dt * phi1(z))
        return (torch.exp(z), dt * phi1(z), dt * phi2(z))

    def step(self, f: SemilinearField, t: float, u: torch.Tensor, dt: float) -> torch.Tensor:
        A, N = f.linear, f.nonlinear
        factors = self._factors(A, u, dt)
        n0 = N(t, u)
        if self.scheme == "imex-euler":
            explicit = axpy_for(dt)(u, n0, dt)
            return A.from_spectral(A.to_spectral(explicit) * factors[0])
        decay, p1 = factors[0], factors[1]
        a_hat = decay * A.to_spectral(u) + p1 * A.to_spectral(n0)
        if self.scheme == "etd1":
            return A.from_spectral(a_hat)
        a = A.from_spectral(a_hat)
        correction = A.to_spectral(N(t + dt, a) - n0)
        return A.from_spectral(a_hat + factors[2] * correction)
