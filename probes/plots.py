"""Figures of probe results, headless, as PNG, PDF or SVG files.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot, no global backend or
state, so it runs without a display and leaves the caller's matplotlib setup alone), writes the
figure to ``path`` in the format its suffix names (.png, .pdf, .svg; ``save_figure``, at ``dpi``)
creating its folder, and returns the path. Inputs may be torch tensors, numpy arrays or
sequences; non-finite values are left as gaps.

Shared choices live here once: ``series_colours`` (one distinct colour per name, never repeated
for the first 20), ``axis_scale`` (linear, log or symlog from the values' range) and
``colour_norm`` (a log colour scale when an image spans decades).
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, Normalize, SymLogNorm
from matplotlib.figure import Figure

FIGSIZE = (6.0, 4.0)
DPI = 120
TIME_LABEL = "time t (depth)"
FIGURE_FORMATS = ("png", "pdf", "svg")
# Values whose magnitudes span more than this factor are drawn on a log (or symlog) scale.
DECADES_FACTOR = 1e3

ArrayLike = Any  # a torch.Tensor, numpy array or sequence of numbers
_SOURCE_TAG = re.compile(r"\s*[\(\[]?\b(pde|transformer)\b[\)\]]?", re.IGNORECASE)


def _array(x: ArrayLike) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu()
        x = x.resolve_conj().numpy() if x.is_complex() else x.double().numpy()
    return np.asarray(x)


def _new_figure(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    return fig, ax


def new_figure(title: str, panels: int = 1, *, panel_width: float = 4.2, height: float = 3.8) -> tuple[Figure, list]:
    """A figure with ``panels`` axes side by side under one title; returns (figure, axes)."""
    if panels == 1:
        fig, ax = _new_figure(title)
        return fig, [ax]
    fig = Figure(figsize=(max(FIGSIZE[0], panel_width * panels), height), dpi=DPI)
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    fig.suptitle(title, fontsize=11)
    return fig, axes


def figure_path(folder: str | Path, stem: str, figure_format: str = "png") -> Path:
    """``folder/stem.<format>`` for one of FIGURE_FORMATS."""
    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"figure format {figure_format!r} is not one of {', '.join(FIGURE_FORMATS)}")
    return Path(folder) / f"{stem}.{figure_format}"


def save_figure(fig: Figure, path: str | Path, *, dpi: float = DPI) -> Path:
    """Writes ``fig`` to ``path`` in the format its suffix names (png, pdf or svg) at ``dpi``; returns the path.

    The one place figures are written: every plot here and pdesim's run, compare, train and sweep
    figures go through it, so ``--figure-format`` and ``--dpi`` mean the same everywhere.
    """
    path = Path(path)
    figure_format = path.suffix.lstrip(".").lower()
    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"cannot write a figure to {path.name}: the suffix must be one of .png, .pdf, .svg")
    if not (isinstance(dpi, (int, float)) and not isinstance(dpi, bool) and 10 <= dpi <= 2400):
        raise ValueError(f"dpi={dpi!r} must be a number in 10..2400")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, format=figure_format, dpi=dpi, bbox_inches="tight")
    return path




def series_colours(names: Iterable[str]) -> dict[str, Any]:
    """One colour per distinct name, in order: tab10, then tab20's light shades, then evenly spaced hues.

    Colours never repeat: the first 20 names get the tab palettes, any further ones new hues.
    """
    base = list(colormaps["tab10"].colors) + list(colormaps["tab20"].colors[1::2])
    colours: dict[str, Any] = {}
    for name in names:
        if name in colours:
            continue
        index = len(colours)
        if index < len(base):
            colours[name] = base[index]
        else:
            hue = ((index - len(base)) * 0.618033988749895) % 1.0  # golden-ratio steps never coincide
            colours[name] = colorsys.hsv_to_rgb(hue, 0.75, 0.8)
    return colours


def axis_scale(values: Iterable[ArrayLike], factor: float = DECADES_FACTOR) -> tuple[str, float | None]:
    """("linear" | "log" | "symlog", linthresh) for these values: log when all finite values are
    positive and span more than ``factor``; symlog when they change sign or reach 0 and the bulk of
    their non-zero magnitudes (10th to 90th percentile) spans more than ``factor`` (linthresh at the
    10th percentile); else linear."""
    finite = [a[np.isfinite(a)] for a in (_array(v).astype(float).reshape(-1) for v in values)]
    data = np.concatenate(finite) if finite else np.zeros(0)
    if data.size == 0:
        return "linear", None
    magnitudes = np.abs(data[data != 0])
    if magnitudes.size == 0:
        return "linear", None
    if (data > 0).all():
        return ("log", None) if magnitudes.max() / magnitudes.min() > factor else ("linear", None)
    # with signs, values near a zero crossing are always small: the bulk (10th to 90th percentile) decides
    low, high = np.percentile(magnitudes, [10, 90])
    if high / low <= factor:
        return "linear", None
    return "symlog", float(low)


def apply_scale(ax: Any, scale: tuple[str, float | None]) -> None:
    """Sets the y axis to an ``axis_scale`` result."""
    kind, linthresh = scale
    if kind == "symlog":
        ax.set_yscale("symlog", linthresh=linthresh)
    elif kind == "log":
        ax.set_yscale("log")


def colour_norm(images: Iterable[ArrayLike], factor: float = DECADES_FACTOR) -> Normalize:
    """One colour scale for these images: LogNorm (or SymLogNorm with signs) when they span decades."""
    finite = [a[np.isfinite(a)] for a in (_array(v).astype(float).reshape(-1) for v in images)]
    data = np.concatenate(finite) if finite else np.zeros(0)
    if data.size == 0:
        return Normalize()
    low, high = float(data.min()), float(data.max())
    kind, linthresh = axis_scale([data], factor)
    if kind == "log":
        return LogNorm(vmin=low, vmax=high)
    if kind == "symlog":
        return SymLogNorm(linthresh=linthresh, vmin=low, vmax=high)
    return Normalize(vmin=low, vmax=high if high > low else low + 1.0)


def legend(ax: Any, *, outside: bool = False) -> None:
    """The axes' legend (if it has labelled artists): inside, or right of the axes, outside the data."""
    handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    else:
        ax.legend(fontsize=8 if len(handles) < 7 else 6, framealpha=0.8)


