"""A sweep's chart: every seed as a point beside its configuration's mean ± std.

``train`` sweeps draw validation accuracy, one panel per task, with the task's chance level and
a y-range close enough to the data that a difference of one percentage point is visible.
``run`` sweeps draw one panel per finding, one colour per arm and source.
The chart is written as accuracy.<format> or findings.<format> (png, pdf or svg) through
``probes.plots.save_figure``, so ``pdesim sweep --figure-format/--dpi`` mean what they mean for runs.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MultipleLocator, PercentFormatter  # noqa: E402

from probes import plots  # noqa: E402

from .sweep_plan import SweepPlan  # noqa: E402
from .sweep_table import configuration, findings, grid_keys  # noqa: E402

ONE_POINT = 0.01  # one percentage point of accuracy


def _what_was_swept(plan: SweepPlan) -> str:
    keys = [k for k in grid_keys(plan.points) if k != "seed"]
    seeds = {p.values.get("seed") for p in plan.points}
    return f"{' × '.join(keys) or 'nothing'}, {len(seeds)} seed{'s' if len(seeds) != 1 else ''} each"


def _seeds_and_mean(ax: plt.Axes, x: float, values: np.ndarray, color: str, label: str | None) -> list[float]:
    """Draws the seeds as dots left of x and their mean ± std at x; returns the extremes drawn."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    jitter = np.linspace(-0.06, 0.06, finite.size) if finite.size > 1 else np.zeros(1)
    ax.scatter(x - 0.15 + jitter, finite, s=16, color=color, alpha=0.6, linewidths=0)
    std = finite.std(ddof=1) if finite.size > 1 else 0.0
    ax.errorbar(x, finite.mean(), yerr=std, fmt="o", color=color, capsize=4, markersize=6, label=label)
    return [float(finite.min()), float(finite.max()), finite.mean() - std, finite.mean() + std]


def _title(fig: plt.Figure, text: str) -> None:
    fig.suptitle("\n".join(textwrap.wrap(text, int(fig.get_figwidth() * 11))), fontsize=11)


def _accuracy_limits(values: np.ndarray) -> tuple[float, float]:
    """A y-range around the data (and chance) wide enough to show ±1 pp."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    pad = max(ONE_POINT, 0.08 * (high - low))
    return max(0.0, low - pad), min(1.0, high + pad)


def train_figure(plan: SweepPlan, runs: pd.DataFrame, path: Path, *, dpi: float = plots.DPI) -> Path:
    """Final validation accuracy per configuration, one panel per task."""
    tasks = list(dict.fromkeys(runs["task"])) if "task" in runs else [str(plan.base.get("task", "listops"))]
    # within a task's panel, a configuration is the point without its task and seed
    setting = {p.name: configuration(plan, {k: v for k, v in p.values.items() if k != "task"}) for p in plan.points}
    runs = runs.assign(setting=runs["point"].map(setting))
    labels = list(dict.fromkeys(runs["setting"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(max(6.0, 0.9 * len(labels) + 2) * len(tasks), 4.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = runs[runs["task"] == task] if "task" in runs else runs
        drawn: list[float] = []
        for index, label in enumerate(labels):
            values = rows.loc[rows["setting"] == label, "final_val_accuracy"].to_numpy(dtype=float)
            drawn += _seeds_and_mean(ax, index, values, "tab:blue", "mean ± std (dots: seeds)" if index == 0 else None)
        chance = rows["chance_accuracy"].dropna()
        if not chance.empty:
            ax.axhline(chance.mean(), color="grey", linestyle="--", linewidth=1, label=f"chance {chance.mean():.1%}")
            drawn.append(chance.mean())
        low, high = _accuracy_limits(np.array(drawn))
        ax.set_ylim(low, high)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if high - low > 0.1 else 1))
        if high - low <= 0.2:
            ax.yaxis.set_minor_locator(MultipleLocator(ONE_POINT))
        ax.grid(True, axis="y", which="both", alpha=0.25)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=9)
        ax.set_title(f"task {task}")
        ax.set_ylabel("final validation accuracy")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
    _title(fig, f"{plan.out.name}: final validation accuracy over {_what_was_swept(plan)}")
    return _save(fig, path, dpi)


def run_figure(plan: SweepPlan, runs: pd.DataFrame, path: Path, *, dpi: float = plots.DPI) -> Path:
    """Each finding per configuration, one panel per finding, one colour per arm and source."""
    named = findings(plan, runs)
    labels = list(dict.fromkeys(runs["configuration"]))
    series = list(dict.fromkeys(zip(runs["role"], runs["source"])))  # the main arm is named after its switches
    colors = plt.get_cmap("tab10")
    columns = min(3, len(named))
    rows_of_panels = math.ceil(len(named) / columns)
    fig, axes = plt.subplots(
        rows_of_panels,
        columns,
        figsize=(max(5.0, 0.8 * len(labels) + 2) * columns, 4.2 * rows_of_panels),
        squeeze=False,
    )
    offsets = np.linspace(-0.25, 0.25, len(series)) if len(series) > 1 else np.zeros(1)
    for ax, (name, title) in zip(axes.flat, named.items()):
        for number, (role, source) in enumerate(series):
            mine = runs[(runs["role"] == role) & (runs["source"] == source)]
            legend = f"{role} arm, {'PDE' if source == 'pde' else 'Transformer'}"
            for index, label in enumerate(labels):
                values = mine.loc[mine["configuration"] == label, name].to_numpy(dtype=float)
                if _seeds_and_mean(ax, index + offsets[number], values, colors(number % 10), legend):
                    legend = None
        ax.set_title(title)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    entries: dict[str, object] = {}
    for ax in axes.flat[: len(named)]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(text, handle)
    for ax in list(axes.flat)[len(named) :]:
        ax.axis("off")
    spare = list(axes.flat)[len(named) :]
    where = spare[0] if spare else axes.flat[0]
    where.legend(list(entries.values()), list(entries), loc="center" if spare else "best", fontsize=9)
    _title(fig, f"{plan.out.name}: findings over {_what_was_swept(plan)} (dots: seeds, bars: mean ± std)")
    return _save(fig, path, dpi)


def _save(fig: plt.Figure, path: Path, dpi: float) -> Path:
    fig.tight_layout()
    try:
        return plots.save_figure(fig, path, dpi=dpi)
    finally:
        plt.close(fig)  # pyplot keeps every figure it made until closed


def sweep_figure(
    plan: SweepPlan, runs: pd.DataFrame, *, figure_format: str = "png", dpi: float = plots.DPI
) -> Path:
    """accuracy.<figure_format> (train) or findings.<figure_format> (run) in the sweep directory."""
    if plan.kind == "train":
        return train_figure(plan, runs, plots.figure_path(plan.out, "accuracy", figure_format), dpi=dpi)
    return run_figure(plan, runs, plots.figure_path(plan.out, "findings", figure_format), dpi=dpi)
