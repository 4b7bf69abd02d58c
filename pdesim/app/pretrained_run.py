"""``pdesim run --pretrained`` and ``pdesim info --pretrained``: an imported model as its PDE and its own network.

A run reads one input (``--text`` through the checkpoint's tokenizer, or ``--ids``), embeds it
with the model's own embedding, and runs two arms when a switch is given — the switched model
("main") and the model as trained ("trained") with the same weights — each as the PDE (``rk4``
with 4 steps per layer by default; post-LN: the projected integrator) and as the h = 1 network
(``pm.transformer``), both saved at every layer. The run directory has the usual files:

    RUN/config.toml    the [pretrained] table of the run (source, text and the ids it read, solver, steps per
                       layer, switches); ``pdesim run --config RUN/config.toml`` replays it, number for number
    RUN/metrics.csv    one row per arm, source (pde | transformer) and layer
    RUN/summary.json   per arm: statuses, norm growth and rate, final drift and rank, PDE–network gap
    RUN/states.npz     the states per arm and source (NumPy, no pickle)
    RUN/figures/*.png  the run figures of ``pdesim run``
    RUN/run.log        what the run printed

``pdesim compare`` reads these directories like any other run's. The stability report states,
layer by layer, the Jacobian's spectral radius of the field at the network's state entering the
layer, and the sub-steps per layer an explicit solver needs.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import probes
import solvers

from ..config import DTYPES, NORMS, ConfigError, check_bool, check_choice, check_int, check_positive
from ..pretrained import PretrainedModel, load_pretrained
from ..stopping import held_interrupts
from . import budget, tomlio
from .arms import MAIN, STANDARD, Arm, ArmResult
from .figures import run_figures
from .measure import map_lyapunov, unmeasured
from .rundir import (
    CSV_COLUMNS,
    Written,
    check_out,
    staged_directory,
    write_figures_interruptibly,
    write_rows,
    write_summary,
)
from .runner import RunOutcome
from .stability import jacobian_spectral_radius
from .summary import summarize_arm

# The flags of ``pdesim run`` that shape the toy system; a checkpoint fixes all of them.
NOT_FOR_PRETRAINED = ("tokens", "dim", "heads", "diffusion", "bc", "init_scale", "seed", "layers", "saves", "batch",
                      "preset")
DEFAULT_STEPS_PER_LAYER = 4
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog."


@dataclass
class PretrainedSpec:
    """A run of an imported model: where it comes from, its input, the solver, the switches.

    The input is ``ids`` when given (a replayed run reads the very ids it read before, whatever the
    tokenizer does today); ``text`` alone is read through the checkpoint's tokenizer, and beside
    ``ids`` it only records what they were read from.
    """

    source: str
    text: str | None = None
    ids: list[int] | None = None
    solver: str = "rk4"
    steps_per_layer: int = DEFAULT_STEPS_PER_LAYER
    rtol: float | None = None
    atol: float | None = None
    norm: str | None = None  # None: the model's own
    residual: bool = True
    dtype: str = "float64"
    device: str = "cpu"
    blowup: float = 1e6

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ConfigError(f"source={self.source!r} must name a checkpoint directory or hub name")
        if self.text is None and self.ids is None:
            raise ConfigError('give the input as --text "..." or as --ids, e.g. --ids 101,7592,102')
        if self.text is not None and not isinstance(self.text, str):
            raise ConfigError(f"text={self.text!r} must be a string")
        if self.ids is not None:
            if not isinstance(self.ids, list) or not self.ids:
                raise ConfigError(f"ids={self.ids!r} must be a non-empty list of token ids")
            for token in self.ids:
                check_int("ids", token, 0)
        check_choice("solver", self.solver, solvers.METHODS)
        check_int("steps_per_layer", self.steps_per_layer, 1)
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                setattr(self, name, check_positive(name, getattr(self, name)))
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        check_bool("residual", self.residual)
        check_choice("dtype", self.dtype, tuple(DTYPES))
        try:
            if not isinstance(self.device, str):
                raise TypeError(self.device)
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(f"device={self.device!r} is not a torch device name (e.g. 'cpu', 'cuda:1')") from None
        self.blowup = check_positive("blowup", self.blowup)

    @classmethod
    def from_tables(cls, tables: dict[str, Any], path: str) -> PretrainedSpec:
        """The spec of a config file's [pretrained] table (a pretrained run's RUN/config.toml)."""
        if "pretrained" not in tables:
            raise ConfigError(f"config file {path!r} has no [pretrained] table; it is not a --pretrained run's config")
        unknown = sorted(set(tables) - {"pretrained"})
        if unknown:
            raise ConfigError(f"config file {path!r}: unknown table [{unknown[0]}] beside [pretrained]")
        table = dict(tables["pretrained"])
        names = [f.name for f in fields(cls)]
        bad = sorted(set(table) - set(names))
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [pretrained]; expected one of {', '.join(names)}")
        if "source" not in table:
            raise ConfigError(f"config file {path!r}: [pretrained] has no source (the checkpoint)")
        return cls(**table)

    @property
    def switches(self) -> dict[str, Any]:
        """The switches this run changes on the imported weights."""
        changes: dict[str, Any] = {} if self.norm is None else {"norm": self.norm}
        return changes | ({} if self.residual else {"residual": False})

    def to_tables(self) -> dict[str, dict[str, Any]]:
        return {"pretrained": {k: v for k, v in asdict(self).items() if v is not None}}


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"--ids {text!r} must be comma-separated integers, e.g. 101,7592,102") from None
    if not ids:
        raise ConfigError("--ids is empty")
    return ids


def refuse_input_flags(args: argparse.Namespace) -> None:
    """The input flags of an imported model, given without ``--pretrained``: one line."""
    if args.text is not None or args.ids is not None or args.steps_per_layer is not None:
        raise ConfigError("--text, --ids and --steps-per-layer go with --pretrained")


def is_pretrained_run(args: argparse.Namespace) -> bool:
    """Whether the command runs an imported model: ``--pretrained``, or a ``--config`` with a [pretrained] table."""
    return args.pretrained is not None or bool(args.config and "pretrained" in tomlio.load(args.config))


def resolve_pretrained_spec(args: argparse.Namespace, *, input_required: bool = True) -> PretrainedSpec:
    """The PretrainedSpec of ``--config`` (a [pretrained] table) and the flags (flags win).

    Flags that shape the toy system are refused in one line. A local checkpoint directory is
    recorded by its absolute path, so that the run's config.toml replays from anywhere.
    """
    for flag in NOT_FOR_PRETRAINED:
        if getattr(args, flag, None) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} does not apply to --pretrained: the checkpoint fixes it")
    changes: dict[str, Any] = {}
    if args.pretrained is not None:
        local = Path(args.pretrained).expanduser()
        changes["source"] = str(local.resolve()) if args.pretrained and local.is_dir() else args.pretrained
    if args.text is not None and args.ids is not None:
        raise ConfigError("give the input as --text or as --ids, not both")
    if args.text is not None:
        changes.update(text=args.text, ids=None)
    if args.ids is not None:
        changes.update(text=None, ids=_parse_ids(args.ids))
    if args.no_layernorm and args.norm not in (None, "none"):
        raise ConfigError(f"--no-layernorm contradicts --norm {args.norm}")
    if args.no_layernorm or args.norm is not None:
        changes["norm"] = "none" if args.no_layernorm else args.norm
    if args.no_residual:
        changes["residual"] = False
    steps = _steps_per_layer(args)
    if steps is not None:
        changes["steps_per_layer"] = steps
    changes.update({name: getattr(args, name) for name in ("solver", "rtol", "atol", "dtype", "device", "blowup")
                    if getattr(args, name) is not None})
    if args.config:
        return replace(PretrainedSpec.from_tables(tomlio.load(args.config), args.config), **changes)
    if "text" not in changes and "ids" not in changes and not input_required:
        changes["text"] = DEFAULT_TEXT
    return PretrainedSpec(**changes)


def _steps_per_layer(args: argparse.Namespace) -> int | None:
    """k from --steps-per-layer, or --dt = 1/k (each layer [l, l + 1) is covered by whole steps); None if neither."""
    given = [flag for flag in ("steps_per_layer", "dt", "steps", "t_end") if getattr(args, flag, None) is not None]
    if "steps" in given or "t_end" in given:
        raise ConfigError("--steps and --t-end do not apply to --pretrained: T is the depth; use --steps-per-layer")
    if len(given) > 1:
        raise ConfigError("give --steps-per-layer or --dt, not both")
    if args.dt is not None:
        steps = 1.0 / args.dt if args.dt > 0 else math.nan
        if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-9 * steps:
            raise ConfigError(f"--dt {args.dt:g} must be 1/k for an integer k: every layer is covered by whole steps")
        return int(round(steps))
    return args.steps_per_layer


# -- the run -------------------------------------------------------------------------------------------
class _NoEnergy:
    """Stands in for the field in the measurements: an imported model has no energy to report."""

    energy_is_exact = False


def load(spec: PretrainedSpec) -> tuple[PretrainedModel, torch.Tensor]:
    """The imported model and its input ids (1, n), checked against its vocabulary and positions."""
    pm = load_pretrained(spec.source, dtype=DTYPES[spec.dtype], device=spec.device)
    if spec.text is not None:
        ids, _ = pm.encode(spec.text)
    else:
        ids = pm.check_ids(spec.ids)
    return pm, ids


def _solver_for(model: PretrainedModel, spec: PretrainedSpec, role: str) -> str:
    """The spec's solver; for the trained post-LN arm beside an adaptive run, rk4 (a projection needs fixed steps)."""
    if spec.solver in solvers.FIXED_METHODS or model.layers[0].cfg.norm != "post":
        return spec.solver
    if role == STANDARD:
        return "rk4"
    raise ConfigError(
        f"{spec.solver} is adaptive, but a post-LN PDE is a projected integrator (LN₂ after every fixed step); "
        "use a fixed-step solver, or --norm tangent (its smooth counterpart)"
    )


