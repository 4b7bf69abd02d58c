"""``pdesim sweep``: run a grid of ``pdesim train`` (or ``pdesim run``) configurations and tabulate them.

The sweep file is read and every point validated first (``sweep_plan``), the sweep directory is
checked before any computation, points finished earlier are skipped, the rest run on the chosen
engine (``sweep_engines``: local processes or Ray tasks), and the collected results become
runs.csv, table.csv, table.md (``sweep_table``) and a chart (``sweep_figure``). A failed point
keeps its exit code and stderr in failures/<point>.log, and the sweep then exits non-zero.

    SWEEP/sweep.toml          the sweep file (marks the directory as a pdesim sweep)
    SWEEP/configs/<point>.toml  each point's config (``pdesim train|run --config`` reads it)
    SWEEP/runs/<point>/       each point's run directory
    SWEEP/failures/<point>.log  exit code and stderr of each failed point
    SWEEP/runs.csv, table.csv, table.md, accuracy.<format> | findings.<format>  (png unless --figure-format)
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probes import plots

from ..config import ConfigError
from ..stopping import sigterm_as_interrupt
from .plot_cmd import checked_figure_options
from .sweep_engines import ENGINES, PointOutcome, _import_ray, run_local, run_ray
from .sweep_figure import sweep_figure
from .sweep_plan import (
    SWEEP_MARK,
    SweepPlan,
    SweepPoint,
    check_sweep_dir,
    grid_points,
    load_plan,
    point_label,
    point_name,
    prepare,
)
from .sweep_table import INTERRUPTED, write_tables

__all__ = ["SweepOutcome", "grid_points", "point_label", "point_name", "run_sweep", "sweep"]


@dataclass(frozen=True)
class SweepOutcome:
    """What a sweep did: where, how many points, and how many were skipped, done and failed."""

    out: Path
    points: int
    skipped: int
    done: int
    failed: int
    interrupted: bool
    table: str


class _Progress:
    """Points done / failed / running with rate and ETA (tqdm), silent when quiet or not a terminal."""

    def __init__(self, total: int, skipped: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self.done = self.failed = self.running = 0
        self._lock = threading.Lock()
        self._bar = tqdm(
            total=total,
            initial=skipped,
            unit="point",
            desc="sweep",
            file=sys.stderr,
            disable=quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )
        self._show()

    def _show(self, refresh: bool = True) -> None:
        self._bar.set_postfix_str(f"done {self.done}, failed {self.failed}, running {self.running}", refresh=refresh)

    def started(self, point: SweepPoint) -> None:
        with self._lock:
            self.running += 1
            self._show()

    def finished(self, exit_code: int) -> None:
        with self._lock:
            self.running -= 1
            self.done += exit_code == 0
            self.failed += exit_code not in (0, INTERRUPTED)
            self._show(refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def sweep(
    path: Path,
    *,
    out: Path | None = None,
    workers: int | None = None,
    engine: str = "local",
    address: str | None = None,
    quiet: bool = True,
    runner: Callable[[Path, Path], int] | None = None,
    figure_format: str = "png",
    dpi: float = plots.DPI,
) -> SweepOutcome:
    """Runs every unfinished grid point of the sweep file on ``engine`` and writes the collected tables.

    ``runner`` (config, run_dir) -> exit code replaces the engine by an in-process call, one point
    at a time (for tests and notebooks). The chart is written in ``figure_format`` at ``dpi``
    (checked before anything runs); the points' own run directories keep their default figures.
    """
    figures = checked_figure_options(figure_format, dpi)
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if address and engine != "ray":
        raise ConfigError("--address names a Ray cluster; give it with --engine ray")
    plan = load_plan(Path(path), out=out, workers=workers)
    if engine == "ray":
        _import_ray()
    todo = check_sweep_dir(plan)
    if engine != "ray":
        prepare(plan, todo)
    waiting = {point.name for point in todo}
    codes: dict[str, int | None] = {point.name: 0 for point in plan.points if point.name not in waiting}
    progress = _Progress(len(plan.points), len(codes), quiet=quiet)

    def on_done(point: SweepPoint, outcome: PointOutcome) -> None:
        codes[point.name] = outcome.exit_code
        if outcome.exit_code not in (0, INTERRUPTED):
            plan.failure_path(point).write_text(
                f"exit code {outcome.exit_code} after {outcome.attempts} attempt(s)\n{outcome.stderr}"
            )
        progress.finished(outcome.exit_code)

    interrupted = False
    try:
        with sigterm_as_interrupt():
            if runner is not None:
                _run_in_process(plan, todo, runner, progress.started, on_done)
            elif engine == "ray":
                run_ray(plan, todo, progress.started, on_done, address=address, prepare=lambda: prepare(plan, todo))
            else:
                run_local(plan, todo, progress.started, on_done)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.close()
    if interrupted and not (plan.out / SWEEP_MARK).exists():  # stopped before anything was written
        raise KeyboardInterrupt
    runs, _ = write_tables(plan, codes)
    sweep_figure(plan, runs, **figures)
    return SweepOutcome(
        out=plan.out,
        points=len(plan.points),
        skipped=len(plan.points) - len(todo),
        done=progress.done,
        failed=progress.failed,
        interrupted=interrupted,
        table=(plan.out / "table.md").read_text(),
    )


def _run_in_process(
    plan: SweepPlan,
    todo: list[SweepPoint],
    runner: Callable[[Path, Path], int],
    on_start: Callable[[SweepPoint], None],
    on_done: Callable[[SweepPoint, PointOutcome], None],
) -> None:
    for point in todo:
        on_start(point)
        on_done(point, PointOutcome(runner(plan.config_path(point), plan.run_dir(point)), "", 1))


def run_sweep(path: Path, **options: object) -> Path:
    """Runs the sweep (see ``sweep``) and returns its directory."""
    return sweep(path, **options).out  # type: ignore[arg-type]
