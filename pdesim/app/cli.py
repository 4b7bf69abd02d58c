"""The ``pdesim`` command line: ``run`` an experiment, ``compare`` runs, print stability ``info``.

Bad input is one line on stderr and exit code 2. An explosion is a result (status ``blowup`` in
the summary, exit code 0). Ctrl-C saves the partial run, says so, and exits with 130.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import solvers

from ..config import NORMS, ConfigError, check_choice
from ..stopping import sigterm_as_interrupt
from ..train import TrainSpec
from ..transformer import POSITIONS
from . import budget, pretrained_run, threads, tomlio
from .arms import arm_settings
from .plot_cmd import (
    add_figure_flags,
    add_plot_command,
    compare_figure_writer,
    compare_training_writer,
    figure_options,
    plot_command,
    run_figure_writer,
)
from .presets import PRESETS, finding_sentence, preset_spec
from .rundir import RunDirError, check_out, read_metrics, read_summary, staged_directory, write_run
from .runner import planned_arms, run, run_name
from .spec import RunSpec
from .stability import stability_report
from .summary import run_notes
from .sweep import sweep as run_sweep_file
from .train_dir import read_train_rows, run_training

# CLI flag -> PDEConfig field, for the flags that map one to one.
PDE_FLAGS = {
    "tokens": "tokens",
    "dim": "dim",
    "heads": "heads",
    "diffusion": "diffusion",
    "bc": "bc",
    "seed": "seed",
    "device": "device",
    "dtype": "dtype",
    "init_scale": "init_scale",
}
RUN_FLAGS = ("solver", "dt", "t_end", "rtol", "atol", "batch", "saves", "layers", "blowup")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    stabilizers = parser.add_argument_group("stabilizers")
    stabilizers.add_argument("--no-residual", action="store_true", help="drop the identity path: du/dt = G(u) - k u")
    stabilizers.add_argument("--no-layernorm", action="store_true", help="norm = none: no stability control")
    stabilizers.add_argument("--norm", choices=NORMS, help="LayerNorm mode (default pre)")
    system = parser.add_argument_group("the system")
    system.add_argument("--tokens", type=int, help="number of tokens N (default 64)")
    system.add_argument("--dim", type=int, help="channels d (default 32)")
    system.add_argument("--heads", type=int, help="attention heads (default 4)")
    system.add_argument("--diffusion", type=float, help="diffusion coefficient D (default 0.1; 0 = off)")
    system.add_argument("--bc", help="boundary condition: neumann, periodic, dirichlet")
    system.add_argument("--init-scale", type=float, help="weight gain: entries ~ N(0, s^2/fan_in)")
    system.add_argument("--seed", type=int, help="seed of weights and initial state (default 0)")
    integration = parser.add_argument_group("integration")
    integration.add_argument("--solver", help=f"one of {', '.join(solvers.METHODS)} (default rk4)")
    integration.add_argument("--dt", type=float, help="step of fixed-step solvers (default 0.05)")
    integration.add_argument("--steps", type=int, help="number of fixed steps over [0, T] (sets dt = T/steps)")
    integration.add_argument("--t-end", type=float, help="final time T, the depth (default 8; presets set their own)")
    integration.add_argument("--rtol", type=float, help="relative tolerance of adaptive solvers")
    integration.add_argument("--atol", type=float, help="absolute tolerance of adaptive solvers")
    integration.add_argument("--saves", type=int, help="saved times including t = 0 (default 41)")
    integration.add_argument("--layers", type=int, help="layers L of the Transformer, h = T/L (default 16)")
    integration.add_argument("--batch", type=int, help="sequences per run (default 2)")
    integration.add_argument("--blowup", type=float, help="max |u| at which a run stops as 'blowup' (default 1e6)")
    integration.add_argument("--device", help="torch device (default cpu)")
    integration.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    parser.add_argument("--preset", choices=tuple(PRESETS), help="a shipped experiment (see README)")
    parser.add_argument("--config", help="a config.toml (e.g. from a run directory); flags override it")
    imported = parser.add_argument_group("a pretrained model (BERT, ALBERT, GPT-2) as a PDE")
    imported.add_argument("--pretrained", help="a transformers checkpoint directory (safetensors) or hub name")
    imported.add_argument("--text", help="its input, through the checkpoint's tokenizer")
    imported.add_argument("--ids", help="its input as token ids, e.g. 101,7592,102")
    imported.add_argument("--steps-per-layer", type=int, help="fixed steps of dt = 1/k per layer (default 4)")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2) like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"pdesim: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="pdesim", description="The Transformer as a reaction-diffusion-nonlocal PDE.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    run_cmd = commands.add_parser("run", help="integrate the PDE and run the Transformer side by side, measure, draw")
    _add_config_flags(run_cmd)
    run_cmd.add_argument("--out", help="run directory (default runs/<preset or switches>-<time>)")
    run_cmd.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier pdesim run")
    run_cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    run_cmd.add_argument(
        "--compile", action="store_true", default=None, help="torch.compile each fixed step (compile time is reported)"
    )
    threads.add_threads_flag(run_cmd)
    add_figure_flags(run_cmd)
    compare = commands.add_parser("compare", help="overlay the curves of several run directories")
    compare.add_argument("runs", nargs="+", help="run directories")
    compare.add_argument("--out", help="folder for the comparison figures (default compare-<time>)")
    add_figure_flags(compare)
    add_plot_command(commands)
    info = commands.add_parser("info", help="stability report: Laplacian spectrum, CFL number, Jacobian, solver")
    _add_config_flags(info)
    threads.add_threads_flag(info)
    train = commands.add_parser("train", help="train the classifier (or the PDE with its solver) on a generated task")
    _add_train_flags(train)
    threads.add_threads_flag(train)
    add_figure_flags(train)
    sweep = commands.add_parser("sweep", help="run a grid of train (or run) configurations and collect one table")
    sweep.add_argument("file", help="sweep TOML: kind, [base] settings, [grid] lists to cross, [sweep] options")
    sweep.add_argument("--out", help="sweep directory (default from the file, or sweeps/<file name>)")
    sweep.add_argument("--workers", type=int, help="parallel local processes (default 2)")
    sweep.add_argument("--engine", choices=("local", "ray"), default="local", help="local processes or Ray tasks")
    sweep.add_argument("--address", help="a Ray cluster to join (default: a local Ray runtime)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    threads.add_threads_flag(sweep)
    add_figure_flags(sweep)  # the sweep's chart; the points' run directories keep png
    return parser


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", help="listops, pathfinder or recall (default listops)")
    parser.add_argument("--seq-len", type=int, help="maximum sequence length (default 128)")
    parser.add_argument("--n-train", type=int, help="training examples (default 4000)")
    parser.add_argument("--n-eval", type=int, help="validation examples (default 500)")
    parser.add_argument("--model", choices=("transformer", "pde"), help="discrete classifier or PDE in the loop")
    parser.add_argument("--layers", type=int, help="blocks L (default 2); the PDE model integrates to T = L")
    parser.add_argument("--dim", type=int, help="channels d (default 64)")
    parser.add_argument("--heads", type=int, help="attention heads (default 4)")
    parser.add_argument("--norm", choices=NORMS, help="LayerNorm mode (default pre)")
    parser.add_argument("--no-layernorm", action="store_true", help="norm = none")
    parser.add_argument("--no-residual", action="store_true", help="no identity path in the blocks")
    parser.add_argument("--diffusion", type=float, help="the PDE's own diffusion coefficient D (default 0)")
    parser.add_argument(
        "--diffusion-position",
        action="append",
        choices=POSITIONS,
        help="insert a PDE Diffusion Layer here (repeatable)",
    )
    parser.add_argument("--diffusion-scales", type=int, nargs="+", help="dilations of the diffusion layers")
    parser.add_argument("--solver", help="solver of the PDE model (default rk4)")
    parser.add_argument("--solver-dt", type=float, help="its step (default 0.25)")
    parser.add_argument("--adjoint", action="store_true", help="memory-efficient gradients through the solver")
    parser.add_argument(
        "--compile", action="store_true", default=None,
        help="torch.compile the PDE's solver step or the Transformer's forward pass (compile time is reported)",
    )
    parser.add_argument("--steps", type=int, help="optimizer steps (default 500)")
    parser.add_argument("--batch", type=int, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, help="peak learning rate of AdamW (default 1e-3)")
    parser.add_argument("--warmup", type=int, help="linear warm-up steps (default 50)")
    parser.add_argument("--clip", type=float, help="gradient clipping norm (default 1.0)")
    parser.add_argument("--no-clip", action="store_true", help="no gradient clipping (for explosion probes)")
    parser.add_argument("--eval-every", type=int, help="steps between validations (default 100)")
    parser.add_argument(
        "--log-every", type=int, help="steps between probes (layer gradients, activations, attention) (default 10)"
    )
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: only the last)")
    parser.add_argument("--seed", type=int, help="seed of weights and batches (default 0)")
    parser.add_argument("--config", help="a config.toml with a [train] table; flags override it")
    parser.add_argument("--resume", help="a checkpoint (.safetensors) to continue from")
    parser.add_argument("--out", help="run directory (default runs/train-<task>-<time>)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it holds an earlier pdesim run")
    parser.add_argument("--tensorboard", action="store_true", help="also write the scalars to RUN/tensorboard")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


TRAIN_FLAGS = (
    "task",
    "seq_len",
    "n_train",
    "n_eval",
    "model",
    "layers",
    "dim",
    "heads",
    "norm",
    "diffusion",
    "solver",
    "solver_dt",
    "steps",
    "batch",
    "lr",
    "warmup",
    "clip",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "seed",
    "compile",
)


def resolve_train_spec(args: argparse.Namespace) -> TrainSpec:
    """The TrainSpec from --config and the flags (flags win)."""
    table: dict[str, Any] = {}
    if args.config:
        tables = tomlio.load(args.config)
        if "train" not in tables:
            raise ConfigError(f"config file {args.config!r} has no [train] table")
        table = dict(tables["train"])
    table.update({name: getattr(args, name) for name in TRAIN_FLAGS if getattr(args, name) is not None})
    if _norm_switch(args) is not None:
        table["norm"] = _norm_switch(args)
    if args.no_residual:
        table["residual"] = False
    if args.no_clip:
        if args.clip is not None:
            raise ConfigError("give --clip or --no-clip, not both")
        table["clip"] = None
    if args.diffusion_position:
        table["diffusion_positions"] = list(args.diffusion_position)
    if args.diffusion_scales:
        table["diffusion_scales"] = list(args.diffusion_scales)
    if args.adjoint:
        table["adjoint"] = True
    spec = TrainSpec.from_table(table)
    return spec


def _norm_switch(args: argparse.Namespace) -> str | None:
    """The LayerNorm mode the flags ask for (--norm or --no-layernorm), or None."""
    if args.no_layernorm:
        if args.norm not in (None, "none"):
            raise ConfigError(f"--no-layernorm contradicts --norm {args.norm}")
        return "none"
    return args.norm


def resolve_spec(args: argparse.Namespace) -> RunSpec:
    """The RunSpec from --config, --preset and the flags (flags win)."""
    if args.config:
        if args.preset:
            raise ConfigError("give --preset or --config, not both: a config file names its own preset")
        spec = RunSpec.from_tables(tomlio.load(args.config))
    else:
        spec = preset_spec(args.preset or "standard")
    pde_changes: dict[str, Any] = {
        field: getattr(args, flag) for flag, field in PDE_FLAGS.items() if getattr(args, flag) is not None
    }
    if _norm_switch(args) is not None:
        pde_changes["norm"] = _norm_switch(args)
    if args.no_residual:
        pde_changes["residual"] = False
    run_changes = {name: getattr(args, name) for name in RUN_FLAGS if getattr(args, name) is not None}
    run_changes.update(_step_changes(args, spec, run_changes))
    if getattr(args, "compile", None):
        run_changes["compile"] = True
    spec = replace(spec, pde=spec.pde.replace(**pde_changes), **run_changes)
    budget.check_device_available(spec.pde.device)
    return spec


def _step_changes(args: argparse.Namespace, spec: RunSpec, run_changes: dict[str, Any]) -> dict[str, Any]:
    """dt, rtol and atol as the solver asks: a flag its solver has no use for is refused, not ignored."""
    solver = check_choice("solver", run_changes.get("solver", spec.solver), solvers.METHODS)
    if args.steps is not None:
        if args.dt is not None:
            raise ConfigError("give --steps or --dt, not both")
        if args.steps < 1:
            raise ConfigError(f"--steps={args.steps} must be at least 1")
    if solver not in solvers.FIXED_METHODS:
        for flag in ("dt", "steps"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag} sets the step of fixed-step solvers; {solver} is adaptive and picks its "
                                  "own steps (give --rtol/--atol)")
        return {"dt": None}
    for flag in ("rtol", "atol"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag} is a tolerance of adaptive solvers; the fixed-step solver {solver} has none "
                              "(give --dt or --steps, or an adaptive --solver such as dopri5)")
    changes: dict[str, Any] = {"rtol": None, "atol": None} if solver != spec.solver else {}
    if args.steps is not None:
        changes["dt"] = run_changes.get("t_end", spec.t_end) / args.steps
    elif args.dt is None and spec.dt is None:  # switched from an adaptive config: the default step
        changes["dt"] = RunSpec().dt
    return changes


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def summary_table(summary: dict[str, Any]) -> str:
    """The end-of-run table: one row per arm and source."""
    head = (
        f"{'arm':<28} {'source':<12} {'status':<10} {'growth':>9} {'rate/t':>8} {'cos(u,u0)':>9} "
        f"{'CKA':>6} {'rank res':>8} {'E mono':>6}"
    )
    lines = [head, "-" * len(head)]
    for label, arm in summary["arms"].items():
        lines.append(
            f"{label:<28} {'pde':<12} {arm['status']:<10} {_format(arm.get('norm_growth')):>9} "
            f"{_format(arm.get('growth_rate')):>8} {_format(arm.get('final_mean_cosine')):>9} "
            f"{_format(arm.get('final_cka')):>6} {_format(arm.get('final_residual')):>8} "
            f"{_format(arm.get('energy_monotone_fraction')):>6}"
        )
        tf = arm.get("transformer")
        if tf:
            status = "blowup" if tf.get("blowup_layer") is not None else "-"
            lines.append(
                f"{'':<28} {'transformer':<12} {status:<10} {_format(tf['norm_growth']):>9} "
                f"{_format(tf['growth_rate']):>8} {_format(tf['final_mean_cosine']):>9} "
                f"{_format(tf['final_cka']):>6} {_format(tf['final_residual']):>8} {'':>6}"
            )
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    if pretrained_run.is_pretrained_run(args):
        default = Path("runs") / f"pretrained-{time.strftime('%Y%m%d-%H%M%S')}"
        return pretrained_run.run_command(args, default, summary_table)
    pretrained_run.refuse_input_flags(args)
    spec = resolve_spec(args)
    budget.check_run(spec, len(planned_arms(spec)))
    default = Path("runs") / f"{run_name(spec)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = check_out(Path(args.out) if args.out else default, overwrite=args.overwrite)  # before any work
    figures = run_figure_writer(args)  # --figure-format/--dpi checked before any work
    outcome = run(spec, progress=not args.quiet)
    log = io.StringIO()
    print(f"pdesim run: preset {spec.preset}: {outcome.summary['description']}", file=log)
    cfg = spec.pde
    print(f"N={cfg.tokens} d={cfg.dim} heads={cfg.heads} D={cfg.diffusion} bc={cfg.bc} seed={cfg.seed}", file=log)
    print(arm_settings(planned_arms(spec), spec), file=log)
    print(summary_table(outcome.summary), file=log)
    notes = run_notes(outcome.summary)
    print("\n".join(notes), file=log, end="\n" if notes else "")
    for label, arm in outcome.summary["arms"].items():
        if arm["status"] != "success":
            print(f"{label}: {arm['status']}: {arm['message']}", file=log)
    findings = outcome.summary.get("findings")
    if findings:
        print("finding: " + finding_sentence(spec.preset, findings), file=log)
    if outcome.interrupted:
        print("interrupted: the partial run (arms finished so far) is saved", file=log)
    written = write_run(outcome, out, log_text=log.getvalue(), figures=figures, overwrite=args.overwrite)
    print(log.getvalue() + f"run directory: {written.path}")
    if not written.figures_complete:
        print("interrupted while saving: the run's data is saved, its figures are incomplete", file=sys.stderr)
    return 130 if outcome.interrupted or not written.figures_complete else 0


def _train(args: argparse.Namespace) -> int:
    spec = resolve_train_spec(args)
    out = Path(args.out) if args.out else Path("runs") / f"train-{spec.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    resume = Path(args.resume) if args.resume else None
    outcome = run_training(
        spec, out, resume=resume, quiet=args.quiet, overwrite=args.overwrite, tensorboard=args.tensorboard,
        **figure_options(args),  # checked before any training
    )
    summary = outcome.summary
    print(
        f"pdesim train: {spec.task} ({spec.model}, norm={spec.norm}, residual={spec.residual}, "
        f"diffusion at {', '.join(spec.diffusion_positions) or 'none'}): status {summary['status']}"
    )
    print(
        f"steps {summary['steps_done']}, final loss {_format(summary['final_train_loss'])}, "
        f"val accuracy {_format(summary['final_val_accuracy'])} (best {_format(summary['best_val_accuracy'])}, "
        f"chance {_format(summary['chance_accuracy'])}), max grad norm {_format(summary['max_grad_norm'])}, "
        f"max activation {_format(summary['max_activation'])}, first non-finite step "
        f"{_format(summary['first_nonfinite_step'])}"
    )
    if summary.get("compile_time") is not None:
        print(f"compiled in {summary['compile_time']:.1f} s (once per shape)")
    if outcome.summary["interrupted"]:
        print("interrupted: the partial run is saved")
    print(f"run directory: {out}")
    return 130 if summary["interrupted"] else 0


def _sweep(args: argparse.Namespace) -> int:
    outcome = run_sweep_file(
        Path(args.file),
        out=Path(args.out) if args.out else None,
        workers=args.workers,
        engine=args.engine,
        address=args.address,
        quiet=args.quiet,
        **figure_options(args),  # checked before any point runs
    )
    print(outcome.table)
    print(
        f"{outcome.points} points: {outcome.skipped} finished earlier (skipped), {outcome.done} done, "
        f"{outcome.failed} failed"
        + (f" (exit codes and stderr in {outcome.out / 'failures'})" if outcome.failed else "")
    )
    print(f"sweep directory: {outcome.out}")
    if outcome.interrupted:
        print("interrupted: the points finished so far are tabulated; run the same command again to resume")
        return 130
    return 1 if outcome.failed else 0


def _compare_text(run_dir: str, summary: dict[str, Any], kind: str) -> str:
    """What compare prints for one directory; a summary.json missing what it needs is a RunDirError."""
    try:
        if kind == "train":
            return (
                f"== {run_dir}: status {summary['status']}, val accuracy {_format(summary['final_val_accuracy'])}, "
                f"max grad norm {_format(summary['max_grad_norm'])}, "
                f"first non-finite step {_format(summary['first_nonfinite_step'])}"
            )
        return f"== {run_dir}: preset {summary['preset']}\n" + summary_table(summary)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else type(err).__name__
        path = Path(run_dir) / "summary.json"
        raise RunDirError(f"{path} is damaged ({what}); it is not a complete pdesim summary") from None


def _compare(args: argparse.Namespace) -> int:
    """Reads and checks every directory first, then writes the figures atomically into a new --out."""
    runs = [Path(r) for r in args.runs]
    summaries = {str(r): read_summary(r) for r in runs}
    kinds = {s.get("kind", "run") for s in summaries.values()}
    if len(kinds) > 1:
        raise RunDirError("compare takes either pdesim run directories or pdesim train directories, not both")
    kind = kinds.pop()
    if kind not in ("run", "train"):
        raise RunDirError(f"compare takes pdesim run or train directories, not kind={str(kind)[:40]!r}")
    text = [_compare_text(run_dir, summary, kind) for run_dir, summary in summaries.items()]
    read = read_train_rows if kind == "train" else read_metrics
    rows = {str(r): read(r) for r in runs}
    out = check_out(Path(args.out) if args.out else Path(f"compare-{time.strftime('%Y%m%d-%H%M%S')}"))
    draw = compare_training_writer(args, summaries) if kind == "train" else compare_figure_writer(args)
    with staged_directory(out) as staging:
        written = [out / path.name for path in draw(rows, staging)]
    print("\n".join(text))
    print(f"comparison figures: {', '.join(str(p) for p in written)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    if pretrained_run.is_pretrained_run(args):
        pretrained = pretrained_run.resolve_pretrained_spec(args, input_required=False)
        budget.check_device_available(pretrained.device)
        print(pretrained_run.pretrained_report(pretrained))
        return 0
    pretrained_run.refuse_input_flags(args)
    spec = resolve_spec(args)
    budget.check_info(spec)
    arms = planned_arms(spec)
    print(stability_report(spec, arms))
    print("the run integrates:\n" + arm_settings(arms, spec))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already reported in one line
        return int(stop.code or 0)
    try:
        threads.configure_threads(getattr(args, "threads", None))
        if args.command == "run":
            with sigterm_as_interrupt():
                return _run(args)
        if args.command == "compare":
            return _compare(args)
        if args.command == "plot":
            return plot_command(args)
        if args.command == "train":
            return _train(args)
        if args.command == "sweep":
            return _sweep(args)
        return _info(args)
    except (ConfigError, solvers.SolverInputError, tomlio.TomlError, RunDirError) as err:
        print(f"pdesim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdesim: interrupted before anything was saved", file=sys.stderr)
        return 130

