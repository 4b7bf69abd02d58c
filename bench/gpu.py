"""The GPU figures of the performance issue: per-step cost on the device, and the largest N it integrates.

    python bench/gpu.py [--device cuda] [--max-tokens 262144] [--step-limit 30] [--rounds 5]

1. Per-step cost: rk4 on the (1, 8) system of P1 and on the MasterPDE (N = 64, d = 32, batch 2),
   on the device: milliseconds per step of pdesim's ``solvers.solve`` (eager, and compiled with 20
   steps per call), of a hand-written loop of the same rk4 arithmetic, and of torchdiffeq's rk4,
   each a ratio to the hand loop in paired rounds (``torch.utils.benchmark.Timer`` synchronizes
   CUDA). diffrax's published figure (about 0.9 ms per step on a GPU) is printed beside them for
   comparison, not measured.
2. Largest N: the attention dynamics (MasterPDE, d = 64, 4 heads, batch 1, float32, diffusion
   on) integrated by 4 rk4 steps, N doubling from 1024 until the device runs out of memory, one
   step takes longer than ``--step-limit`` seconds, or N passes ``--max-tokens``; prints each N
   with its seconds per step and peak device memory, then the largest N that ran.

On a CPU (``--device cpu --max-tokens 4096``) it runs the same measurements, which is how it is
tested here; its figures mean something on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _limits import hand_rk4  # noqa: E402
from _timing import format_ratio, paired_rounds  # noqa: E402

import pdesim  # noqa: E402
import solvers  # noqa: E402

DIFFRAX_PUBLISHED_MS_PER_STEP = 0.9


def step_costs(device: str, rounds: int, compile_steps: int) -> list[str]:
    """Milliseconds per rk4 step of pdesim, the hand loop and torchdiffeq on two systems."""
    import torchdiffeq

    weights = (torch.linspace(-1.0, 1.0, 64, dtype=torch.float64).reshape(8, 8).sin() * 0.5).to(device)
    tiny = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(1, 8).to(device)
    model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=64, dim=32, heads=4, seed=0, device=device))
    systems = {
        "(1, 8) linear, float64": (lambda t, u: u @ weights, tiny),
        "MasterPDE N=64 d=32 batch 2, float32": (model, model.initial_state(batch=2)),
    }
    steps, lines = 400, []
    dt = 1.0 / steps
    grid = torch.tensor([0.0, 1.0], dtype=torch.float64, device=device)
    for name, (f, u0) in systems.items():
        runs = {
            "hand": lambda f=f, u0=u0: hand_rk4(f, u0, steps, dt),
            "pdesim": lambda f=f, u0=u0: solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=dt),
            "torchdiffeq": lambda f=f, u0=u0: torchdiffeq.odeint(
                f, u0, grid.to(u0.dtype), method="rk4", options={"step_size": dt}
            ),
        }
        with torch.no_grad():
            sol = solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=dt, compile=True, compile_steps=compile_steps)
            if sol.stats.get("compiled"):
                lines.append(f"{name}: compiled in {sol.stats['compile_time']:.1f} s ({compile_steps} steps per call)")
                runs["pdesim compiled"] = lambda f=f, u0=u0: solvers.solve(
                    f, u0, (0.0, 1.0), method="rk4", dt=dt, compile=True, compile_steps=compile_steps
                )
            times = paired_rounds(runs, rounds=rounds, min_run_time=0.2)
        hand_ms = statistics.median(times["hand"]) / steps * 1e3
        published = f"diffrax published: ~{DIFFRAX_PUBLISHED_MS_PER_STEP} ms"
        lines.append(f"{name}: hand loop {hand_ms:.4f} ms per step ({published})")
        for run in runs:
            if run != "hand":
                ms = statistics.median(times[run]) / steps * 1e3
                versus = format_ratio(times[run], times["hand"])
                lines.append(f"  {run:>16}: {ms:.4f} ms per step, / hand loop {versus}")
    return lines


def _out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def largest_n(device: str, max_tokens: int, step_limit: float) -> list[str]:
    """N doubling from 1024: seconds per rk4 step and peak memory, until memory, time or max_tokens stops it."""
    lines, largest, tokens = [], None, 1024
    cuda = torch.device(device).type == "cuda"
    while tokens <= max_tokens:
        try:
            model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=tokens, dim=64, heads=4, seed=0, device=device))
            u0 = model.initial_state(batch=1)
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            with torch.no_grad():
                sol = solvers.solve(model, u0, (0.0, 4 * 0.05), method="rk4", dt=0.05, blowup=None)
            if cuda:
                torch.cuda.synchronize(device)
            per_step = (time.perf_counter() - start) / 4
        except (RuntimeError, MemoryError) as error:
            if not _out_of_memory(error):
                raise
            lines.append(f"N={tokens}: out of memory")
            break
        finally:
            model = u0 = sol = None  # free before the next size  # noqa: F841
            if cuda:
                torch.cuda.empty_cache()
        peak = f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if cuda else ""
        lines.append(f"N={tokens}: {per_step:.3f} s per rk4 step{peak}")
        largest = tokens
        if per_step > step_limit:
            lines.append(f"N={tokens}: one step took longer than --step-limit {step_limit:g} s; stopping")
            break
        tokens *= 2
    lines.append(f"largest N integrated (d=64, 4 heads, batch 1, float32): {largest}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-tokens", type=int, default=262_144)
    parser.add_argument("--step-limit", type=float, default=30.0, help="seconds per step that end the N doubling")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile-steps", type=int, default=20)
    parser.add_argument("--skip-largest", action="store_true", help="only the per-step figures")
    args = parser.parse_args(argv)
    name = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "CPU"
    print(f"bench/gpu.py: torch {torch.__version__} on {args.device} ({name})", flush=True)
    for line in step_costs(args.device, args.rounds, args.compile_steps):
        print(line, flush=True)
    if not args.skip_largest:
        for line in largest_n(args.device, args.max_tokens, args.step_limit):
            print(line, flush=True)


if __name__ == "__main__":
    main()
