"""P7: peak memory and time of gradients through a fixed-grid solve, plain backprop vs ``adjoint=True``.

The MasterPDE at N = 64, d = 32 is integrated by rk4 for 10 and for 1000 steps (no t_eval), and
the loss on the final state is backpropagated to the weights. Each measurement runs in a fresh
subprocess, because torch's CPU allocations are invisible to tracemalloc and the resident-set
high-water mark (VmHWM of /proc/self/status, which starts afresh at exec, unlike ``ru_maxrss``,
which Linux carries over from the parent) only rises: the child builds the model,
runs one warm-up solve of 2 steps with backward (so lazily allocated pools are in place), reads
the high-water mark, then runs the measured solve + backward and reads it again. The figure is
the rise, in MB: the peak memory the gradient computation needed beyond what was already there
(a lower bound: memory the warm-up had reached and freed is reused before the mark rises, so a
need of a few tens of MB can read 0; the whole-process peak is printed beside it).
Times come from the same children (one timed solve + backward after the measurement).

    python bench/gradient_memory.py [--steps 10 1000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch


def high_water_mb():
    # VmHWM belongs to this process's memory map, made new at exec; ru_maxrss is not: on Linux it keeps the
    # parent's high-water mark across fork and exec, so a large parent would hide the child's own rise
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


torch.set_num_threads(1)
import pdesim, solvers
steps, adjoint = int(sys.argv[1]), sys.argv[2] == "1"
model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=64, dim=32, heads=4, seed=0))
u0 = model.initial_state(batch=2)
def run(n):
    sol = solvers.solve(model, u0, (0.0, 1.0), method="rk4", dt=1.0 / n, adjoint=adjoint)
    loss = sol.u[-1].pow(2).sum()
    loss.backward()
    model.zero_grad(set_to_none=True)
run(2)
before = high_water_mb()
start = time.perf_counter()
run(steps)
elapsed = time.perf_counter() - start
after = high_water_mb()
start = time.perf_counter()
run(steps)
elapsed = min(elapsed, time.perf_counter() - start)
print(json.dumps({"rise_mb": after - before, "peak_mb": after, "seconds": elapsed}))
"""


def measure(steps: int, adjoint: bool) -> dict[str, float]:
    """One child's rise of the RSS high-water mark (MB) and the faster of its two timed runs (s)."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps), "1" if adjoint else "0"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def figures(steps: tuple[int, int] = (10, 1000), repeats: int = 1) -> list[str]:
    """The P7 lines: peak rise for each (steps, mode), adjoint at n vs 10 steps, time vs plain."""
    results: dict[tuple[int, bool], list[dict[str, float]]] = {}
    for _ in range(repeats):
        for n in steps:
            for adjoint in (False, True):
                results.setdefault((n, adjoint), []).append(measure(n, adjoint))

    def rise(n: int, adjoint: bool) -> float:
        return statistics.median(r["rise_mb"] for r in results[(n, adjoint)])

    def peak(n: int, adjoint: bool) -> float:
        return statistics.median(r["peak_mb"] for r in results[(n, adjoint)])

    small, large = steps
    lines = []
    for n in steps:
        plain, adjoint = rise(n, False), rise(n, True)
        lines.append(
            f"P7 peak RSS rise, {n} rk4 steps: plain backprop {plain:.1f} MB, adjoint=True {adjoint:.1f} MB"
            f" (whole-process peak {peak(n, False):.0f} / {peak(n, True):.0f} MB)"
        )
    times = {
        mode: [r["seconds"] for r in results[(large, mode)]] for mode in (False, True)
    }
    ratio_time = statistics.median(a / b for a, b in zip(times[True], times[False]))
    lines.append(
        f"P7 adjoint {large} / {small} steps, peak rise: {rise(large, True):.1f} / {rise(small, True):.1f} MB"
        f" = {rise(large, True) / max(rise(small, True), 1e-9):.2f}x (goal <= 3x or <= 60 MB);"
        f" adjoint / plain at {large} steps: memory {rise(large, True) / max(rise(large, False), 1e-9):.3f},"
        f" time {ratio_time:.3f} (goal <= 1.5; {repeats} child(ren) each)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[10, 1000])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print("\n".join(figures(tuple(args.steps), args.repeats)))


if __name__ == "__main__":
    main()
