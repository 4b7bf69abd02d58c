"""The figures of runs: each metric over time with every arm's PDE and Transformer overlaid, for one
run directory or overlaid across several (training curves live in ``train_figures``).

Each figure is first planned (``plan_run_figures``, ``plan_compare_figures``: which curves, in
which colour and style, on which scale, with which marks; plain data that tests read) and then
drawn (``draw``) in the format and resolution asked for (``probes.plots.save_figure``). A run's
figures are planned from what its directory holds (metrics rows, summary, PDE states), so
``pdesim plot`` redraws them without rerunning (``RunData.read``).

Choices made once here: an arm keeps one colour in every figure (``probes.plots.series_colours``
over the arms, in the run's order); the PDE is a solid line and the Transformer dashed with
markers, its points after its PDE stopped hollow and labelled so; curves whose values span decades
go on a log or symlog axis; legends name what ran ("PDE tangent", "Transformer post-LN"), with
the arm in front only when two arms ran the same thing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from probes import plots

from .rundir import RunDirError, read_metrics, read_summary
from .runner import RunOutcome

SOURCES = ("pde", "transformer")
SOURCE_SHORT = {"pde": "PDE", "transformer": "TF"}

# (figure stem, metrics column, y label, title)
CURVES = (
    ("drift", "mean_cosine", "mean cos(u_i(t), u_i(0))", "Drift: similarity to the input"),
    ("cka", "cka", "linear CKA to u(0)", "Drift: CKA to the input"),
    ("rank", "residual", "‖u − 1ūᵀ‖ / ‖u‖", "Rank collapse: distance to token-uniform"),
)
LYAPUNOV = ("lyapunov", "lyapunov", "largest finite-time Lyapunov exponent λ₁(t)", "Lyapunov exponent over depth")
# Every figure stem pdesim writes into a run's figures/ or a compare folder (``pdesim plot`` replaces only these).
FIGURE_STEMS = (
    "norms", "drift", "cka", "rank", "energy", "lyapunov", "lyapunov_spectrum", "kymograph", "clusters", "consistency",
)


@dataclass
class Curve:
    """One line: its points, legend label, colour, and style (PDE solid; Transformer dashed with markers)."""

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: Any
    discrete: bool = False
    hollow: bool = False  # points drawn as empty markers (the Transformer after its PDE stopped)


@dataclass
class Panel:
    """One axes: curves, a y scale ("linear", "log", "symlog") and reference marks."""

    title: str
    ylabel: str
    curves: list[Curve] = field(default_factory=list)
    scale: tuple[str, float | None] = ("linear", None)
    xlabel: str = plots.TIME_LABEL
    logx: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label), grey
    vlines: list[tuple[float, str, Any]] = field(default_factory=list)  # (x, label, colour), dotted
    note: str = ""  # a line under the panel's title
    integer_x: bool = False  # x is an index (ticks at integers, points marked)


@dataclass
class FigurePlan:
    """One figure file: its stem, title and panels side by side (or a kymograph's images)."""

    stem: str
    title: str
    panels: list[Panel] = field(default_factory=list)
    legend_outside: bool = False
    images: dict[str, tuple[np.ndarray, np.ndarray]] | None = None  # kymograph: name -> (t, u sample 0)


@dataclass
class RunData:
    """What a run's figures are drawn from: its metrics rows, its summary, and each arm's PDE states."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    states: dict[str, tuple[np.ndarray, np.ndarray]]  # arm label -> (t, u of sample 0 (T, N, d))

    @classmethod
    def of(cls, outcome: RunOutcome) -> RunData:
        states = {
            r.arm.label: (r.solution.t.numpy(), r.solution.u[:, 0].detach().cpu().double().numpy())
            for r in outcome.results
        }
        return cls(outcome.rows, outcome.summary, states)

    @classmethod
    def read(cls, run_dir: Path) -> RunData:
        """A run directory's data (metrics.csv, summary.json, states.npz); a RunDirError if one is missing."""
        run_dir = Path(run_dir)
        rows, summary = read_metrics(run_dir), read_summary(run_dir)
        if summary.get("kind", "run") != "run" or "arms" not in summary:
            raise RunDirError(f"{run_dir} is not a pdesim run directory (its summary.json names no arms)")
        states: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        path = run_dir / "states.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as arrays:
                    for label in summary["arms"]:
                        key = _array_key(label)
                        if f"{key}__pde_t" in arrays and f"{key}__pde_u" in arrays:
                            states[label] = (arrays[f"{key}__pde_t"], arrays[f"{key}__pde_u"][:, 0].astype(float))
            except (OSError, ValueError) as err:
                raise RunDirError(f"{path} cannot be read: {err}") from None
        return cls(rows, summary, states)


def _array_key(label: str) -> str:
    """The states.npz key stem of an arm (as ``rundir`` writes it)."""
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


# -- planning ------------------------------------------------------------------------------------


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _points(rows: list[dict], arm: str, source: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    picked = [r for r in rows if r["arm"] == arm and r["source"] == source]
    return (np.array([_float(r["t"]) for r in picked]), np.array([_float(r.get(column)) for r in picked]))


def _arms(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(row["arm"] for row in rows))


def source_label(summary: dict[str, Any], arm: str, source: str) -> str:
    """What ran in this arm's source, e.g. "PDE tangent" (from the summary; "<arm> (<source>)" for older runs)."""
    sources = summary.get("arms", {}).get(arm, {}).get("sources") or {}
    return sources.get(source) or f"{arm} ({source})"


def _legend_labels(summary: dict[str, Any], arms: list[str]) -> dict[tuple[str, str], str]:
    """Each (arm, source)'s legend label: what ran, with the arm in front when two arms ran the same thing."""
    plain = {(arm, source): source_label(summary, arm, source) for arm in arms for source in SOURCES}
    counts: dict[str, int] = {}
    for arm in arms:
        for source in SOURCES:
            counts[plain[arm, source]] = counts.get(plain[arm, source], 0) + 1
    return {key: label if counts[label] == 1 else f"{key[0]}: {label}" for key, label in plain.items()}


def _pde_stop(summary: dict[str, Any], arm: str) -> float | None:
    """The time the arm's PDE stopped early (blow-up, non-finite), or None if it ran to the end."""
    entry = summary.get("arms", {}).get(arm, {})
    if entry.get("status") in (None, "success", "interrupted"):
        return None
    return _float(entry.get("t_event"))


def _arm_curves(
    data: RunData, column: str, colours: dict[str, Any], *, stop_marks: bool = True
) -> tuple[list[Curve], list[tuple[float, str, Any]]]:
    """Each arm's PDE and Transformer curves of one column (the Transformer after its PDE stopped hollow)."""
    arms = _arms(data.rows)
    labels = _legend_labels(data.summary, arms)
    curves: list[Curve] = []
    marks: list[tuple[float, str, Any]] = []
    for arm in arms:
        stop = _pde_stop(data.summary, arm)
        for source in SOURCES:
            x, y = _points(data.rows, arm, source, column)
            if not len(x):
                continue
            finite = np.isfinite(y)
            if column == "lyapunov":  # measured at renormalization times only: join those points
                x, y = x[finite], y[finite]
            label = labels[arm, source]
            if source == "transformer" and stop is not None and math.isfinite(stop) and (x > stop).any():
                before, after = x <= stop, x >= stop
                curves.append(Curve(label, x[before], y[before], colours[arm], discrete=True))
                curves.append(Curve(f"{label}, after the PDE stopped", x[after], y[after], colours[arm], True, True))
            else:
                curves.append(Curve(label, x, y, colours[arm], discrete=source == "transformer"))
        if stop_marks and stop is not None and math.isfinite(stop):
            status = data.summary["arms"][arm]["status"]
            marks.append((stop, f"{source_label(data.summary, arm, 'pde')}: {status} at t = {stop:.3g}", colours[arm]))
        tf_blowup = data.summary.get("arms", {}).get(arm, {}).get("transformer", {}) or {}
        layer = tf_blowup.get("blowup_layer")
        if stop_marks and layer is not None:
            x, _ = _points(data.rows, arm, "transformer", column)
            if layer < len(x):
                marks.append((float(x[layer]), f"{labels[arm, 'transformer']}: blow-up at t = {x[layer]:.3g}",
                               colours[arm]))
    return curves, marks


def _positive_log(curves: list[Curve]) -> tuple[str, float | None]:
    """log when every finite value is positive, else the values' own scale."""
    values = [c.y for c in curves]
    finite = [v[np.isfinite(v)] for v in values]
    if all((v > 0).all() for v in finite) and any(len(v) for v in finite):
        return "log", None
    return plots.axis_scale(values)


def run_colours(arms: Iterable[str]) -> dict[str, Any]:
    """The colour of each arm, in the run's order (the same in every figure of the run)."""
    return plots.series_colours(arms)


def plan_run_figures(data: RunData) -> list[FigurePlan]:
    """Every figure of one run, as data: norms, drift, CKA, rank, energy, Lyapunov (curve and spectrum),
    kymographs, and the preset's own (clusters, consistency)."""
    arms = _arms(data.rows)
    colours = run_colours(arms)
    plans = [_norms_plan(data, colours)]
    for stem, column, ylabel, title in CURVES:
        curves, marks = _arm_curves(data, column, colours)
        scale = _positive_log(curves) if column == "residual" else plots.axis_scale(c.y for c in curves)
        plans.append(FigurePlan(stem, title, [Panel(title, ylabel, curves, scale, vlines=marks)]))
    plans.append(_energy_plan(data, colours))
    plans.append(_lyapunov_plan(data, colours))
    plans.append(_spectrum_plan(data, colours))
    if data.states:
        images = {source_label(data.summary, arm, "pde") if len(data.states) == 1 else
                  f"{arm}: {source_label(data.summary, arm, 'pde')}": state for arm, state in data.states.items()}
        plans.append(FigurePlan("kymograph", "Token norms ‖u_i(t)‖ over time (sample 0)", images=images))
    if data.summary.get("preset") == "cluster":
        plans.append(_cluster_plan(data, colours))
    consistency = next((a["consistency"] for a in data.summary.get("arms", {}).values() if a.get("consistency")), None)
    if consistency:
        plans.append(_consistency_plan(consistency))
    return [plan for plan in plans if plan.images or any(_has_data(p) for p in plan.panels)]


def _has_data(panel: Panel) -> bool:
    return any(np.isfinite(c.y).any() for c in panel.curves)


def _norms_plan(data: RunData, colours: dict[str, Any]) -> FigurePlan:
    mean, marks = _arm_curves(data, "mean_token_norm", colours)
    largest, _ = _arm_curves(data, "max_abs", colours)
    threshold = next((a.get("blowup_threshold") for a in data.summary.get("arms", {}).values()
                      if a.get("blowup_threshold")), None)
    right = Panel("max |u| (the blow-up test)", "max |u_i,c|", largest, _positive_log(largest), vlines=marks)
    if threshold:
        right.hlines.append((float(threshold), f"blow-up threshold {float(threshold):g}"))
    left = Panel("mean token norm", "mean token norm ‖u_i‖", mean, _positive_log(mean), vlines=marks)
    return FigurePlan("norms", "Token norm over depth", [left, right], legend_outside=True)


def _energy_plan(data: RunData, colours: dict[str, Any]) -> FigurePlan:
    """One panel per energy functional (arms sharing one share a panel), each on its own scale."""
    curves, _ = _arm_curves(data, "energy", colours, stop_marks=False)
    arms_summary = data.summary.get("arms", {})
    groups: dict[str, list[str]] = {}
    for arm in _arms(data.rows):
        groups.setdefault(arms_summary.get(arm, {}).get("energy_functional", "E(u)"), []).append(arm)
    labels = _legend_labels(data.summary, _arms(data.rows))
    panels = []
    for functional, arms in groups.items():
        own = {labels[arm, source] for arm in arms for source in SOURCES}
        picked = [c for c in curves if c.label.split(", after the PDE")[0] in own]
        inexact = [source_label(data.summary, arm, "pde") for arm in arms
                   if arms_summary.get(arm, {}).get("energy_is_exact") is False]
        note = f"E is not a Lyapunov function of: {', '.join(inexact)}" if inexact else "E is a Lyapunov function here"
        panels.append(Panel(functional, "energy E(u)", picked, plots.axis_scale(c.y for c in picked), note=note))
    return FigurePlan("energy", "Energy over time", panels, legend_outside=len(panels) == 1)


def _lyapunov_plan(data: RunData, colours: dict[str, Any]) -> FigurePlan:
    stem, column, ylabel, title = LYAPUNOV
    curves, marks = _arm_curves(data, column, colours)
    panel = Panel(title, ylabel, curves, plots.axis_scale(c.y for c in curves), vlines=marks,
                  hlines=[(0.0, "λ = 0")])
    return FigurePlan(stem, title, [panel])


def _spectrum_plan(data: RunData, colours: dict[str, Any]) -> FigurePlan:
    """The top Lyapunov exponents of each arm (PDE and Transformer), one panel per arm."""
    panels = []
    for arm in _arms(data.rows):
        entry = data.summary.get("arms", {}).get(arm, {})
        curves = []
        for source, values in (("pde", entry.get("lyapunov_spectrum")),
                               ("transformer", (entry.get("transformer") or {}).get("lyapunov_spectrum"))):
            if values:
                y = np.array([_float(v) for v in values])
                curves.append(Curve(source_label(data.summary, arm, source), np.arange(1, len(y) + 1), y,
                                    colours[arm], discrete=source == "transformer"))
        panels.append(Panel(arm, "λ_i (per unit depth)", curves, hlines=[(0.0, "")], xlabel="exponent index i",
                            integer_x=True))
    return FigurePlan("lyapunov_spectrum", "Top finite-time Lyapunov exponents", panels)


def _cluster_plan(data: RunData, colours: dict[str, Any]) -> FigurePlan:
    count, _ = _arm_curves(data, "clusters", colours, stop_marks=False)
    cosine, _ = _arm_curves(data, "mean_pairwise_cosine", colours, stop_marks=False)
    return FigurePlan("clusters", "Clustering on the LayerNorm sphere", [
        Panel("cluster count", "clusters (cosine > 0.99)", count),
        Panel("mean pairwise cosine", "mean cos(u_i, u_j)", cosine, hlines=[(1.0, "one cluster")]),
    ])


def _consistency_plan(consistency: dict[str, Any]) -> FigurePlan:
    layers = np.array(consistency["layers"], dtype=float)
    errors = np.array(consistency["errors"], dtype=float)
    reference = errors[0] * layers[0] / layers
    colours = plots.series_colours(["measured", "slope"])
    curves = [Curve("Transformer vs PDE", layers, errors, colours["measured"], discrete=True),
              Curve("slope −1 (first order)", layers, reference, "grey")]
    panel = Panel(f"order {consistency['order']:.2f}", "max |u_L − u(T)|", curves, ("log", None),
                  xlabel="layers L", logx=True)
    return FigurePlan("consistency", f"Consistency: order {consistency['order']:.2f}", [panel])


def plan_compare_figures(runs: dict[str, RunData]) -> list[FigurePlan]:
    """Each curve of several runs overlaid: colour per (run, arm), short labels "run·arm PDE|TF" outside the data."""
    keys = [(run, arm) for run, data in runs.items() for arm in _arms(data.rows)]
    colours = plots.series_colours(f"{run}\x00{arm}" for run, arm in keys)
    columns = (("norms", "mean_token_norm", "mean token norm ‖u_i‖", "Token norm over depth"), *CURVES,
               ("energy", "energy", "energy E(u)", "Energy over time"), LYAPUNOV)
    plans = []
    for stem, column, ylabel, title in columns:
        curves = []
        for run, data in runs.items():
            for arm in _arms(data.rows):
                for source in SOURCES:
                    x, y = _points(data.rows, arm, source, column)
                    if column == "lyapunov":
                        x, y = x[np.isfinite(y)], y[np.isfinite(y)]
                    if len(x):
                        label = f"{Path(run).name}·{arm} {SOURCE_SHORT[source]}"
                        curves.append(Curve(label, x, y, colours[f"{run}\x00{arm}"], discrete=source == "transformer"))
        scale = _positive_log(curves) if column in ("mean_token_norm", "residual") else plots.axis_scale(
            c.y for c in curves)
        hlines = [(0.0, "λ = 0")] if column == "lyapunov" else []
        plans.append(FigurePlan(stem, f"{title} (compare)", [Panel(title, ylabel, curves, scale, hlines=hlines)],
                                legend_outside=True))
    return [plan for plan in plans if any(_has_data(p) for p in plan.panels)]


# -- drawing -------------------------------------------------------------------------------------


def draw(plan: FigurePlan, folder: Path, *, figure_format: str = "png", dpi: float = plots.DPI) -> Path:
    """Draws one planned figure into ``folder`` as ``<stem>.<figure_format>``."""
    path = plots.figure_path(folder, plan.stem, figure_format)
    if plan.images is not None:
        return plots.plot_kymographs(path, plan.images, title=plan.title, dpi=dpi)
    fig, axes = plots.new_figure(plan.title, len(plan.panels))
    for ax, panel in zip(axes, plan.panels):
        _draw_panel(ax, panel, titled=len(plan.panels) > 1)
        # outside the data: one legend right of the last panel (its curves are every panel's)
        if not plan.legend_outside or ax is axes[-1]:
            plots.legend(ax, outside=plan.legend_outside)
    return plots.save_figure(fig, path, dpi=dpi)


def _draw_panel(ax: Any, panel: Panel, *, titled: bool) -> None:
    for curve in panel.curves:
        if curve.discrete:
            face = "none" if curve.hollow else curve.colour
            ax.plot(curve.x, curve.y, "o:" if curve.hollow else "o--", color=curve.colour, markerfacecolor=face,
                    markersize=3.5, linewidth=1.0, label=curve.label)
        else:
            ax.plot(curve.x, curve.y, "s-" if panel.integer_x else "-", color=curve.colour, markersize=4,
                    linewidth=1.6, label=curve.label)
    if panel.integer_x and panel.curves:
        ax.set_xticks(np.unique(np.concatenate([c.x for c in panel.curves])))
    for y, label in panel.hlines:
        ax.axhline(y, color="grey", linewidth=0.9, linestyle="--", label=label or None)
    for x, label, colour in panel.vlines:
        ax.axvline(x, color=colour, linewidth=1.0, linestyle=":", label=label)
    plots.apply_scale(ax, panel.scale)
    if panel.logx:
        ax.set_xscale("log")
    title = panel.title if titled else ax.get_title()
    if titled or panel.note:
        ax.set_title(f"{title}\n{panel.note}" if panel.note else title, fontsize=9)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)


def draw_all(
    plans: list[FigurePlan], folder: Path, *, figure_format: str = "png", dpi: float = plots.DPI
) -> list[Path]:
    """Draws every planned figure into ``folder``; returns the paths."""
    return [draw(plan, Path(folder), figure_format=figure_format, dpi=dpi) for plan in plans]


def run_figures(
    outcome: RunOutcome, folder: Path, *, figure_format: str = "png", dpi: float = plots.DPI
) -> list[Path]:
    """Writes the run's figures into ``folder``; returns their paths."""
    return draw_all(plan_run_figures(RunData.of(outcome)), folder, figure_format=figure_format, dpi=dpi)


def compare_figures(
    metrics: dict[str, list[dict]], folder: Path, *, figure_format: str = "png", dpi: float = plots.DPI
) -> list[Path]:
    """Overlays the curves of several run directories (metrics rows keyed by run directory)."""
    runs = {run: RunData(rows, {}, {}) for run, rows in metrics.items()}
    return draw_all(plan_compare_figures(runs), folder, figure_format=figure_format, dpi=dpi)
