"""A sweep file read, checked and laid out on disk, before anything runs.

A sweep file is TOML:

    kind = "train"              # or "run": a grid of ``pdesim run`` experiments (default "train")
    [sweep]                     # all optional
    workers = 2                 # parallel points of the local engine
    out = "sweeps/name"         # the sweep directory (inside the current directory; --out for elsewhere)
    cpus_per_point = 1          # resources of one point on Ray (GPU fractions allowed)
    gpus_per_point = 0
    retries = 0                 # attempts after a failed one (a bad-input exit 2 is never retried)
    [base]                      # the settings every point shares ([train] keys, or run/pde keys)
    [grid]                      # key = [values...] crossed; an inline table sets several keys at once

Every grid point is validated (as ``pdesim train`` / ``pdesim run`` would) before any runs, and
the sweep directory is checked before any computation: it must be new, empty, or a sweep
directory pdesim wrote (``sweep.toml`` in it), whose finished points are then skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import solvers

from ..config import ConfigError, PDEConfig, check_choice, check_int, check_number
from ..train import TrainSpec
from . import tomlio
from .rundir import RUN_DIR_ENTRIES, unwritable_parent, written_by_pdesim
from .spec import RunSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KINDS = ("train", "run")
SETTINGS = {"workers": 2, "out": None, "cpus_per_point": 1, "gpus_per_point": 0, "retries": 0}
# A point's name becomes a directory name; pdesim train stages it in a hidden sibling named
# ".<name>.<8 random characters>", so names stay well below the file systems' 255 bytes.
NAME_LIMIT = 150
_SAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
# The mark of a sweep directory that pdesim wrote: the sweep file, kept under this name.
SWEEP_MARK = "sweep.toml"


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: its values, its file-safe name, and the config file ``pdesim train|run`` reads."""

    values: dict[str, Any]
    name: str
    tables: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: what to run, where, and with which resources."""

    kind: str
    base: dict[str, Any]
    grid: dict[str, list[Any]]
    points: list[SweepPoint]
    out: Path
    workers: int
    cpus_per_point: float
    gpus_per_point: float
    retries: int
    source: str  # the sweep file's text, kept in the sweep directory as its mark

    def run_dir(self, point: SweepPoint) -> Path:
        return self.out / "runs" / point.name

    def config_path(self, point: SweepPoint) -> Path:
        return self.out / "configs" / f"{point.name}.toml"

    def failure_path(self, point: SweepPoint) -> Path:
        return self.out / "failures" / f"{point.name}.log"


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order.

    A value that is a table (an inline ``{key = value, ...}``) sets several keys at once, so
    ``configs = [{diffusion_positions = []}, {diffusion_positions = ["after_embedding"],
    diffusion_scales = [1, 2, 4]}]`` crosses whole configurations with the other keys.
    """
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key {key!r} must map to a non-empty list of values")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point: dict[str, Any] = {}
        for key, value in zip(keys, combo):
            point.update(value if isinstance(value, dict) else {key: value})
        points.append(point)
    return points


def shown(value: Any) -> str:
    """A grid value as table and file names show it: lists joined by '+', an empty list 'none'."""
    return ("+".join(map(str, value)) if isinstance(value, list) else str(value)) or "none"


def point_name(point: dict[str, Any]) -> str:
    """A file-name-safe name for a grid point: key=value,key=value (hashed where too long or unsafe)."""
    raw = ",".join(f"{key}={shown(value)}" for key, value in point.items()) or "base"
    safe = _SAFE.sub("_", raw)
    if safe == raw and len(raw.encode()) <= NAME_LIMIT:
        return raw
    digest = hashlib.sha256(raw.encode()).hexdigest()[:16]
    return f"{safe[: NAME_LIMIT - 17]}-{digest}"


def point_label(point: dict[str, Any]) -> str:
    """A short label for tables and charts: the values only (scales marked as such)."""
    return " ".join(f"scales {shown(v)}" if k == "diffusion_scales" else shown(v) for k, v in point.items())