def _split_series(t: ArrayLike | None, values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """A series is an array over the shared ``t``, or its own (t, values) pair."""
    if isinstance(values, tuple) and len(values) == 2:
        x, y = _array(values[0]), _array(values[1])
    else:
        y = _array(values)
        x = np.arange(len(y), dtype=float) if t is None else _array(t)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"a series has {y.shape[0]} values for {x.shape[0]} times")
    return x.astype(float), y.astype(float)


def plot_curves(
    path: str | Path,
    t: ArrayLike | None,
    series: Mapping[str, ArrayLike | tuple[ArrayLike, ArrayLike]],
    *,
    ylabel: str,
    title: str,
    logy: bool = False,
    xlabel: str = TIME_LABEL,
    logx: bool = False,
    colours: Mapping[str, Any] | None = None,
    legend_outside: bool = False,
    dpi: float = DPI,
) -> Path:
    """Overlaid curves, one per named series, against ``t`` (or each series' own (t, values) pair).

    A name containing "transformer" is drawn with markers and a dashed line (discrete layers), the
    others as solid lines; names that differ only by "pde"/"transformer" share a colour (from
    ``colours`` by name or by that shared base name, else ``series_colours`` of the base names).
    On a log axis, values ≤ 0 are left out.
    """
    fig, ax = _new_figure(title)
    draw_series(ax, t, series, colours=colours, logy=logy)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    legend(ax, outside=legend_outside)
    return save_figure(fig, path, dpi=dpi)


def base_name(name: str) -> str:
    """A series name without its "pde"/"transformer" tag: the name of its arm."""
    return _SOURCE_TAG.sub("", name).strip() or name


