"""Every figure of the performance table (issue 14), each a ratio against its peer measured in this process.

    python -m bench [--quick] [--rounds 5] [--skip P5 P7 ...]

One thread (``torch.set_num_threads(1)``, numba too). Times are ``torch.utils.benchmark.Timer``
medians; a ratio is formed within each of the paired rounds and printed as ``median [min–max]``.

- P5: explicit Euler for Allen–Cahn c_t = c_xx + c − c³ (Neumann, N = 4096, dx = 1, dt = 0.1,
  float64): seconds per grid point per step of pdesim (``solvers.solve``, eager and compiled) for
  64 fields and for one, of the same field and Euler update in a bare eager loop (the driver's
  limit: pdesim / hand is the driver's overhead), against py-pde's numba Euler stepper on one field.
- P1: rk4 on a tiny system (1, 8), seconds per step against a hand-written rk4 loop
  (add-with-alpha): pdesim eager and compiled, torchdiffeq, torchode (its explicit Runge–Kutta
  with the rk4 tableau and a fixed step), diffrax when installed.
- P7: peak memory and time of gradients through 1000 vs 10 rk4 steps (``bench/gradient_memory.py``,
  fresh subprocesses).
- stencil: ``solvers.stencil.second_difference`` along the token axis (Neumann, N = 256, d = 64,
  B = 4) against a hand stencil, and an add on its output against an add on a contiguous tensor.
- etd-rk2: the share of a step spent in the nonlinear part, in the spectral transforms, and the rest.
- P10: ``bench/train_step.py`` when it exists (run as a subprocess, its own output).

``--quick`` (about 1–2 minutes on an idle machine): fewer steps and rounds, no py-pde (its numba
compilation alone takes a minute or more), no compiled paths, P7 with 1 child each.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from _limits import hand_rk4  # noqa: E402
from _timing import format_ratio, paired_rounds, ratio  # noqa: E402

import solvers  # noqa: E402
from solvers.stencil import second_difference  # noqa: E402


def _line(text: str) -> None:
    print(text, flush=True)


# -- P5 --------------------------------------------------------------------------------------------


def allen_cahn_figures(quick: bool, rounds: int, min_run_time: float) -> None:
    n, fields, dt = 4096, 64, 0.1
    steps = 20 if quick else 100
    generator = torch.Generator().manual_seed(0)
    many = torch.rand(fields, n, generator=generator, dtype=torch.float64) * 2 - 1
    one = many[:1].clone()

    def field(t, c):
        return second_difference(c, 1, "neumann", dim=-1) + c - c * c * c

    def hand(c: torch.Tensor) -> torch.Tensor:
        # the limit of the driver: the same field and the same Euler update (one add with alpha) in a bare loop
        for step in range(steps):
            c = c.add(field(step * dt, c), alpha=dt)
        return c

    def pdesim(c: torch.Tensor, compile: bool = False, compile_steps: int = 1):
        return lambda: solvers.solve(
            field, c, (0.0, steps * dt), method="euler", dt=dt, compile=compile, compile_steps=compile_steps
        )

    runs = {"pdesim 64": pdesim(many), "pdesim 1": pdesim(one)}
    runs.update({"hand 64": lambda: hand(many), "hand 1": lambda: hand(one)})
    check = (solvers.solve(field, many, (0.0, steps * dt), method="euler", dt=dt).u[-1] - hand(many)).abs().max()
    if not quick:
        for name, c, k in (("compiled 64", many, 1), ("compiled 1", one, 1), ("compiled x20 64", many, 20),
                           ("compiled x20 1", one, 20)):
            sol = solvers.solve(field, c, (0.0, steps * dt), method="euler", dt=dt, compile=True, compile_steps=k)
            if sol.stats.get("compiled"):
                _line(f"P5 {name}: compiled in {sol.stats['compile_time']:.1f} s (paid once per shape; "
                      f"{k} step{'s' if k > 1 else ''} per compiled call)")
                runs[name] = pdesim(c, compile=True, compile_steps=k)
    peer = _pypde_stepper(n, dt, steps) if not quick else None
    if peer is not None:
        runs["py-pde 1"] = peer
    _line(f"P5 setup: Euler, N={n}, {steps} steps, float64; pdesim vs hand max |diff| = {float(check):.2e}")
    times = paired_rounds(runs, rounds=rounds, min_run_time=min_run_time)
    points = {name: (fields if name.endswith(" 64") else 1) * n * steps for name in runs}
    per_point = {name: [s / points[name] for s in samples] for name, samples in times.items()}
    for name in runs:
        _line(f"P5 {name:>12}: {statistics.median(per_point[name]) * 1e9:8.3f} ns per grid point per step")
    if peer is None:
        why = "skipped in --quick (numba compiles for minutes)" if quick else "py-pde or numba not installed"
        versus_hand = format_ratio(per_point["pdesim 64"], per_point["hand 64"])
        _line(f"P5 ratios to py-pde: {why}; pdesim 64 / hand 64 = {versus_hand}")
        return
    for name in runs:
        if name != "py-pde 1":
            goal = ""
            if name.startswith("compiled"):
                goal = "  (goal <= 3)" if name.endswith(" 1") else "  (goal <= 1.0)"
            _line(f"P5 {name} / py-pde numba (per grid point): "
                  f"{format_ratio(per_point[name], per_point['py-pde 1'])}{goal}")


def _pypde_stepper(n: int, dt: float, steps: int):
    """py-pde's numba Euler stepper on one field of n points (Neumann), or None when not installed."""
    if importlib.util.find_spec("pde") is None or importlib.util.find_spec("numba") is None:
        return None
    import numba
    import numpy as np
    import pde

    numba.set_num_threads(1)
    grid = pde.CartesianGrid([[0, n]], n)  # dx = 1
    state = pde.ScalarField.random_uniform(grid, -1, 1, rng=np.random.default_rng(0))
    eq = pde.PDE({"c": "laplace(c) + c - c**3"}, bc={"derivative": 0})
    start = time.perf_counter()
    stepper = pde.EulerSolver(eq, backend="numba", adaptive=False).make_stepper(state, dt=dt)
    work = state.copy()
    stepper(work, 0.0, steps * dt)
    _line(f"P5 py-pde: numba stepper compiled in {time.perf_counter() - start:.1f} s")
    return lambda: stepper(work, 0.0, steps * dt)


