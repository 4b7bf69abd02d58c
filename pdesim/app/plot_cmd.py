"""``pdesim plot RUN_DIR``: redraw a run's or a train run's figures from what its directory holds,
without rerunning it; and the ``--figure-format`` / ``--dpi`` flags that ``run``, ``compare``,
``train``, ``sweep`` and ``plot`` share (``figure_options``: checked before any work).

A run's figures are drawn from metrics.csv, summary.json and states.npz (``figures.RunData.read``);
a train run's (summary.json with ``"kind": "train"``) from metrics.csv, summary.json (the chance
level) and config.toml (its [train] table, for the title's switches). Either is drawn into a hidden
folder first; only then are the figure files pdesim wrote in that format (``figures.FIGURE_STEMS``
or ``train_figures.TRAIN_FIGURE_STEMS``) replaced in RUN_DIR/figures. Anything else there is left alone.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probes import plots

from ..config import ConfigError
from ..train import TrainSpec
from . import tomlio
from .figures import FIGURE_STEMS, RunData, compare_figures, draw_all, plan_run_figures, run_figures
from .rundir import RunDirError, read_summary, written_by_pdesim
from .runner import RunOutcome
from .train_figures import TRAIN_FIGURE_STEMS, compare_training_figures, training_figures

DPI_RANGE = (10.0, 2400.0)


def add_figure_flags(parser: argparse.ArgumentParser) -> None:
    """--figure-format and --dpi."""
    parser.add_argument("--figure-format", choices=plots.FIGURE_FORMATS, help="png (default), pdf or svg")
    parser.add_argument("--dpi", type=float, help=f"resolution of raster figures (default {plots.DPI})")


def figure_options(args: argparse.Namespace) -> dict[str, Any]:
    """{"figure_format", "dpi"} from the flags, checked (a ConfigError before any work)."""
    return checked_figure_options(getattr(args, "figure_format", None) or "png", getattr(args, "dpi", None))


def checked_figure_options(figure_format: str = "png", dpi: float | None = None) -> dict[str, Any]:
    """{"figure_format", "dpi"} (dpi None: ``plots.DPI``), or a one-line ConfigError naming the flag."""
    if figure_format not in plots.FIGURE_FORMATS:
        raise ConfigError(f"--figure-format={figure_format!r} is not one of {', '.join(plots.FIGURE_FORMATS)}")
    dpi = plots.DPI if dpi is None else dpi
    low, high = DPI_RANGE
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)):
        raise ConfigError(f"--dpi={dpi!r} must be a number in {low:g}..{high:g}")
    if not low <= dpi <= high:  # nan too
        raise ConfigError(f"--dpi={dpi:g} must be in {low:g}..{high:g}")
    return {"figure_format": figure_format, "dpi": dpi}


def add_plot_command(commands: Any) -> None:
    """Registers ``pdesim plot``."""
    plot = commands.add_parser(
        "plot", help="redraw a run or train directory's figures (other format, dpi) without rerunning"
    )
    plot.add_argument("run_dir", help="a pdesim run or train directory")
    add_figure_flags(plot)


def _pdesim_dir(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not written_by_pdesim(run_dir):
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no summary.json with pdesim's mark)")
    return run_dir


def redraw(run_dir: Path, *, figure_format: str = "png", dpi: float = plots.DPI) -> list[Path]:
    """Redraws a run directory's figures into RUN_DIR/figures; returns their paths."""
    run_dir = _pdesim_dir(run_dir)
    data = RunData.read(run_dir)
    return _replace_figures(
        run_dir,
        lambda staging: draw_all(plan_run_figures(data), staging, figure_format=figure_format, dpi=dpi),
        FIGURE_STEMS,
        figure_format,
    )


