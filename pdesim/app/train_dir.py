"""``pdesim train`` on disk: a training run directory, written atomically, and its rows read back.

A training run directory mirrors ``pdesim run``'s: config.toml (a [train] table that
``--config`` reads back), metrics.csv (one row per step, the original run's rows first when
resumed), summary.json, checkpoints/ (safetensors; last.safetensors holds the last finite state
whatever stopped the run), figures/, run.log and, with ``tensorboard=True``, tensorboard/ (the
scalars as TensorBoard events). Everything is checked (the output location, memory, the
checkpoint to resume, the network, the figure format and dpi) before the first step, and staged in
a hidden directory that is renamed into place: a refused run leaves nothing behind. Ctrl-C or
SIGTERM during training keeps the run (status ``interrupted``); during writing, the data is written
whole first. The figures (``train_figures``) are written in the format asked (``--figure-format``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from probes import plots

from ..config import ConfigError
from ..stopping import held_interrupts, sigterm_as_interrupt
from ..train import TrainOutcome, TrainSpec, prepare, train
from . import tomlio
from .plot_cmd import checked_figure_options
from .rundir import (
    check_out,
    json_safe,
    read_rows,
    staged_directory,
    write_figures_interruptibly,
    write_rows,
    write_summary,
)
from .train_figures import training_figures

TRAIN_COLUMNS = (
    "step",
    "lr",
    "loss",
    "accuracy",
    "grad_norm",
    "max_activation",
    "layer_grad_norms",
    "val_loss",
    "val_accuracy",
    "attention_entropy",
    "input_cosine",
    "input_cka",
)
# The columns drawn in TensorBoard (each as train/<column>).
TENSORBOARD_COLUMNS = ("lr", "loss", "accuracy", "grad_norm", "max_activation", "attention_entropy", "val_loss",
                       "val_accuracy", "input_cosine", "input_cka")


def tensorboard_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; a one-line ConfigError where tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


class _Progress:
    """Steps done with rate and ETA (tqdm) and the latest loss; silent when quiet or stderr is not a terminal."""

    def __init__(self, spec: TrainSpec, start: int, *, quiet: bool) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=spec.steps,
            initial=start,
            unit="step",
            desc=f"train {spec.task}",
            file=sys.stderr,
            disable=quiet or not sys.stderr.isatty(),
            dynamic_ncols=True,
        )

    def __call__(self, row: dict[str, Any]) -> None:
        self._bar.update(row["step"] - self._bar.n)
        shown = {"loss": f"{row['loss']:.4g}", "grad": f"{row['grad_norm']:.3g}"}
        if "val_accuracy" in row:
            shown["val_acc"] = f"{row['val_accuracy']:.3f}"
        self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self._bar.close()


def run_training(
    spec: TrainSpec,
    out: Path,
    *,
    resume: Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    tensorboard: bool = False,
    figure_format: str = "png",
    dpi: float = plots.DPI,
) -> TrainOutcome:
    """Trains into a staging directory and renames it to ``out`` when done, stopped or interrupted.

    Refusals (``out`` taken, too little memory, an untrusted checkpoint, an impossible task, a figure
    format or dpi that cannot be written) are one-line errors raised before any directory is made.
    The figures are written as ``figures/<stem>.<figure_format>`` at ``dpi``.
    """
    figures = checked_figure_options(figure_format, dpi)
    check_out(out, overwrite=overwrite)
    writer_class = tensorboard_writer_class() if tensorboard else None
    setup = prepare(spec, Path(resume) if resume is not None else None)
    with sigterm_as_interrupt(), staged_directory(out, overwrite=overwrite) as staging:
        (staging / "checkpoints").mkdir()
        progress = _Progress(spec, setup.start, quiet=quiet)
        writer = writer_class(log_dir=str(staging / "tensorboard")) if writer_class else None
        on_step = _both(progress, _scalars_to(writer) if writer else None)
        try:
            outcome = train(spec, checkpoint_dir=staging / "checkpoints", on_step=on_step, setup=setup)
        finally:
            progress.close()
            if writer:
                writer.close()
        _write(outcome, staging, figures)
    return outcome


def _write(outcome: TrainOutcome, staging: Path, figures: dict[str, Any]) -> None:
    """The run's files: the data whole (Ctrl-C waits), then the figures (Ctrl-C keeps those drawn)."""
    spec = outcome.spec
    log = (
        f"pdesim train: task {spec.task}, model {spec.model}, norm {spec.norm}, residual {spec.residual}, "
        f"clip {spec.clip}, diffusion at {', '.join(spec.diffusion_positions) or 'none'}\n"
        + json.dumps(json_safe(outcome.summary))
        + "\n"
    )
    with held_interrupts() as received:
        (staging / "config.toml").write_text(tomlio.dumps({"train": spec.to_table()}))
        write_rows(staging / "metrics.csv", TRAIN_COLUMNS, outcome.rows)
        write_summary(staging / "summary.json", outcome.summary)
        (staging / "run.log").write_text(log)
    if received:
        outcome.summary["interrupted"] = True
        (staging / "figures").mkdir()
        (staging / "run.log").write_text(log + "interrupted while saving: the run is saved without figures\n")
    elif not write_figures_interruptibly(
        lambda folder: training_figures(outcome.rows, folder, spec, outcome.summary, **figures), staging, log
    ):
        outcome.summary["interrupted"] = True


def _both(*callbacks: Callable[[dict[str, Any]], None] | None) -> Callable[[dict[str, Any]], None]:
    chosen = [c for c in callbacks if c is not None]

    def call(row: dict[str, Any]) -> None:
        for callback in chosen:
            callback(row)

    return call


def _scalars_to(writer: Any) -> Callable[[dict[str, Any]], None]:
    def write(row: dict[str, Any]) -> None:
        for column in TENSORBOARD_COLUMNS:
            if column in row:
                writer.add_scalar(f"train/{column}", row[column], row["step"])

    return write


def read_train_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a ``pdesim train`` directory's metrics.csv (nan where a step was not evaluated)."""
    return read_rows(run_dir, [c for c in TRAIN_COLUMNS if c != "layer_grad_norms"])