def draw_series(
    ax: Any,
    t: ArrayLike | None,
    series: Mapping[str, ArrayLike | tuple[ArrayLike, ArrayLike]],
    *,
    colours: Mapping[str, Any] | None = None,
    logy: bool = False,
) -> None:
    """Draws each named series on ``ax`` in the style of ``plot_curves``."""
    palette = series_colours(base_name(name) for name in series)
    for name, values in series.items():
        x, y = _split_series(t, values)
        if logy:
            y = np.where(y > 0, y, np.nan)
        base = base_name(name)
        colour = (colours or {}).get(name, (colours or {}).get(base, palette[base]))
        if "transformer" in name.lower():
            ax.plot(x, y, "o--", color=colour, markersize=3.5, linewidth=1.0, label=name)
        else:
            ax.plot(x, y, "-", color=colour, linewidth=1.6, label=name)


def plot_energy(
    path: str | Path,
    t: ArrayLike | None,
    energies: Mapping[str, ArrayLike | tuple[ArrayLike, ArrayLike]],
    title: str = "Energy over time",
    *,
    ylabel: str = "energy E(u)",
    dpi: float = DPI,
) -> Path:
    """Energy curves (e.g. E and its parts, or E and ½‖u‖²) against time, on a log or symlog axis
    when their values span decades."""
    kind = axis_scale(_split_series(t, v)[1] for v in energies.values())[0]
    return plot_curves(path, t, energies, ylabel=ylabel, title=title, logy=kind == "log", dpi=dpi)


def plot_kymograph(
    path: str | Path,
    t: ArrayLike,
    u_single: ArrayLike,
    title: str = "Token norms over time",
    *,
    quantity: str = "norm",
    dpi: float = DPI,
) -> Path:
    """Tokens × time image of one sample's trajectory u_single (T, N, d).

    ``quantity="norm"`` shows the token norm ‖u_i(t)‖ (default); ``"channel0"`` shows u_i(t)
    in channel 0 (signed, diverging colour map). A colour range spanning decades is drawn on a
    log scale.
    """
    return plot_kymographs(path, {"": (t, u_single)}, title=title, quantity=quantity, dpi=dpi)


def _kymograph_image(t: ArrayLike, u_single: ArrayLike, quantity: str) -> tuple[np.ndarray, np.ndarray]:
    u = _array(u_single).astype(float)
    if u.ndim != 3:
        raise ValueError(f"expected one sample's trajectory of shape (T, N, d), got {u.shape}")
    if quantity == "norm":
        image = np.linalg.norm(u, axis=-1)
    elif quantity == "channel0":
        image = u[..., 0]
    else:
        raise ValueError(f"unknown quantity {quantity!r}; choose 'norm' or 'channel0'")
    times = _array(t).astype(float)
    if times.shape[0] != u.shape[0]:
        raise ValueError(f"{times.shape[0]} times for {u.shape[0]} states")
    if times.shape[0] == 1:  # one column still needs two edges
        times, image = np.array([times[0], times[0] + 1.0]), np.repeat(image, 2, axis=0)
    return times, image


def plot_kymographs(
    path: str | Path,
    panels: Mapping[str, tuple[ArrayLike, ArrayLike]],
    title: str = "Token norms over time",
    *,
    quantity: str = "norm",
    dpi: float = DPI,
) -> Path:
    """Tokens × time images side by side, one per named (t, u_single (T, N, d)) pair, on one colour scale.

    The shared scale is logarithmic when the images' values span decades (so a standard run beside
    an exploding one shows both); ``quantity`` as in ``plot_kymograph``.
    """
    images = {name: _kymograph_image(t, u, quantity) for name, (t, u) in panels.items()}
    label = "token norm ‖u_i(t)‖" if quantity == "norm" else "u_i(t), channel 0"
    fig, axes = new_figure(title, len(images))
    if quantity == "channel0":
        values = [np.abs(image) for _, image in images.values()]
        bound = max((float(np.nanmax(v)) for v in values if np.isfinite(v).any()), default=1.0) or 1.0
        norm: Normalize = Normalize(vmin=-bound, vmax=bound)
        if axis_scale(values)[0] != "linear":
            norm = SymLogNorm(linthresh=bound / DECADES_FACTOR, vmin=-bound, vmax=bound)
        cmap = "RdBu_r"
    else:
        norm, cmap = colour_norm(image for _, image in images.values()), "viridis"
    mesh = None
    for ax, (name, (times, image)) in zip(axes, images.items()):
        masked = np.ma.masked_invalid(image.T)
        mesh = ax.pcolormesh(times, np.arange(image.shape[1]), masked, cmap=cmap, shading="nearest", norm=norm)
        if name:
            ax.set_title(name, fontsize=9)
        ax.set_xlabel(TIME_LABEL)
    axes[0].set_ylabel("token index i")
    fig.colorbar(mesh, ax=axes, label=label + (" (log scale)" if isinstance(norm, LogNorm) else ""))
    fig.set_layout_engine("constrained")  # a colour bar shared by several axes
    return save_figure(fig, path, dpi=dpi)


