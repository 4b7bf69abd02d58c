"""The training curves of ``pdesim train`` (loss, gradient norm, max activation, validation accuracy),
for one run directory or overlaid across several."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from probes import plots

Series = dict[str, tuple[torch.Tensor, torch.Tensor]]

TRAINING_CURVES = (
    ("loss.png", "loss", "training loss", False),
    ("grad_norm.png", "grad_norm", "global gradient norm", True),
    ("max_activation.png", "max_activation", "max |activation|", True),
    ("val_accuracy.png", "val_accuracy", "validation accuracy", False),
)


def _training_curves(rows_by_name: dict[str, list[dict]], folder: Path, note: str) -> list[Path]:
    """Each training curve with one line per named run; steps where a column is not finite are left out."""
    written = []
    for name, column, ylabel, logy in TRAINING_CURVES:
        series: Series = {}
        for run_name, rows in rows_by_name.items():
            picked = [r for r in rows if math.isfinite(r.get(column, math.nan))]
            if picked:
                steps = torch.tensor([r["step"] for r in picked], dtype=torch.float64)
                series[run_name] = (steps, torch.tensor([r[column] for r in picked], dtype=torch.float64))
        if series:
            positive = all(bool((v > 0).all()) for _, v in series.values())
            written.append(
                plots.plot_curves(
                    folder / name, None, series, ylabel=ylabel, title=f"{ylabel} ({note})",
                    logy=logy and positive, xlabel="training step",
                )
            )
    return written


def training_figures(rows: list[dict], folder: Path, title: str) -> list[Path]:
    """The training curves of one run (loss, gradient norm, max activation, validation accuracy)."""
    return _training_curves({title: rows}, Path(folder), title)


def compare_training_figures(rows_by_run: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Overlays the training curves of several train runs (rows keyed by run directory)."""
    return _training_curves({Path(run).name: rows for run, rows in rows_by_run.items()}, Path(folder), "compare")