def _solve_arm(role: str, label: str, model: PretrainedModel, u0: torch.Tensor, spec: PretrainedSpec) -> ArmResult:
    """The model's PDE solved over its L layers: kept by the run even if what follows is interrupted."""
    solver = _solver_for(model, spec, role)
    fixed = solver in solvers.FIXED_METHODS
    tolerances = {} if fixed else {"rtol": spec.rtol, "atol": spec.atol}
    with torch.no_grad():
        sol = model.solve(u0, method=solver, steps_per_layer=spec.steps_per_layer, blowup=spec.blowup, **tolerances)
    cfg = model.layers[0].cfg
    arm = Arm(role, label, cfg, solver, 1.0 / spec.steps_per_layer if fixed else None)
    result = ArmResult(arm, _NoEnergy(), sol)  # type: ignore[arg-type]
    # The flow's exponents need a single field over [0, L] with its own projection, which a per-layer
    # import is not (notebook 08 takes its tangent flow); the network's layer maps get theirs below.
    result.lyapunov["pde"] = unmeasured("not measured for an imported model's PDE (see notebook 08)")
    return result


def _complete_arm(result: ArmResult, model: PretrainedModel, u0: torch.Tensor, spec: PretrainedSpec) -> None:
    """Adds the h = 1 network's layer states, then its layer maps' exponents (one JVP per layer), in place."""
    with torch.no_grad():
        states = model.transformer(u0, return_all=True)
    result.layer_times = torch.arange(model.depth + 1, dtype=torch.float64)
    result.layer_states = states  # last: a result with layer_states has its times
    result.lyapunov["transformer"] = map_lyapunov(list(model.transformer.blocks), u0, 1.0, stop=spec.blowup)


