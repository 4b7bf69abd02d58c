"""The figures of runs: each metric over time with every arm's PDE and Transformer overlaid, for one
run directory or overlaid across several (training curves live in ``train_figures``)."""

from __future__ import annotations

from pathlib import Path

import torch

from probes import plots

from .runner import RunOutcome

Series = dict[str, tuple[torch.Tensor, torch.Tensor]]

CURVES = (
    ("norms.png", "mean_token_norm", "mean token norm ‖u_i‖", "Token norm over depth", True),
    ("drift.png", "mean_cosine", "mean cos(u_i(t), u_i(0))", "Drift: similarity to the input", False),
    ("cka.png", "cka", "linear CKA to u(0)", "Drift: CKA to the input", False),
    ("rank.png", "residual", "‖u − 1ūᵀ‖ / ‖u‖", "Rank collapse: distance to token-uniform", True),
    ("energy.png", "energy", "energy E(u)", "Energy over time", False),
)


def _arm_series(rows: list[dict], column: str, prefix: str = "") -> Series:
    """One curve per arm and source (pde, transformer) of a run's metric rows."""
    series = {}
    for arm in dict.fromkeys(row["arm"] for row in rows):
        for source in ("pde", "transformer"):
            picked = [r for r in rows if r["arm"] == arm and r["source"] == source]
            if picked:
                t = torch.tensor([r["t"] for r in picked], dtype=torch.float64)
                values = torch.tensor([r[column] for r in picked], dtype=torch.float64)
                series[f"{prefix}{arm} ({source})"] = (t, values)
    return series


def _plot(path: Path, series: Series, *, ylabel: str, title: str, logy: bool, xlabel: str | None = None) -> Path | None:
    """The curves in one figure, on a log axis only if every finite value is positive; None if nothing is finite."""
    if not any(bool(torch.isfinite(v).any()) for _, v in series.values()):
        return None
    positive = all(bool((v[torch.isfinite(v)] > 0).all()) for _, v in series.values())
    extra = {"xlabel": xlabel} if xlabel else {}
    return plots.plot_curves(path, None, series, ylabel=ylabel, title=title, logy=logy and positive, **extra)


def run_figures(outcome: RunOutcome, folder: Path) -> list[Path]:
    """Writes the run's PNGs into ``folder``; returns their paths."""
    folder = Path(folder)
    written = [
        _plot(folder / name, _arm_series(outcome.rows, column), ylabel=ylabel, title=title, logy=logy)
        for name, column, ylabel, title, logy in CURVES
    ]
    for result in outcome.results[:1]:
        u = result.solution.u[:, 0].detach()
        if bool(torch.isfinite(u).all()):
            written.append(
                plots.plot_kymograph(
                    folder / "kymograph.png",
                    result.solution.t,
                    u,
                    title=f"Token norms over time ({result.arm.label}, PDE)",
                )
            )
    consistency = next((r.extra["consistency"] for r in outcome.results if "consistency" in r.extra), None)
    if consistency:
        layers = torch.tensor(consistency["layers"], dtype=torch.float64)
        errors = torch.tensor(consistency["errors"], dtype=torch.float64)
        reference = errors[0] * layers[0] / layers
        written.append(
            plots.plot_curves(
                folder / "consistency.png",
                None,
                {"transformer vs PDE": (layers, errors), "slope 1 reference": (layers, reference)},
                ylabel="max |u_L − u(T)|",
                xlabel="layers L",
                title=f"Consistency: order {consistency['order']:.2f}",
                logy=True,
                logx=True,
            )
        )
    return [p for p in written if p is not None]


def compare_figures(metrics: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Overlays the curves of several run directories (metrics rows keyed by run directory)."""
    folder = Path(folder)
    written = []
    for name, column, ylabel, title, logy in CURVES:
        series: Series = {}
        for run_dir, rows in metrics.items():
            series.update(_arm_series(rows, column, prefix=f"{Path(run_dir).name}: "))
        written.append(_plot(folder / name, series, ylabel=ylabel, title=f"{title} (compare)", logy=logy))
    return [p for p in written if p is not None]