# -- P1 --------------------------------------------------------------------------------------------


def rk4_figures(quick: bool, rounds: int, min_run_time: float) -> None:
    steps = 100 if quick else 400
    dt = 1.0 / steps
    weights = torch.linspace(-1.0, 1.0, 64, dtype=torch.float64).reshape(8, 8).sin() * 0.5
    u0 = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(1, 8)

    def f(t, u):
        return u @ weights

    runs = {
        "hand": lambda: hand_rk4(f, u0, steps, dt),
        "pdesim": lambda: solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=dt),
    }
    if not quick:
        for name, k in (("pdesim compiled", 1), ("pdesim compiled x20", 20)):
            sol = solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=dt, compile=True, compile_steps=k)
            if sol.stats.get("compiled"):
                _line(f"P1 {name}: compiled in {sol.stats['compile_time']:.1f} s ({k} steps per call)")
                runs[name] = lambda k=k: solvers.solve(
                    f, u0, (0.0, 1.0), method="rk4", dt=dt, compile=True, compile_steps=k
                )
    import torchdiffeq

    grid = torch.tensor([0.0, 1.0], dtype=torch.float64)
    runs["torchdiffeq"] = lambda: torchdiffeq.odeint(f, u0, grid, method="rk4", options={"step_size": dt})
    torchode_run = _torchode_rk4(f, u0, dt)
    if torchode_run is not None:
        runs["torchode"] = torchode_run
    with torch.no_grad():
        times = paired_rounds(runs, rounds=rounds, min_run_time=min_run_time)
    _line(f"P1 setup: rk4, state (1, 8) float64, {steps} steps; hand loop "
          f"{statistics.median(times['hand']) / steps * 1e6:.2f} us per step")
    for name in runs:
        if name != "hand":
            goal = "  (goal <= 1.15)" if name == "pdesim" else ""
            _line(f"P1 {name} / hand loop per step: {format_ratio(times[name], times['hand'])}{goal}")
    diffrax = "installed (not run here: jax is outside this benchmark)" if importlib.util.find_spec("diffrax") else None
    diffrax = diffrax or "not installed"
    _line(f"P1 diffrax: {diffrax}")


