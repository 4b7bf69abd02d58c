"""The ``pdesim`` command line: ``pdesim run`` integrates the master PDE and prints what happened.

Bad input is one line on stderr and exit code 2; an explosion is a result (status ``blowup``),
reported in the summary with exit code 0.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch

import solvers

from .config import ConfigError, PDEConfig
from .model import MasterPDE

NORMS = ("pre", "post", "tangent", "relax", "none")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdesim", description="The Transformer as a reaction-diffusion-nonlocal PDE.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="integrate the master PDE on the built-in default and summarize")
    run.add_argument("--norm", choices=NORMS, default="pre", help="LayerNorm placement (default: pre)")
    run.add_argument("--no-layernorm", action="store_true", help="same as --norm none: no stability control")
    run.add_argument("--no-residual", action="store_true", help="du/dt = G(u) - u: no identity path")
    run.add_argument("--solver", default="rk4", help=f"integration method: {', '.join(solvers.METHODS)}")
    run.add_argument("--dt", type=float, default=0.05, help="step size of fixed-step methods (default 0.05)")
    run.add_argument("--t-end", type=float, default=4.0, help="final time T = depth (default 4)")
    run.add_argument("--saves", type=int, default=9, help="number of saved times, t=0 included (default 9)")
    run.add_argument("--rtol", type=float, default=None, help="relative tolerance of adaptive methods")
    run.add_argument("--atol", type=float, default=None, help="absolute tolerance of adaptive methods")
    run.add_argument("--tokens", type=int, default=64)
    run.add_argument("--dim", type=int, default=32)
    run.add_argument("--heads", type=int, default=4)
    run.add_argument("--diffusion", type=float, default=0.1, help="diffusion coefficient D (0 turns it off)")
    run.add_argument("--bc", default="neumann", help="boundary condition: neumann, periodic, dirichlet")
    run.add_argument("--batch", type=int, default=2)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    run.add_argument("--blowup", type=float, default=1e6, help="max |u| at which the run stops as 'blowup'")
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = PDEConfig(
        tokens=args.tokens,
        dim=args.dim,
        heads=args.heads,
        diffusion=args.diffusion,
        bc=args.bc,
        norm="none" if args.no_layernorm else args.norm,
        residual=not args.no_residual,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
    )
    if args.saves < 2:
        raise ConfigError(f"--saves={args.saves} must be at least 2")
    model = MasterPDE(cfg)
    u0 = model.initial_state(batch=args.batch)
    fixed = args.solver in solvers.FIXED_METHODS
    with torch.no_grad():
        sol = solvers.solve(
            model,
            u0,
            (0.0, args.t_end),
            method=args.solver,
            dt=args.dt if fixed else None,
            rtol=None if fixed else args.rtol,
            atol=None if fixed else args.atol,
            t_eval=torch.linspace(0.0, args.t_end, args.saves, dtype=torch.float64),
            project=model.projection if fixed else None,
            blowup=args.blowup,
            callbacks=[solvers.Progress()],
        )
        print(
            f"master PDE: N={cfg.tokens} tokens, d={cfg.dim}, heads={cfg.heads}, D={cfg.diffusion}, bc={cfg.bc}, "
            f"norm={cfg.norm}, residual={cfg.residual}, solver={args.solver}"
        )
        print(f"{'t':>8} {'mean |u_i|':>12} {'max |u|':>12} {'cos(u, u0)':>11} {'energy':>12}")
        flat0 = u0.flatten(1)
        for t, u in zip(sol.t.tolist(), sol.u):
            token_norm = u.norm(dim=-1).mean()
            cosine = torch.nn.functional.cosine_similarity(u, u0, dim=-1).mean()
            energy = model.energy(u).mean()
            print(
                f"{t:8.3f} {float(token_norm):12.4g} {float(u.abs().max()):12.4g} {float(cosine):11.4f} "
                f"{float(energy):12.4g}"
            )
        growth = float(sol.u[-1].flatten(1).norm(dim=1).mean() / flat0.norm(dim=1).mean())
        rate = math.log(growth) / float(sol.t[-1]) if growth > 0 and float(sol.t[-1]) > 0 else math.nan
    print(
        f"status: {sol.status}  t_event: {sol.t_event}  norm growth: x{growth:.3g} (rate {rate:.3g}/unit time)  "
        f"nfe: {sol.stats['nfe']}  wall: {sol.stats['wall_time']:.2f}s"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
    except (ConfigError, solvers.SolverInputError) as err:
        print(f"pdesim: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
