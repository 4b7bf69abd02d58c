"""What this machine can take, checked before any work: its devices, and the size of a run or report.

A device name that parses but is absent here (``cuda`` on a CPU build, ``cuda:99``, ``mps``) is
refused in one line.

``pdesim run`` and ``pdesim info`` estimate the memory they will hold at their peak from the
sizes alone (no tensor is made), and the time of a fixed-step run from its number of field
evaluations, and refuse in one line (a ``ConfigError``) naming the estimate, the limit and the
flag that drives it. The estimates are deliberately rough upper bounds of the big terms:

- states: every saved state of the PDE (``saves``) and of the Transformer (``layers + 1``), per
  arm, plus the float32 copies written to states.npz;
- attention: the (batch, heads, N, N) scores, weights and their gradient or tangent;
- metrics: the float64 copies of a trajectory the measures hold, and the (N, N) cosines of one time;
- working: the solver's stages and the FFN's hidden layer.

The memory limit is a fraction of the device's memory (of physical RAM, capped by a cgroup
limit, on the CPU); the time limit is generous, at a nominal throughput, so only absurd runs
(``--t-end 1e9 --dt 1e-9``) are refused.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import solvers

from ..config import ConfigError
from .spec import RunSpec

# The share of the device's memory a run may plan to use.
MEMORY_FRACTION = 0.8
# Fixed-step runs estimated to take longer than this are refused (seconds at the nominal throughput).
TIME_LIMIT = 7 * 24 * 3600.0
# Nominal floating-point throughput (flop/s) and per-evaluation overhead (s) of a field evaluation.
NOMINAL_FLOPS = {"cpu": 2e10, "cuda": 5e12}
EVALUATION_OVERHEAD = 1e-4
# Field evaluations per step of a fixed-step method (rk4: 4); an upper bound over the fixed methods.
STAGES = 4
WORKING_STATES = 24
# float64 copies of a whole trajectory the measures hold at once (the cast, centred and unit tokens, ...).
MEASURE_COPIES = 4


@dataclass(frozen=True)
class Estimate:
    """A memory estimate in bytes by term, with the flags that drive each term."""

    terms: dict[str, int]
    flags: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.terms.values())

    @property
    def largest(self) -> str:
        return max(self.terms, key=lambda name: self.terms[name])


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    raise AssertionError("unreachable")


def human_seconds(s: float) -> str:
    """Seconds as the largest sensible unit: '3.2 days', '12 min'."""
    for unit, size in (("years", 365 * 86400.0), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.3g} {unit}"
    return f"{s:.3g} s"


def _physical_memory() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def device_memory(device: str) -> tuple[int, str]:
    """(bytes of memory of ``device``, what they are): RAM for the CPU, the accelerator's own otherwise."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory, f"{device} memory"
    return _physical_memory(), "RAM"


def memory_limit(device: str) -> tuple[int, str]:
    """(bytes a run may plan to use on ``device``, how that limit is made)."""
    total, what = device_memory(device)
    return int(MEMORY_FRACTION * total), f"{MEMORY_FRACTION:.0%} of the {human_bytes(total)} of {what}"


def _attention_bytes(batch: int, spec: RunSpec, copies: int) -> int:
    cfg = spec.pde
    if not cfg.attention:
        return 0
    return copies * batch * cfg.heads * cfg.tokens**2 * cfg.torch_dtype.itemsize


def run_estimate(spec: RunSpec, arms: int) -> Estimate:
    """The peak memory of ``pdesim run`` with ``arms`` arms."""
    cfg, size = spec.pde, spec.pde.torch_dtype.itemsize
    state = spec.batch * cfg.tokens * cfg.dim
    saved = arms * (spec.saves + spec.layers + 1) * state * (size + 4)  # the states, and their float32 copies
    measured = MEASURE_COPIES * max(spec.saves, spec.layers + 1) * state * 8  # a trajectory's float64 copies
    gram = 3 * spec.batch * cfg.tokens**2 * 8  # the cosines of one saved time
    working = (WORKING_STATES * state + 3 * spec.batch * cfg.tokens * cfg.hidden_dim) * size
    return Estimate(
        {
            "saved states": saved,
            "measured trajectories": measured,
            "attention scores": _attention_bytes(spec.batch, spec, 3),
            "metric Gram matrices": gram,
            "solver stages": working,
        },
        {
            "saved states": "--saves, --layers, --batch, --tokens, --dim",
            "measured trajectories": "--saves, --layers, --batch, --tokens, --dim",
            "attention scores": "--tokens, --batch, --heads",
            "metric Gram matrices": "--tokens, --batch",
            "solver stages": "--tokens, --dim, --batch",
        },
    )