def _label(model: PretrainedModel) -> str:
    cfg = model.layers[0].cfg
    parts = [f"norm={cfg.norm}"] + ([] if cfg.residual else ["no-residual"])
    return f"{model.architecture} " + ", ".join(parts)


def switched_model(pm: PretrainedModel, spec: PretrainedSpec) -> PretrainedModel | None:
    """The model with the spec's switches, or None when they change nothing (``--norm post`` on a post-LN BERT)."""
    cfg = pm.layers[0].cfg
    changes = {name: value for name, value in spec.switches.items() if getattr(cfg, name) != value}
    return pm.switched(**changes) if changes else None


def run_pretrained(spec: PretrainedSpec) -> tuple[RunOutcome, PretrainedModel, torch.Tensor]:
    """Both arms (the switched model and the trained one, or the trained one alone) as PDE and network."""
    pm, ids = load(spec)
    spec = replace(spec, ids=ids[0].tolist())  # the run's config.toml records the ids it read
    u0 = pm.embed(ids).detach()
    switched = switched_model(pm, spec)
    models = [(MAIN, switched), (STANDARD, pm)] if switched is not None else [(MAIN, pm)]
    results: list[ArmResult] = []
    interrupted = False
    try:  # Ctrl-C keeps every arm solved so far; what it stopped reads "not measured"
        for role, model in models:
            result = _solve_arm(role, ("trained " if model is pm else "") + _label(model), model, u0, spec)
            results.append(result)
            if result.solution.status == solvers.Status.INTERRUPTED:
                interrupted = True
                break
            _complete_arm(result, model, u0, spec)
    except KeyboardInterrupt:
        interrupted = True
    summaries, rows = {}, []
    for result in results:
        arm_summary, arm_rows = summarize_arm(result, spec)  # type: ignore[arg-type]
        summaries[result.arm.label] = arm_summary
        rows.extend(arm_rows)
    summary = {
        "preset": "pretrained",
        "description": f"{pm.architecture} from {spec.source} as its PDE and its h = 1 network",
        "model": {"architecture": pm.architecture, "layers": pm.depth, "dim": pm.layers[0].cfg.dim,
                  "heads": pm.layers[0].cfg.heads, "norm": pm.layers[0].cfg.norm, "tokens": int(ids.shape[1])},
        "interrupted": interrupted,
        "arms": summaries,
    }
    return RunOutcome(spec, results, summary, rows, interrupted), pm, ids  # type: ignore[arg-type]


