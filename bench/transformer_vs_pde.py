"""The continuous view costs nothing extra: discrete Transformer vs the PDE stepped by forward Euler.

Same weights (the Transformer is built from the MasterPDE), same shapes, L layers against L
Euler steps of the PDE; both measured interleaved in one run. Target ratio ≤ 1.05.

    python bench/transformer_vs_pde.py [--tokens 256] [--dim 64] [--layers 12] [--device cpu]
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
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--diffusion", type=float, default=0.1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = pdesim.PDEConfig(
        tokens=args.tokens, dim=args.dim, heads=args.heads, diffusion=args.diffusion, device=args.device
    )
    model = pdesim.MasterPDE(cfg)
    tf = pdesim.Transformer.from_pde(model, layers=args.layers, t_end=float(args.layers))
    u0 = model.initial_state(batch=args.batch)
    torch.set_grad_enabled(False)
    times = interleaved_times(
        {
            "transformer": lambda: tf(u0),
            "pde euler": lambda: solvers.solve(model, u0, (0.0, float(args.layers)), method="euler", dt=1.0),
        },
        rounds=21,
        device=args.device,
    )
    print(
        f"N={args.tokens} d={args.dim} heads={args.heads} batch={args.batch} layers={args.layers} "
        f"D={args.diffusion} device={args.device} threads={torch.get_num_threads()}"
    )
    print(
        f"transformer forward: {times['transformer'] * 1e3:.2f} ms; PDE, {args.layers} Euler steps: "
        f"{times['pde euler'] * 1e3:.2f} ms"
    )
    print(f"transformer / PDE-Euler wall-time ratio: {times['transformer'] / times['pde euler']:.3f}")


if __name__ == "__main__":
    main()