def _torchode_rk4(f, u0: torch.Tensor, dt: float):
    """torchode's explicit Runge–Kutta with the classic rk4 tableau and a fixed step, or None."""
    try:
        import torchode
        from torchode.single_step_methods.runge_kutta import ButcherTableau, ExplicitRungeKutta
    except ImportError:
        return None
    from torchode.interpolation import ThirdOrderPolynomialInterpolation

    tableau = ButcherTableau.from_lists(
        c=[0.0, 0.5, 0.5, 1.0], a=[[], [0.5], [0.0, 0.5], [0.0, 0.0, 1.0]], b=[1 / 6, 1 / 3, 1 / 3, 1 / 6],
        b_low_order=[1.0, 0.0, 0.0, 0.0],
    )

    class RK4(ExplicitRungeKutta):
        def convergence_order(self) -> int:
            return 4

        def build_interpolation(self, data):
            return ThirdOrderPolynomialInterpolation.from_k(data.t0, data.dt, data.y0, data.y1, data.k)

    term = torchode.ODETerm(f)
    method = RK4(term, tableau)
    solver = torchode.AutoDiffAdjoint(method, torchode.FixedStepController())
    problem = torchode.InitialValueProblem(y0=u0, t_eval=torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    dt0 = torch.full((1,), dt, dtype=torch.float64)
    try:
        solver.solve(problem, dt0=dt0)
    except Exception as error:  # an API this version does not have: say so instead of a number
        _line(f"P1 torchode: not run ({type(error).__name__}: {(str(error).splitlines() or [repr(error)])[0][:100]})")
        return None
    return lambda: solver.solve(problem, dt0=dt0)


# -- the diffusion stencil, etd-rk2 ------------------------------------------------------------------


def stencil_figures(quick: bool, rounds: int, min_run_time: float) -> None:
    u = torch.randn(4, 256, 64, generator=torch.Generator().manual_seed(0))

    def hand(x: torch.Tensor) -> torch.Tensor:
        ext = torch.cat([x[:, :1], x, x[:, -1:]], dim=1)
        return ext[:, 2:] + ext[:, :-2] - 2 * x

    out = second_difference(u, 1, "neumann", dim=-2)
    assert torch.allclose(out, hand(u), atol=1e-5)
    times = paired_rounds(
        {
            "stencil": lambda: second_difference(u, 1, "neumann", dim=-2),
            "hand": lambda: hand(u),
            "add on stencil output": lambda: out + u,
            "add on contiguous": lambda: u + u,
        },
        rounds=rounds, min_run_time=min_run_time,
    )
    _line(f"stencil (Neumann, B=4, N=256, d=64, float32): output contiguous = {out.is_contiguous()}")
    _line(f"stencil solvers.stencil / token-axis hand stencil: {format_ratio(times['stencil'], times['hand'])}"
          "  (goal <= 1)")
    _line(f"stencil an add on its output / on a contiguous tensor: "
          f"{format_ratio(times['add on stencil output'], times['add on contiguous'])}")


def etd_figures(quick: bool, rounds: int, min_run_time: float) -> None:
    import pdesim

    model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=256, dim=64, heads=4, diffusion=0.1, seed=0))
    u = model.initial_state(batch=4)
    semilinear = model.semilinear()
    A, N = semilinear.linear, semilinear.nonlinear
    stepper = solvers.steppers.Semilinear("etd-rk2")
    dt = 0.05
    with torch.no_grad():
        stepper.step(semilinear, 0.0, u, dt)
        spectral = A.to_spectral(u)
        times = paired_rounds(
            {
                "step": lambda: stepper.step(semilinear, 0.0, u, dt),
                "nonlinear x2": lambda: (N(0.0, u), N(0.0, u)),
                "transforms x5": lambda: [A.to_spectral(u) if k < 3 else A.from_spectral(spectral) for k in range(5)],
            },
            rounds=rounds, min_run_time=min_run_time,
        )
    nonlinear, _, _ = ratio(times["nonlinear x2"], times["step"])
    transforms, _, _ = ratio(times["transforms x5"], times["step"])
    _line(f"etd-rk2 step (B=4, N=256, d=64, D=0.1): {statistics.median(times['step']) * 1e3:.2f} ms; shares: "
          f"nonlinear part (2 evaluations) {nonlinear:.0%}, spectral transforms (5) {transforms:.0%}, "
          f"the rest (factors cached per dt, combinations) {1 - nonlinear - transforms:.0%}")


# -- P7, P10 ---------------------------------------------------------------------------------------------


def memory_figures(quick: bool) -> None:
    import gradient_memory

    for line in gradient_memory.figures((10, 1000), repeats=1 if quick else 2):
        _line(line)


def train_figures(quick: bool) -> None:
    script = HERE / "train_step.py"
    if not script.exists():
        _line("P10: bench/train_step.py is not there")
        return
    args = [sys.executable, str(script), "--threads", "1"] + (["--steps", "10", "--rounds", "3"] if quick else [])
    out = subprocess.run(args, capture_output=True, text=True)
    for line in (out.stdout + (out.stderr if out.returncode else "")).strip().splitlines():
        _line(f"P10 {line}")


FIGURES = {
    "P5": allen_cahn_figures,
    "P1": rk4_figures,
    "stencil": stencil_figures,
    "etd": etd_figures,
    "P7": memory_figures,
    "P10": train_figures,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds, no py-pde, no compile")
    parser.add_argument("--rounds", type=int, help="paired rounds per figure (default 5, --quick 3)")
    parser.add_argument("--skip", nargs="*", default=[], choices=tuple(FIGURES), help="figures to leave out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rounds = args.rounds or (3 if args.quick else 5)
    min_run_time = 0.05 if args.quick else 0.2
    start = time.perf_counter()
    _line(f"python -m bench{' --quick' if args.quick else ''}: torch {torch.__version__}, 1 thread, "
          f"{rounds} paired rounds; ratios are median [min–max] over rounds")
    for name, figure in FIGURES.items():
        if name in args.skip:
            continue
        if name in ("P7", "P10"):
            figure(args.quick)
        else:
            figure(args.quick, rounds, min_run_time)
    _line(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