def write_pretrained_run(outcome: RunOutcome, out: Path, *, log_text: str, overwrite: bool = False) -> Written:
    """The run directory, written atomically: the data first (not interruptible), then the figures."""
    with staged_directory(out, overwrite=overwrite) as staging:
        with held_interrupts() as received:
            (staging / "config.toml").write_text(tomlio.dumps(outcome.spec.to_tables()))
            write_rows(staging / "metrics.csv", CSV_COLUMNS, outcome.rows)
            write_summary(staging / "summary.json", outcome.summary)
            arrays = {}
            for index, result in enumerate(outcome.results):
                arrays[f"arm{index}__pde_t"] = result.solution.t.numpy()
                arrays[f"arm{index}__pde_u"] = result.solution.u.detach().cpu().float().numpy()
                if result.layer_states is not None:  # absent when a Ctrl-C stopped the arm before its network ran
                    arrays[f"arm{index}__transformer_t"] = result.layer_times.numpy()
                    arrays[f"arm{index}__transformer_u"] = result.layer_states.detach().cpu().float().numpy()
            np.savez_compressed(staging / "states.npz", **arrays)
            (staging / "run.log").write_text(log_text)
        complete = not received and write_figures_interruptibly(
            lambda folder: run_figures(outcome, folder), staging, log_text
        )
    return Written(Path(out), complete)


def describe_input(pm: PretrainedModel, ids: torch.Tensor) -> str:
    """One line naming the input's tokens (their text when there is a tokenizer)."""
    if pm.tokenizer is not None:
        tokens = pm.tokenizer.convert_ids_to_tokens(ids[0].tolist())
        return f"input: {ids.shape[1]} tokens {' '.join(tokens)}"
    return f"input: {ids.shape[1]} token ids {','.join(str(i) for i in ids[0].tolist())}"