def train_tables(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config of a ``pdesim train`` point: a [train] table, validated by TrainSpec."""
    return {"train": TrainSpec.from_table(values).to_table()}


_RUN_FIELDS = {f.name for f in fields(RunSpec)} - {"pde"}
_PDE_FIELDS = {f.name for f in fields(PDEConfig)}


def run_tables(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config of a ``pdesim run`` point: its preset (default standard) with the point's run and pde keys.

    An adaptive solver without a ``dt`` gets none (as ``pdesim run --solver dopri5`` does), and the
    preset's needs are checked as ``pdesim run`` checks them.
    """
    from .presets import check_preset, preset_spec

    values = dict(values)
    unknown = sorted(set(values) - _RUN_FIELDS - _PDE_FIELDS)
    if unknown:
        raise ConfigError(
            f"unknown key {unknown[0]!r} in a run sweep; expected the keys of [run] or [pde] of a run config"
        )
    spec = preset_spec(values.pop("preset", "standard"))
    run_changes = {k: v for k, v in values.items() if k in _RUN_FIELDS}
    pde_changes = {k: v for k, v in values.items() if k in _PDE_FIELDS}
    if run_changes.get("solver", spec.solver) not in solvers.FIXED_METHODS and "dt" not in run_changes:
        run_changes["dt"] = None
    spec = replace(spec, pde=spec.pde.replace(**pde_changes), **run_changes)
    check_preset(spec)
    return spec.to_tables()


def _settings(table: dict[str, Any], *, workers: int | None) -> dict[str, Any]:
    unknown = sorted(set(table) - set(SETTINGS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in [sweep]; expected one of {', '.join(SETTINGS)}")
    settings = {**SETTINGS, **table}
    if workers is not None:
        settings["workers"] = workers
    check_int("workers", settings["workers"], 1)
    check_int("retries", settings["retries"], 0)
    settings["cpus_per_point"] = check_number("cpus_per_point", settings["cpus_per_point"], minimum=0.0, strict=True)
    settings["gpus_per_point"] = check_number("gpus_per_point", settings["gpus_per_point"], minimum=0.0)
    if settings["out"] is not None and not isinstance(settings["out"], str):
        raise ConfigError(f"[sweep] out={settings['out']!r} must be a path (a string)")
    return settings


def _sweep_out(file: Path, from_file: str | None, from_command_line: Path | None) -> Path:
    """The sweep directory: --out, else [sweep] out (only inside the current directory), else sweeps/<file>."""
    if from_command_line is not None:
        return Path(from_command_line)
    if from_file is None:
        return Path("sweeps") / file.stem
    out = Path(from_file)
    cwd = Path.cwd().resolve()
    if not out.absolute().resolve().is_relative_to(cwd):
        raise ConfigError(
            f"[sweep] out = {from_file!r} lies outside the current directory; give it on the command line "
            f"(--out {from_file}) to write there"
        )
    return out


def load_plan(file: Path, *, out: Path | None = None, workers: int | None = None) -> SweepPlan:
    """Reads and validates a sweep file; every point's config is built (and so checked) here."""
    document = tomlio.load(str(file))
    kind = document.get("kind", "train")
    check_choice("kind", kind, KINDS)
    unknown = sorted(set(document) - {"kind", "base", "grid", "sweep"})
    if unknown:
        raise ConfigError(f"unknown entry {unknown[0]!r} in the sweep file; expected kind, [base], [grid], [sweep]")
    base, grid, table = (document.get(name, {}) for name in ("base", "grid", "sweep"))
    for name, value in (("base", base), ("grid", grid), ("sweep", table)):
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table in the sweep file")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers={workers} must be an integer >= 1")
    settings = _settings(table, workers=workers)
    build = train_tables if kind == "train" else run_tables
    points: list[SweepPoint] = []
    names: dict[str, dict[str, Any]] = {}
    for values in grid_points(grid):
        try:
            tables = build({**base, **values})
        except ConfigError as err:
            raise ConfigError(f"grid point {point_name(values)}: {err}") from None
        name = point_name(values)
        if name in names:
            raise ConfigError(f"grid point {name} appears twice in the grid ({names[name]} and {values})")
        names[name] = values
        points.append(SweepPoint(values, name, tables))
    return SweepPlan(
        kind=kind,
        base=base,
        grid=grid,
        points=points,
        out=_sweep_out(Path(file), settings["out"], out),
        workers=settings["workers"],
        cpus_per_point=settings["cpus_per_point"],
        gpus_per_point=settings["gpus_per_point"],
        retries=settings["retries"],
        source=Path(file).read_text(),
    )


def _written_config(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finished(plan: SweepPlan, point: SweepPoint) -> bool:
    """Whether the point's run is already there: a summary, the same config, and not interrupted."""
    run_dir = plan.run_dir(point)
    if not written_by_pdesim(run_dir):
        return False
    import json

    summary = json.loads((run_dir / "summary.json").read_text())
    same = _written_config(run_dir / "config.toml") == tomllib.loads(tomlio.dumps(point.tables))
    return same and not summary.get("interrupted", False)


def check_sweep_dir(plan: SweepPlan) -> list[SweepPoint]:
    """Checks the sweep directory before any computation; returns the points still to run.

    A point's existing run directory is skipped when finished with the same config; an interrupted
    one (pdesim's own, holding only what pdesim writes) is run again; anything else is refused.
    """
    out = plan.out
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError(f"--out {out} exists and is not a directory; choose another --out")
        entries = {entry.name for entry in out.iterdir()}
        if entries and SWEEP_MARK not in entries:
            raise ConfigError(f"--out {out} exists and is not a pdesim sweep directory; choose another --out")
    unwritable = unwritable_parent(out)
    if unwritable is not None:
        raise ConfigError(f"--out {out}: cannot write into {unwritable}")
    if out.exists() and not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out}: cannot write into it")
    todo = []
    for point in plan.points:
        run_dir = plan.run_dir(point)
        if not (run_dir.exists() or run_dir.is_symlink()):
            todo.append(point)
        elif finished(plan, point):
            continue
        elif not written_by_pdesim(run_dir) or {e.name for e in run_dir.iterdir()} - RUN_DIR_ENTRIES:
            raise ConfigError(f"{run_dir} exists and is not a run pdesim wrote; move it away or choose another --out")
        elif _written_config(run_dir / "config.toml") != tomllib.loads(tomlio.dumps(point.tables)):
            raise ConfigError(
                f"{run_dir} holds a run of another configuration (the sweep file changed?); choose another --out"
            )
        else:
            todo.append(point)  # interrupted: run again
    return todo


def prepare(plan: SweepPlan, todo: list[SweepPoint]) -> None:
    """Writes the sweep mark and the configs of the points to run; clears their interrupted runs."""
    for folder in ("runs", "configs", "failures"):
        (plan.out / folder).mkdir(parents=True, exist_ok=True)
    (plan.out / SWEEP_MARK).write_text(plan.source)
    for point in todo:
        plan.config_path(point).write_text(tomlio.dumps(point.tables))
        plan.failure_path(point).unlink(missing_ok=True)
        if plan.run_dir(point).exists():  # checked by check_sweep_dir: pdesim's own, interrupted, nothing else in it
            shutil.rmtree(plan.run_dir(point))
