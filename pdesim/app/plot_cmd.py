"""``pdesim plot RUN_DIR``: redraw a run's figures from what its directory holds, without rerunning it;
and the ``--figure-format`` / ``--dpi`` flags that ``run``, ``compare`` and ``plot`` share.

The figures are drawn from metrics.csv, summary.json and states.npz (``figures.RunData.read``)
into a hidden folder first; only then are the figure files pdesim wrote in that format
(``figures.FIGURE_STEMS``) replaced in RUN_DIR/figures. Anything else there is left alone.
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
from .figures import FIGURE_STEMS, RunData, compare_figures, draw_all, plan_run_figures, run_figures
from .rundir import RunDirError, written_by_pdesim
from .runner import RunOutcome

DPI_RANGE = (10.0, 2400.0)


def add_figure_flags(parser: argparse.ArgumentParser) -> None:
    """--figure-format and --dpi."""
    parser.add_argument("--figure-format", choices=plots.FIGURE_FORMATS, help="png (default), pdf or svg")
    parser.add_argument("--dpi", type=float, help=f"resolution of raster figures (default {plots.DPI})")


def figure_options(args: argparse.Namespace) -> dict[str, Any]:
    """{"figure_format", "dpi"} from the flags, checked (a ConfigError before any work)."""
    dpi = plots.DPI if getattr(args, "dpi", None) is None else args.dpi
    low, high = DPI_RANGE
    if not low <= dpi <= high:
        raise ConfigError(f"--dpi={dpi:g} must be in {low:g}..{high:g}")
    return {"figure_format": getattr(args, "figure_format", None) or "png", "dpi": dpi}


def add_plot_command(commands: Any) -> None:
    """Registers ``pdesim plot``."""
    plot = commands.add_parser("plot", help="redraw a run directory's figures (other format, dpi) without rerunning")
    plot.add_argument("run_dir", help="a pdesim run directory")
    add_figure_flags(plot)


def redraw(run_dir: Path, *, figure_format: str = "png", dpi: float = plots.DPI) -> list[Path]:
    """Redraws RUN_DIR's figures into RUN_DIR/figures; returns their paths."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not written_by_pdesim(run_dir):
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no summary.json with pdesim's mark)")
    data = RunData.read(run_dir)
    folder = run_dir / "figures"
    if folder.exists() and not folder.is_dir():
        raise RunDirError(f"{folder} is not a directory")
    if not os.access(folder if folder.exists() else run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"cannot write into {folder}")
    staging = Path(tempfile.mkdtemp(prefix=".figures.", dir=run_dir))
    try:
        drawn = draw_all(plan_run_figures(data), staging, figure_format=figure_format, dpi=dpi)
        folder.mkdir(exist_ok=True)
        for stem in FIGURE_STEMS:  # pdesim's own figures in this format, including any no longer drawn
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
    """``pdesim plot RUN_DIR [--figure-format] [--dpi]``."""
    written = redraw(Path(args.run_dir), **figure_options(args))
    print(f"figures: {', '.join(str(p) for p in written)}")
    return 0


def run_figure_writer(args: argparse.Namespace) -> Callable[[RunOutcome, Path], list[Path]]:
    """``figures.run_figures`` at the flags' format and dpi (checked now, before the run computes)."""
    return functools.partial(run_figures, **figure_options(args))


def compare_figure_writer(args: argparse.Namespace) -> Callable[[dict[str, list[dict]], Path], list[Path]]:
    """``figures.compare_figures`` at the flags' format and dpi."""
    return functools.partial(compare_figures, **figure_options(args))