# -- the stability report ---------------------------------------------------------------------------------
def pretrained_report(spec: PretrainedSpec) -> str:
    """Per layer: ρ(∂f_l/∂u) at the network's state entering layer l, and the steps per layer rk4 needs."""
    pm, ids = load(spec)
    model = switched_model(pm, spec) or pm
    cfg = model.layers[0].cfg
    lines = [
        f"stability report: {pm.architecture} from {spec.source}: L={pm.depth} d={cfg.dim} heads={cfg.heads} "
        f"norm={cfg.norm} residual={cfg.residual} activation={cfg.activation} ln_eps={cfg.ln_eps:g}",
        f"  {describe_input(pm, ids)}",
    ]
    with torch.no_grad():
        states = model.transformer(model.embed(ids), return_all=True)
    radii = []
    for index, layer in enumerate(model.layers):
        with torch.enable_grad():
            radius = jacobian_spectral_radius(layer, states[index].detach())
        radii.append(radius)
        lines.append(f"  layer {index + 1}: Jacobian spectral radius of the field at its input state {radius:.4g}")
    largest = max(radii)
    fixed = spec.solver in solvers.FIXED_METHODS
    if cfg.norm == "post":
        lines.append("  post-LN: the PDE is the projected integrator (LN₂ after every step); adaptive solvers need "
                     "--norm tangent")
    if spec.solver in solvers.TABLEAUS:
        bound = float(probes.max_stable_dt(solvers.TABLEAUS[spec.solver], torch.tensor([-1.0 + 0j])))
        product = largest / spec.steps_per_layer
        needed = max(1, math.ceil(largest / bound))
        verdict = "inside" if product <= bound else "OUTSIDE"
        lines.append(f"  {spec.solver} with {spec.steps_per_layer} steps per layer: dt·ρ_max = {product:.4g} vs its "
                     f"real-axis stability bound {bound:.4g}: {verdict}")
        lines.append(f"  stability needs at least {needed} {spec.solver} steps per layer; recommended: "
                     f"--solver {spec.solver} --steps-per-layer {max(needed, spec.steps_per_layer)}")
    elif fixed:
        lines.append(f"  {spec.solver}: {spec.steps_per_layer} steps per layer (splitting or exponential)")
    else:
        lines.append(f"  {spec.solver} is adaptive: its controller picks stable steps")
    return "\n".join(lines)


def run_command(args: argparse.Namespace, default_out: Path, table: Any) -> int:
    """``pdesim run --pretrained``: runs, prints the summary table and writes the run directory."""
    spec = resolve_pretrained_spec(args)
    budget.check_device_available(spec.device)
    out = check_out(Path(args.out) if args.out else default_out, overwrite=args.overwrite)  # before any work
    outcome, pm, ids = run_pretrained(spec)
    log = io.StringIO()
    print(f"pdesim run --pretrained: {outcome.summary['description']}", file=log)
    print(describe_input(pm, ids), file=log)
    print(f"solver={spec.solver} steps per layer={spec.steps_per_layer} dtype={spec.dtype}", file=log)
    print(table(outcome.summary), file=log)
    for label, arm in outcome.summary["arms"].items():
        if arm["solver"] != spec.solver:
            print(f"{label}: solved with {arm['solver']} (post-LN's projection needs fixed steps)", file=log)
        gap = arm.get("transformer", {}).get("relative_gap_to_pde")
        if gap is not None:
            print(f"{label}: relative gap between the h = 1 network and the PDE at T = {pm.depth}: {gap:.4g}", file=log)
        if arm["status"] != "success":
            print(f"{label}: {arm['status']}: {arm['message']}", file=log)
    if outcome.interrupted:
        print("interrupted: the partial run (arms solved so far) is saved", file=log)
    written = write_pretrained_run(outcome, out, log_text=log.getvalue(), overwrite=args.overwrite)
    print(log.getvalue() + f"run directory: {written.path}")
    if not written.figures_complete:
        print("interrupted while saving: the run's data is saved, its figures are incomplete", file=sys.stderr)
    return 130 if outcome.interrupted or not written.figures_complete else 0
