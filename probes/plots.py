"""Figures of probe results as small PNG files, headless.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot, no global backend or
state, so it runs without a display and leaves the caller's matplotlib setup alone), writes a
PNG to ``path`` (creating its folder) and returns the path. Inputs may be torch tensors, numpy
arrays or sequences; non-finite values are left as gaps.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rcParams
from matplotlib.figure import Figure

FIGSIZE = (6.0, 4.0)
DPI = 120
TIME_LABEL = "time t (depth)"

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


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _legend(ax: Any) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles:
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
) -> Path:
    """Overlaid curves, one per named series, against ``t`` (or each series' own (t, values) pair).

    A name containing "transformer" is drawn with markers and a dashed line (discrete layers), the
    others as solid lines; names that differ only by "pde"/"transformer" share a colour. On a
    log axis, values ≤ 0 are left out.
    """
    fig, ax = _new_figure(title)
    colours: dict[str, Any] = {}
    palette = itertools.cycle(rcParams["axes.prop_cycle"].by_key()["color"])
    for name, values in series.items():
        x, y = _split_series(t, values)
        if logy:
            y = np.where(y > 0, y, np.nan)
        base = _SOURCE_TAG.sub("", name).strip() or name
        colour = colours.setdefault(base, next(palette))
        if "transformer" in name.lower():
            ax.plot(x, y, "o--", color=colour, markersize=3.5, linewidth=1.0, label=name)
        else:
            ax.plot(x, y, "-", color=colour, linewidth=1.6, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_energy(
    path: str | Path,
    t: ArrayLike | None,
    energies: Mapping[str, ArrayLike | tuple[ArrayLike, ArrayLike]],
    title: str = "Energy over time",
    *,
    ylabel: str = "energy E(u)",
) -> Path:
    """Energy curves (e.g. E and its parts, or E and ½‖u‖²) against time."""
    return plot_curves(path, t, energies, ylabel=ylabel, title=title)


def plot_kymograph(
    path: str | Path,
    t: ArrayLike,
    u_single: ArrayLike,
    title: str = "Token norms over time",
    *,
    quantity: str = "norm",
) -> Path:
    """Tokens × time image of one sample's trajectory u_single (T, N, d).

    ``quantity="norm"`` shows the token norm ‖u_i(t)‖ (default); ``"channel0"`` shows u_i(t)
    in channel 0 (signed, diverging colour map).
    """
    u = _array(u_single).astype(float)
    if u.ndim != 3:
        raise ValueError(f"expected one sample's trajectory of shape (T, N, d), got {u.shape}")
    if quantity == "norm":
        image, label, cmap = np.linalg.norm(u, axis=-1), "token norm ‖u_i(t)‖", "viridis"
    elif quantity == "channel0":
        image, label, cmap = u[..., 0], "u_i(t), channel 0", "RdBu_r"
    else:
        raise ValueError(f"unknown quantity {quantity!r}; choose 'norm' or 'channel0'")
    times = _array(t).astype(float)
    if times.shape[0] != u.shape[0]:
        raise ValueError(f"{times.shape[0]} times for {u.shape[0]} states")
    if times.shape[0] == 1:  # one column still needs two edges
        times, image = np.array([times[0], times[0] + 1.0]), np.repeat(image, 2, axis=0)
    fig, ax = _new_figure(title)
    masked = np.ma.masked_invalid(image.T)
    kwargs: dict[str, Any] = {"cmap": cmap, "shading": "nearest"}
    if quantity == "channel0" and masked.count():
        bound = float(np.abs(masked).max()) or 1.0
        kwargs.update(vmin=-bound, vmax=bound)
    mesh = ax.pcolormesh(times, np.arange(u.shape[1]), masked, **kwargs)
    fig.colorbar(mesh, ax=ax, label=label)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("token index i")
    return _save(fig, path)


def plot_spectrum(path: str | Path, eigenvalues: Mapping[str, ArrayLike], title: str = "Spectrum") -> Path:
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
    _legend(ax)
    return _save(fig, path)


def plot_transfer(
    path: str | Path,
    omega: ArrayLike,
    curves: Mapping[str, ArrayLike],
    title: str = "Diffusion transfer function H(ω)",
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
    _legend(ax)
    return _save(fig, path)


def plot_bars(
    path: str | Path,
    labels: Sequence[str],
    means: ArrayLike,
    stds: ArrayLike | None,
    *,
    ylabel: str,
    title: str,
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
    return _save(fig, path)