def info_estimate(spec: RunSpec) -> Estimate:
    """The peak memory of ``pdesim info``: Jacobian-vector products at one state (batch 1)."""
    cfg, size = spec.pde, spec.pde.torch_dtype.itemsize
    state = cfg.tokens * cfg.dim
    return Estimate(
        {
            "attention scores": _attention_bytes(1, spec, 6),  # primal and tangent of scores and weights
            "solver stages": (2 * WORKING_STATES * state + 6 * cfg.tokens * cfg.hidden_dim) * size,
        },
        {"attention scores": "--tokens, --heads", "solver stages": "--tokens, --dim"},
    )


def run_seconds(spec: RunSpec, arms: int) -> float | None:
    """Nominal wall time of a fixed-step run (None for an adaptive one: its steps are not known before)."""
    if spec.solver not in solvers.FIXED_METHODS or spec.dt is None:
        return None
    cfg = spec.pde
    steps = math.ceil(spec.t_end / spec.dt)
    flops = spec.batch * cfg.tokens * (8 * cfg.dim**2 + 4 * cfg.tokens * cfg.dim + 4 * cfg.dim * cfg.hidden_dim)
    throughput = NOMINAL_FLOPS.get(torch.device(cfg.device).type, NOMINAL_FLOPS["cuda"])
    return arms * steps * STAGES * (EVALUATION_OVERHEAD + flops / throughput)


def check_device_available(device: str) -> None:
    """A device this torch can allocate on: a well-formed name (checked by PDEConfig) may still be absent here."""
    where = torch.device(device)
    reason = None
    if where.type == "cuda":
        if not torch.cuda.is_available():
            reason = f"this torch ({torch.__version__}) has no CUDA device"
        elif where.index is not None and where.index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            reason = f"this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}"
    elif where.type == "mps" and not torch.backends.mps.is_available():
        reason = "this torch has no MPS (Apple GPU) device"
    elif where.type != "cpu":
        try:
            torch.empty(0, device=where)
        except Exception as err:  # noqa: BLE001 - any backend's refusal is reported in one line
            reason = (str(err).splitlines() or [type(err).__name__])[0][:120]
    if reason is not None:
        raise ConfigError(f"device={device!r} is not available here: {reason}; use --device cpu")



def check_fits(command: str, estimate: Estimate, device: str) -> None:
    """A ConfigError naming the estimate when it is above the memory limit of ``device``."""
    limit, how = memory_limit(device)
    if estimate.total > limit:
        largest = estimate.largest
        raise ConfigError(
            f"{command} would need about {human_bytes(estimate.total)} of memory (mostly {largest}: "
            f"{human_bytes(estimate.terms[largest])}), more than the {human_bytes(limit)} allowed here ({how}); "
            f"lower {estimate.flags[largest]}"
        )


def check_run(spec: RunSpec, arms: int) -> None:
    """Refuses a run whose memory or (fixed-step) time estimate is beyond this machine, in one line."""
    check_fits("this run", run_estimate(spec, arms), spec.pde.device)
    seconds = run_seconds(spec, arms)
    if seconds is not None and seconds > TIME_LIMIT:
        raise ConfigError(
            f"this run would take about {human_seconds(seconds)} ({math.ceil(spec.t_end / spec.dt):.3g} steps of "
            f"dt={spec.dt:g} to T={spec.t_end:g}), more than the {human_seconds(TIME_LIMIT)} pdesim starts; "
            "lower --t-end or raise --dt"
        )


def check_info(spec: RunSpec) -> None:
    """Refuses a stability report too large for this machine, in one line."""
    check_fits("this report", info_estimate(spec), spec.pde.device)
