"""The training curves of ``pdesim train`` (loss, gradient norm, max activation, validation accuracy),
for one run directory or overlaid across several.

Each figure is first planned (``plan_training_figures``: which series, which axis, which marks;
plain data that tests read) and then drawn (``draw``). A curve goes on a log axis when its finite
values are positive and span at least two decades; the first non-finite step of a run is a
dotted vertical line in that run's colour; the validation accuracy shows the chance level (the
largest class's share); a series of one point (a run evaluated once) is drawn as a marker; the
title names the run's switches (task, model, norm, residual, clipping, diffusion layers). A figure
is written as ``<stem>.<figure_format>`` (the stems of ``TRAINING_CURVES``) through
``probes.plots.save_figure``, so ``--figure-format`` and ``--dpi`` mean here what they mean for runs.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from probes import plots

from ..train import TrainSpec

# (file name as drawn at png, metrics column, y label); other formats keep the stem.
TRAINING_CURVES = (
    ("loss.png", "loss", "training loss"),
    ("grad_norm.png", "grad_norm", "global gradient norm"),
    ("max_activation.png", "max_activation", "max |activation|"),
    ("val_accuracy.png", "val_accuracy", "validation accuracy"),
)
# A curve whose finite values are all positive and span this factor or more is drawn on a log axis.
LOG_SPAN = 100.0
# Columns that decide a step's finiteness (as the training loop does).
CHECKED = ("loss", "grad_norm", "max_activation")
# Every figure stem pdesim writes into a train run's figures/ or a compare folder (``pdesim plot`` replaces only these).
TRAIN_FIGURE_STEMS = tuple(Path(filename).stem for filename, _, _ in TRAINING_CURVES)


@dataclass
class Curve:
    """One run's finite points of one column, and where that run first went non-finite."""

    steps: list[float]
    values: list[float]
    first_nonfinite_step: int | None = None

    @property
    def style(self) -> str:
        """A single point is a marker; a few points are joined markers; many a line."""
        return "o" if len(self.steps) == 1 else ("o-" if len(self.steps) <= 12 else "-")


@dataclass
class Plan:
    """One figure: its file, axis label, title, curves by run, log axis and chance level."""

    filename: str
    ylabel: str
    title: str
    curves: dict[str, Curve]
    logy: bool
    chance: float | None = None


def switches(spec: TrainSpec | dict[str, Any]) -> str:
    """The settings that decide how training behaves, in one line."""
    table = spec.to_table() if isinstance(spec, TrainSpec) else spec
    clip = table.get("clip")
    diffusion = ", ".join(table.get("diffusion_positions") or []) or "none"
    return (
        f"{table.get('task')}, {table.get('model')}, norm={table.get('norm')}, residual={table.get('residual')}, "
        f"clip={'off' if clip is None else clip}, diffusion at {diffusion}"
    )


def first_nonfinite_step(rows: list[dict[str, Any]]) -> int | None:
    """The first step whose loss, gradient norm or max activation is not finite, or None."""
    for row in rows:
        if any(not math.isfinite(_number(row.get(key))) for key in CHECKED if row.get(key) not in (None, "")):
            return int(row["step"])
    return None


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _curve(rows: list[dict[str, Any]], column: str) -> Curve:
    picked = [(float(r["step"]), _number(r.get(column))) for r in rows]
    finite = [(s, v) for s, v in picked if math.isfinite(v)]
    return Curve([s for s, _ in finite], [v for _, v in finite], first_nonfinite_step(rows))


def _spans_decades(curves: dict[str, Curve]) -> bool:
    values = [v for c in curves.values() for v in c.values]
    return bool(values) and min(values) > 0 and max(values) / min(values) >= LOG_SPAN


def plan_training_figures(
    runs: dict[str, list[dict[str, Any]]],
    *,
    subtitle: str,
    chance: float | None = None,
) -> list[Plan]:
    """The figures of the rows of one or several runs (keyed by the name each is shown under)."""
    plans = []
    for filename, column, ylabel in TRAINING_CURVES:
        curves = {name: _curve(rows, column) for name, rows in runs.items()}
        curves = {name: c for name, c in curves.items() if c.steps or c.first_nonfinite_step is not None}
        if not any(c.steps for c in curves.values()):
            continue
        plans.append(
            Plan(
                filename,
                ylabel,
                f"{ylabel}\n{subtitle}",
                curves,
                logy=_spans_decades(curves),
                chance=chance if column == "val_accuracy" else None,
            )
        )
    return plans


def chance_level(value: Any) -> float | None:
    """A summary's chance_accuracy as a number, or None where it is missing or not a finite number."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def draw(plan: Plan, folder: Path, *, figure_format: str = "png", dpi: float = plots.DPI) -> Path:
    """Draws one planned figure into ``folder`` as ``<stem>.<figure_format>``; returns its path."""
    path = plots.figure_path(folder, Path(plan.filename).stem, figure_format)  # refuses a format before drawing
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    colours = itertools.cycle(rcParams["axes.prop_cycle"].by_key()["color"])
    for (name, curve), colour in zip(plan.curves.items(), colours):
        if curve.steps:
            ax.plot(curve.steps, curve.values, curve.style, color=colour, markersize=4, linewidth=1.5, label=name)
        if curve.first_nonfinite_step is not None:
            ax.axvline(
                curve.first_nonfinite_step, color=colour, linestyle=":", linewidth=1.4,
                label=f"{name}: first non-finite step {curve.first_nonfinite_step}",
            )
    if plan.chance is not None:
        ax.axhline(plan.chance, color="grey", linestyle="--", linewidth=1.0, label=f"chance {plan.chance:.3f}")
    if plan.logy:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel(plan.ylabel)
    ax.set_title(plan.title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return plots.save_figure(fig, path, dpi=dpi)


def training_figures(
    rows: list[dict[str, Any]],
    folder: Path,
    spec: TrainSpec,
    summary: dict[str, Any] | None = None,
    *,
    figure_format: str = "png",
    dpi: float = plots.DPI,
) -> list[Path]:
    """The training curves of one run, titled by its switches, with its chance level."""
    chance = chance_level((summary or {}).get("chance_accuracy"))
    plans = plan_training_figures({spec.task: rows}, subtitle=switches(spec), chance=chance)
    return [draw(plan, Path(folder), figure_format=figure_format, dpi=dpi) for plan in plans]


def compare_chance(summaries: dict[str, dict[str, Any]] | None) -> float | None:
    """The chance level to draw over several runs: theirs when every run has the same one, else None."""
    chances = {chance_level(s.get("chance_accuracy")) for s in (summaries or {}).values()}
    return chances.pop() if len(chances) == 1 else None  # a run without one (None) also means no line


def plan_compare_training_figures(
    rows_by_run: dict[str, list[dict[str, Any]]], summaries: dict[str, dict[str, Any]] | None = None
) -> list[Plan]:
    """The overlaid figures of several train runs (rows and summaries keyed by run directory)."""
    runs = {Path(run).name: rows for run, rows in rows_by_run.items()}
    return plan_training_figures(runs, subtitle="compare: " + ", ".join(runs), chance=compare_chance(summaries))


def compare_training_figures(
    rows_by_run: dict[str, list[dict[str, Any]]],
    folder: Path,
    summaries: dict[str, dict[str, Any]] | None = None,
    *,
    figure_format: str = "png",
    dpi: float = plots.DPI,
) -> list[Path]:
    """Overlays the training curves of several train runs (rows keyed by run directory)."""
    plans = plan_compare_training_figures(rows_by_run, summaries)
    return [draw(plan, Path(folder), figure_format=figure_format, dpi=dpi) for plan in plans]
