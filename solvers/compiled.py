"""``solve(..., compile=True)``: the fixed-grid step (stepper and field together) under torch.compile.

What it covers: every fixed-step method (explicit Runge–Kutta, splitting, IMEX / exponential).
One step, ``stepper.step(field, t, u, h)`` followed by the projection, is one compiled function,
so the field's operations and the stage arithmetic fuse into the same kernels; the step also
returns max |u| of its result, the blow-up guard's reduction fused into the step's last kernel.
``solve(..., compile_steps=k)`` unrolls k steps into one compiled call, which pays torch.compile's
fixed cost per call (tens of µs on a CPU, more than a whole step of a small system) once per k
steps; a run's last steps short of a whole call go through the one-step graph, so at most two
graphs per shape are compiled. The driver around it (the blow-up guard's read-back, events,
callbacks, budgets, Ctrl-C) stays eager and unchanged, so a compiled run stops by the same rule
as an eager one: the first bad step is located by re-integrating with single compiled steps.
Not covered, and run eager with a warning: adaptive and scipy methods (their loops live in
torchdiffeq and scipy), and ``adjoint=True`` under autograd (checkpoint recomputation is not
combined with compiled graphs).

The step time t and size h enter the compiled step as 0-d float64 tensors, so the field sees a
tensor t (``float(t)`` works, with a graph break): one graph serves every step, where Python
floats would recompile as t changes (and torch 2.13's symbolic floats gave wrong states for a
field using t). Compile time is paid up front and reported: ``prepare`` makes two warm-up steps
from u0 (their results are discarded) and reports their wall time as ``stats["compile_time"]``.
Graphs are specialised per shape (``dynamic=False``). Each prepared signature (field, method,
projection, shape, dtype, device, grad mode, steps per call) gets a compiled function of its own,
made from a copy of ``_steps``'s code object: dynamo counts a code object's graphs against its
recompile limit (8 by default), beyond which it runs eager, so one shared function would go eager
after a few fields or shapes in one process. A later solve with a prepared signature (a training
loop solving every batch) reuses its function, skips the eager probe step and the warm-up and
reports ``compile_time`` 0.0; up to ``_PREPARED_SIZE`` signatures are kept.

Where compilation is unavailable (no C compiler for inductor, an unsupported Python, any backend
error on the first call), the warm-up catches the error, warns with one line
(``CompileUnavailableWarning``) and the run goes on eager; the failure is remembered for the
process, so later solves warn without retrying.

An eager step is taken from u0 first (discarded): it is the field's first-call check (shape,
dtype, device, one line on a mismatch) and counts the evaluations one step makes, which the
compiled step then adds to ``nfe`` per step.
"""

from __future__ import annotations

import time
import types
import warnings
from collections.abc import Callable
from typing import Any

import torch

BACKEND: Any = "inductor"  # what torch.compile lowers to (tests swap in a failing backend)

_unavailable: dict[str, str] = {}  # backend name → why compiling failed in this process
# signatures (field, method, shape, dtype, device, grad mode, ...) already prepared in this process →
# (the field, kept alive so that its id is not reused while the entry exists; calls per step; its compiled steps)
_prepared: dict[tuple, tuple[Any, int, Callable]] = {}
_PREPARED_SIZE = 64
_warned: dict = {}  # the warnings registry of not_covered: what the default filter has shown once

class CompileUnavailableWarning(RuntimeWarning):
    """compile=True could not compile here; the run went on eager."""


def _step(stepper: Any, field: Any, project: Callable | None, t: float, u: torch.Tensor, h: float) -> torch.Tensor:
    u = stepper.step(field, t, u, h)
    return u if project is None else project(u)