def redraw_training(run_dir: Path, *, figure_format: str = "png", dpi: float = plots.DPI) -> list[Path]:
    """Redraws a train directory's figures into RUN_DIR/figures; returns their paths.

    Everything is read and checked first: a damaged metrics.csv, summary.json or config.toml is a
    one-line RunDirError, and nothing in RUN_DIR changes.
    """
    from .train_dir import read_train_rows  # here: train_dir imports this module's checked_figure_options

    run_dir = _pdesim_dir(run_dir)
    summary = read_summary(run_dir)
    if summary.get("kind") != "train":
        raise RunDirError(f"{run_dir} is not a pdesim train directory (summary.json has no \"kind\": \"train\")")
    chance = summary.get("chance_accuracy")
    if chance is not None and not (isinstance(chance, (int, float)) and not isinstance(chance, bool)
                                   and 0.0 <= chance <= 1.0):
        raise RunDirError(f"{run_dir / 'summary.json'} is damaged (chance_accuracy={str(chance)[:40]!r})")
    spec = _train_spec(run_dir / "config.toml")
    rows = read_train_rows(run_dir)
    return _replace_figures(
        run_dir,
        lambda staging: training_figures(rows, staging, spec, summary, figure_format=figure_format, dpi=dpi),
        TRAIN_FIGURE_STEMS,
        figure_format,
    )


def _train_spec(path: Path) -> TrainSpec:
    """The TrainSpec of a train directory's config.toml; anything wrong with it is a one-line RunDirError."""
    if not path.is_file():
        raise RunDirError(f"{path.parent} is not a complete pdesim train directory (no config.toml)")
    try:
        table = tomlio.load(str(path)).get("train")
    except tomlio.TomlError as err:  # names the file already
        raise RunDirError(str(err)) from None
    if not isinstance(table, dict):
        raise RunDirError(f"{path} is damaged (no [train] table)")
    try:
        return TrainSpec.from_table(table)
    except (TypeError, ValueError) as err:  # ConfigError included: a value TrainSpec refuses
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunDirError(f"{path} is damaged ({reason})") from None


def _replace_figures(
    run_dir: Path, draw: Callable[[Path], list[Path]], stems: tuple[str, ...], figure_format: str
) -> list[Path]:
    """Draws into a hidden folder of RUN_DIR, then replaces pdesim's own ``stems`` of that format in RUN_DIR/figures."""
    folder = run_dir / "figures"
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{folder} is not a directory")
    if not os.access(folder if folder.exists() else run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write into {folder}")
    staging = Path(tempfile.mkdtemp(prefix=".figures.", dir=run_dir))
    try:
        drawn = draw(staging)
        folder.mkdir(exist_ok=True)
        for stem in stems:  # pdesim's own figures in this format, including any no longer drawn
            old = folder / f"{stem}.{figure_format}"
            if old.is_file() and not old.is_symlink():
                old.unlink()
        written = []
        for path in drawn:
            target = folder / path.name
            os.replace(path, target)
            written.append(target)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def plot_command(args: argparse.Namespace) -> int:
    """``pdesim plot RUN_DIR [--figure-format] [--dpi]``: a run or a train directory, by its summary's kind."""
    options = figure_options(args)
    run_dir = _pdesim_dir(Path(args.run_dir))
    kind = read_summary(run_dir).get("kind", "run")
    if kind not in ("run", "train"):
        raise RunDirError(f"pdesim plot redraws run or train directories, not kind={str(kind)[:40]!r}")
    written = (redraw_training if kind == "train" else redraw)(run_dir, **options)
    print(f"figures: {', '.join(str(p) for p in written)}")
    return 0


def run_figure_writer(args: argparse.Namespace) -> Callable[[RunOutcome, Path], list[Path]]:
    """``figures.run_figures`` at the flags' format and dpi (checked now, before the run computes)."""
    return functools.partial(run_figures, **figure_options(args))


def compare_figure_writer(args: argparse.Namespace) -> Callable[[dict[str, list[dict]], Path], list[Path]]:
    """``figures.compare_figures`` at the flags' format and dpi."""
    return functools.partial(compare_figures, **figure_options(args))


def compare_training_writer(
    args: argparse.Namespace, summaries: dict[str, dict[str, Any]]
) -> Callable[[dict[str, list[dict]], Path], list[Path]]:
    """``train_figures.compare_training_figures`` with the runs' summaries (for the chance line), at the flags'
    format and dpi."""
    return functools.partial(compare_training_figures, summaries=summaries, **figure_options(args))