def plot_spectrum(
    path: str | Path, eigenvalues: Mapping[str, ArrayLike], title: str = "Spectrum", *, dpi: float = DPI
) -> Path:
    """Eigenvalues per named set: a scatter in the complex plane if any set is complex, else sorted values."""
    arrays = {name: _array(values).reshape(-1) for name, values in eigenvalues.items()}
    fig, ax = _new_figure(title)
    markers = "o^sxDv+"
    if any(np.iscomplexobj(values) for values in arrays.values()):
        for k, (name, values) in enumerate(arrays.items()):
            values = values.astype(complex)
            ax.scatter(values.real, values.imag, s=14, marker=markers[k % len(markers)], alpha=0.7, label=name)
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("Re λ (per unit time)")
        ax.set_ylabel("Im λ (per unit time)")
    else:
        for k, (name, values) in enumerate(arrays.items()):
            ax.plot(np.sort(values.astype(float)), marker=markers[k % len(markers)], markersize=3.5,
                    linewidth=1.0, label=name)
        ax.set_xlabel("mode index k (sorted)")
        ax.set_ylabel("eigenvalue λ_k (per unit time)")
    ax.grid(True, alpha=0.3)
    legend(ax)
    return save_figure(fig, path, dpi=dpi)


def plot_transfer(
    path: str | Path,
    omega: ArrayLike,
    curves: Mapping[str, ArrayLike],
    title: str = "Diffusion transfer function H(ω)",
    *,
    dpi: float = DPI,
) -> Path:
    """Gains H(ω) against frequency, with the non-expansive band |H| ≤ 1 marked.

    A 2-D curve (ω, channels) is drawn as one thin line per channel in a single colour.
    """
    x = _array(omega).astype(float)
    fig, ax = _new_figure(title)
    ax.axhspan(-1.0, 1.0, color="green", alpha=0.06, label="|H| ≤ 1 (non-expansive)")
    ax.axhline(0.0, color="grey", linewidth=0.8)
    for name, values in curves.items():
        y = _array(values).astype(float)
        if y.ndim == 1:
            ax.plot(x, y, linewidth=1.6, label=name)
        else:
            lines = ax.plot(x, y.reshape(len(x), -1), linewidth=0.8, alpha=0.6)
            for line in lines[1:]:
                line.set_color(lines[0].get_color())
            lines[0].set_label(name)
    ax.set_xlabel("frequency ω (radians per token)")
    ax.set_ylabel("gain H(ω)")
    ax.grid(True, alpha=0.3)
    legend(ax)
    return save_figure(fig, path, dpi=dpi)


def plot_bars(
    path: str | Path,
    labels: Sequence[str],
    means: ArrayLike,
    stds: ArrayLike | None,
    *,
    ylabel: str,
    title: str,
    dpi: float = DPI,
) -> Path:
    """One bar per label with ±std error bars (e.g. accuracy per diffusion insertion position)."""
    heights = _array(means).astype(float).reshape(-1)
    errors = None if stds is None else _array(stds).astype(float).reshape(-1)
    if len(labels) != len(heights) or (errors is not None and len(errors) != len(heights)):
        raise ValueError(f"{len(labels)} labels, {len(heights)} means, {None if errors is None else len(errors)} stds")
    fig, ax = _new_figure(title)
    positions = np.arange(len(heights))
    ax.bar(positions, heights, yerr=errors, capsize=4, color="tab:blue", alpha=0.8, edgecolor="black", linewidth=0.6)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(positions)
    ax.set_xticklabels(list(labels), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=dpi)