def _steps(
    stepper: Any, field: Any, project: Callable | None, t: torch.Tensor, u: torch.Tensor, h: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """n steps from (t, u), and max |u| after each (nan when a state is not): the blow-up guard's
    reduction is part of the graph, fused with the step's last kernel instead of a pass of its own."""
    maxima = []
    for i in range(n):  # unrolled when traced: n is a constant of the graph
        u = _step(stepper, field, project, t + i * h, u, h)
        maxima.append(u.detach().abs().amax())
    return u, torch.stack(maxima)


def _compiled(steps_per_call: int = 1) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``_steps`` under torch.compile, with a code object of its own (its own graphs and recompile count).

    Several steps per call (the small-state mode) also ask inductor for its C++ wrapper: the Python
    wrapper it generates otherwise allocates and views every step's buffers in Python, about 40% of an
    unrolled call on a 4096-point state; the C++ wrapper takes a few times longer to compile.
    """
    code = _steps.__code__.replace()  # a new, equal code object: dynamo's caches are keyed by code object
    steps = types.FunctionType(code, _steps.__globals__, _steps.__name__, _steps.__defaults__, _steps.__closure__)
    options = {"cpp_wrapper": True} if steps_per_call > 1 and BACKEND == "inductor" else None
    return torch.compile(steps, backend=BACKEND, dynamic=False, options=options)  # one graph per shape and n


def not_covered(reason: str) -> None:
    """Warns (one line, once per process for each reason under the default filter) that compile=True does
    not apply to this solve, which runs eager: a training loop solving every batch warns once, not per batch."""
    # an explicit location with no source line: the warning prints as one line
    warnings.warn_explicit(
        f"compile=True {reason}: running eager", CompileUnavailableWarning, "solvers.compiled", 0, "solvers.compiled",
        registry=_warned,
    )


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def describe_error(error: BaseException) -> str:
    """``Outer: Root: first line of the root cause`` (a backend's own error is wrapped by dynamo)."""
    root, seen = error, {id(error)}
    while True:
        inner = getattr(root, "inner_exception", None) or root.__cause__
        if inner is None or id(inner) in seen:
            break
        root = inner
        seen.add(id(root))
    lines = str(root).strip().splitlines()
    what = f"{type(root).__name__}: {lines[0][:160]}" if lines else type(root).__name__
    return what if root is error else f"{type(error).__name__}: {what}"


def prepare(
    stepper: Any,
    field: Any,
    counted_stepper: Any,
    counted_field: Any,
    project: Callable[[torch.Tensor], torch.Tensor] | None,
    record: Any,
    u0: torch.Tensor,
    t0: float,
    h: float,
    signature: tuple,
    steps: int = 1,
) -> tuple[CompiledAdvance | None, dict[str, Any]]:
    """The compiled step as ``advance(t, u, h)`` (counting its evaluations into ``record``) and the
    stats to report, or (None, stats) when compiling is unavailable (after one warning line).

    ``stepper``/``field`` are the uncounted pair that is compiled; ``counted_stepper`` and
    ``counted_field`` make the eager first step that checks the field and counts a step's calls.
    ``signature`` (the user's field first, then whatever else selects a compiled graph: method,
    shape, dtype, device, grad mode) skips the probe and the warm-up when this process has prepared
    it before (a training loop solving every batch): ``compile_time`` is then 0.0. ``steps``: the
    steps of one compiled call (its graph and the one-step graph are both compiled up front).
    """
    backend = str(BACKEND)
    key = (id(signature[0]), *signature[1:], steps, backend)
    hit = _prepared.get(key)
    if hit is not None and hit[0] is signature[0]:
        advance = CompiledAdvance(hit[2], stepper, field, project, record, hit[1], steps)
        return advance, {"compiled": True, "compile_time": 0.0, "compile_steps": steps}
    nfe_before = record.nfe
    with torch.no_grad():
        counted_stepper.step(counted_field, t0, u0, h)  # the first-call check, and a step's count
    per_step = record.nfe - nfe_before
    record.nfe = nfe_before
    if backend in _unavailable:
        not_covered(f"is unavailable here ({_unavailable[backend]})")
        return None, {"compiled": False, "compile_time": None}
    start = time.perf_counter()
    try:
        step = _compiled(steps)
        for n in sorted({1, steps}):  # the one-step graph serves tails and the stop search
            step(stepper, field, project, _scalar(t0), u0, _scalar(h), n)
            step(stepper, field, project, _scalar(t0 + h), u0, _scalar(0.5 * h), n)
    except Exception as error:  # the same step just ran eager: what failed is the compilation
        _unavailable[backend] = describe_error(error)
        not_covered(f"is unavailable here ({_unavailable[backend]})")
        return None, {"compiled": False, "compile_time": None}
    compile_time = time.perf_counter() - start
    if len(_prepared) >= _PREPARED_SIZE:
        _prepared.pop(next(iter(_prepared)))
    _prepared[key] = (signature[0], per_step, step)
    advance = CompiledAdvance(step, stepper, field, project, record, per_step, steps)
    return advance, {"compiled": True, "compile_time": compile_time, "compile_steps": steps}


class CompiledAdvance:
    """The compiled step as the fixed-grid driver calls it, counting its evaluations into the record.

    ``advance(t, u, h)`` is one step (the driver's stop search re-integrates with it);
    ``run(t, u, h, n)`` takes n steps in one call, n = 1 or ``steps``, and also returns max |u|
    after each of them, which the driver's guard buffers instead of reducing the state itself.
    """

    def __init__(
        self, fn: Callable, stepper: Any, field: Any, project: Callable | None, record: Any, per_step: int, steps: int
    ):
        self.fn, self.stepper, self.field, self.project, self.record = fn, stepper, field, project, record
        self.per_step, self.steps = per_step, steps

    def __call__(self, t: float, u: torch.Tensor, h: float) -> torch.Tensor:
        return self.run(t, u, h, 1)[0]

    def run(self, t: float, u: torch.Tensor, h: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.record.nfe += self.per_step * n
        return self.fn(self.stepper, self.field, self.project, _scalar(t), u, _scalar(h), n)
