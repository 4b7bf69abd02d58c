"""Fixed-step solver overhead: wall time of a solve / (its nfe × one bare f(t, u) call).

A ratio of 1.00 means the integrator costs nothing beyond evaluating the field; the target is
≤ 1.10 for rk4 at N = 256, d = 64. Both sides are measured interleaved in one run.

    python bench/solver_overhead.py [--tokens 256] [--dim 64] [--batch 4] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
from _timing import interleaved_times

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
    args = parser.parse_args()

    cfg = pdesim.PDEConfig(tokens=args.tokens, dim=args.dim, heads=args.heads, device=args.device)
    model = pdesim.MasterPDE(cfg)
    u0 = model.initial_state(batch=args.batch)
    dt = 1.0 / args.steps
    torch.set_grad_enabled(False)

    nfe = {}
    runs = {"bare f": lambda: model(0.0, u0)}
    for method in args.methods:
        nfe[method] = solvers.solve(model, u0, (0.0, 1.0), method=method, dt=dt).stats["nfe"]
        runs[method] = lambda m=method: solvers.solve(model, u0, (0.0, 1.0), method=m, dt=dt)
    times = interleaved_times(runs, device=args.device)

    print(
        f"N={args.tokens} d={args.dim} heads={args.heads} batch={args.batch} steps={args.steps} "
        f"device={args.device} threads={torch.get_num_threads()}"
    )
    print(f"one bare f(t, u): {times['bare f'] * 1e3:.3f} ms")
    print(f"{'method':>10} {'nfe':>5} {'solve ms':>10} {'nfe*f ms':>10} {'overhead ratio':>15}")
    for method in args.methods:
        bare = nfe[method] * times["bare f"]
        print(
            f"{method:>10} {nfe[method]:5d} {times[method] * 1e3:10.2f} {bare * 1e3:10.2f} {times[method] / bare:15.3f}"
        )
    print("(splitting/semilinear nfe counts evaluations of their sub-fields; their ratio is relative to full f calls)")


if __name__ == "__main__":
    main()
