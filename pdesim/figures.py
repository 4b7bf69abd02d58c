"""The figures of a run: each metric over time with every arm's PDE and Transformer overlaid."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from probes import plots

from .experiment import RunOutcome

CURVES = (
    ("norms.png", "mean_token_norm", "mean token norm ‖u_i‖", "Token norm over depth", True),
    ("drift.png", "mean_cosine", "mean cos(u_i(t), u_i(0))", "Drift: similarity to the input", False),
    ("cka.png", "cka", "linear CKA to u(0)", "Drift: CKA to the input", False),
    ("rank.png", "residual", "‖u − 1ūᵀ‖ / ‖u‖", "Rank collapse: distance to token-uniform", True),
    ("energy.png", "energy", "energy E(u)", "Energy over time", False),
)


def _series(outcome: RunOutcome, column: str, sources: tuple[str, ...] = ("pde", "transformer")) -> dict:
    series = {}
    for arm in dict.fromkeys(row["arm"] for row in outcome.rows):
        for source in sources:
            rows = [r for r in outcome.rows if r["arm"] == arm and r["source"] == source]
            if rows:
                t = torch.tensor([r["t"] for r in rows], dtype=torch.float64)
                values = torch.tensor([r[column] for r in rows], dtype=torch.float64)
                series[f"{arm} ({source})"] = (t, values)
    return series


def run_figures(outcome: RunOutcome, folder: Path) -> list[Path]:
    """Writes the run's PNGs into ``folder``; returns their paths."""
    folder = Path(folder)
    written = []
    for name, column, ylabel, title, logy in CURVES:
        series = _series(outcome, column)
        if not any(bool(torch.isfinite(v).any()) for _, v in series.values()):
            continue
        positive = all(bool((v[torch.isfinite(v)] > 0).all()) for _, v in series.values())
        written.append(
            plots.plot_curves(folder / name, None, series, ylabel=ylabel, title=title, logy=logy and positive)
        )
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
    return [p for p in written if p is not None and not (isinstance(p, float) and math.isnan(p))]


def compare_figures(metrics: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Overlays the curves of several run directories (metrics rows keyed by run directory)."""
    folder = Path(folder)
    written = []
    for name, column, ylabel, title, logy in CURVES:
        series = {}
        for run_dir, rows in metrics.items():
            run_name = Path(run_dir).name
            for arm in dict.fromkeys(r["arm"] for r in rows):
                for source in ("pde", "transformer"):
                    picked = [r for r in rows if r["arm"] == arm and r["source"] == source]
                    if picked:
                        t = torch.tensor([r["t"] for r in picked], dtype=torch.float64)
                        values = torch.tensor([r[column] for r in picked], dtype=torch.float64)
                        series[f"{run_name}: {arm} ({source})"] = (t, values)
        if not any(bool(torch.isfinite(v).any()) for _, v in series.values()):
            continue
        positive = all(bool((v[torch.isfinite(v)] > 0).all()) for _, v in series.values())
        written.append(
            plots.plot_curves(
                folder / name, None, series, ylabel=ylabel, title=f"{title} (compare)", logy=logy and positive
            )
        )
    return written


def compare_training_figures(rows_by_run: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Overlays the training curves (loss, gradient norm, validation accuracy) of several train runs."""
    folder = Path(folder)
    written = []
    for name, column, ylabel, logy in (
        ("loss.png", "loss", "training loss", False),
        ("grad_norm.png", "grad_norm", "global gradient norm", True),
        ("max_activation.png", "max_activation", "max |activation|", True),
        ("val_accuracy.png", "val_accuracy", "validation accuracy", False),
    ):
        series = {}
        for run_dir, rows in rows_by_run.items():
            picked = [r for r in rows if math.isfinite(r.get(column, math.nan))]
            if picked:
                steps = torch.tensor([r["step"] for r in picked], dtype=torch.float64)
                series[Path(run_dir).name] = (steps, torch.tensor([r[column] for r in picked], dtype=torch.float64))
        if not series:
            continue
        positive = all(bool((v[torch.isfinite(v)] > 0).all()) for _, v in series.values())
        written.append(
            plots.plot_curves(
                folder / name,
                None,
                series,
                ylabel=ylabel,
                xlabel="training step",
                title=f"{ylabel} (compare)",
                logy=logy and positive,
            )
        )
    return written
