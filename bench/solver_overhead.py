"""Fixed-step solver overhead: wall time of a solve / the wall time of its nfe bare f(t, u) calls.

A ratio of 1.00 means the integrator costs nothing beyond evaluating the field; the target is
≤ 1.10 for rk4 at N = 256, d = 64. The denominator is a loop of exactly nfe calls of f timed as
a whole (not one call scaled by nfe, which misses the per-call cost a loop pays), paired with the
solve in every round; ratios are medians and ranges over the rounds.

    python bench/solver_overhead.py [--tokens 256] [--dim 64] [--batch 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _timing import format_ratio, paired_rounds

import pdesim
import solvers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", default=["euler", "rk4", "strang", "etd-rk2"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    cfg = pdesim.PDEConfig(tokens=args.tokens, dim=args.dim, heads=args.heads, device=args.device)
    model = pdesim.MasterPDE(cfg)
    u0 = model.initial_state(batch=args.batch)
    dt = 1.0 / args.steps
    torch.set_grad_enabled(False)

    def bare_calls(count: int) -> None:
        for _ in range(count):
            model(0.0, u0)

    nfe = {}
    runs = {}
    for method in args.methods:
        nfe[method] = solvers.solve(model, u0, (0.0, 1.0), method=method, dt=dt).stats["nfe"]
        runs[method] = lambda m=method: solvers.solve(model, u0, (0.0, 1.0), method=m, dt=dt)
        runs[f"{method} bare"] = lambda n=nfe[method]: bare_calls(n)
    times = paired_rounds(runs, rounds=args.rounds)

    print(
        f"N={args.tokens} d={args.dim} heads={args.heads} batch={args.batch} steps={args.steps} "
        f"device={args.device} threads={torch.get_num_threads()}"
    )
    print(f"{'method':>10} {'nfe':>5} {'solve ms':>10} {'nfe f ms':>10} {'overhead ratio [range]':>24}")
    for method in args.methods:
        solve_ms, bare_ms = statistics.median(times[method]) * 1e3, statistics.median(times[f"{method} bare"]) * 1e3
        ratio = format_ratio(times[method], times[f"{method} bare"])
        print(f"{method:>10} {nfe[method]:5d} {solve_ms:10.2f} {bare_ms:10.2f} {ratio:>24}")
    print("(splitting/semilinear nfe counts evaluations of their sub-fields; their ratio is relative to full f calls)")


if __name__ == "__main__":
    main()
