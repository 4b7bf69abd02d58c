"""``pdesim train`` on disk: a training run directory, written atomically, and its rows read back.

A training run directory mirrors ``pdesim run``'s: config.toml (a [train] table that
``--config`` reads back), metrics.csv (one row per step), summary.json, checkpoints/
(safetensors), figures/ and run.log, staged in a hidden directory and renamed into place.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..train import TrainOutcome, TrainSpec, train
from . import tomlio
from .rundir import RunDirError, json_safe, read_rows, staged_directory, write_rows, write_summary
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


def run_training(spec: TrainSpec, out: Path, *, resume: Path | None = None, quiet: bool = False) -> TrainOutcome:
    """Trains into a staging directory and renames it to ``out`` when done (or interrupted)."""
    if resume is not None and not Path(resume).exists():
        raise RunDirError(f"checkpoint {resume} does not exist")
    with staged_directory(out) as staging:
        (staging / "checkpoints").mkdir()

        def progress(row: dict[str, Any]) -> None:
            if not quiet and ("val_accuracy" in row or row["step"] % 25 == 0):
                extra = f" val_acc={row['val_accuracy']:.3f}" if "val_accuracy" in row else ""
                print(
                    f"\rstep {row['step']:5d}/{spec.steps} loss={row['loss']:.4g} grad={row['grad_norm']:.3g}{extra}",
                    file=sys.stderr,
                    end="\n" if extra else "",
                )

        outcome = train(spec, checkpoint_dir=staging / "checkpoints", resume=resume, on_step=progress)
        (staging / "config.toml").write_text(tomlio.dumps({"train": spec.to_table()}))
        write_rows(staging / "metrics.csv", TRAIN_COLUMNS, outcome.rows)
        write_summary(staging / "summary.json", outcome.summary)
        (staging / "figures").mkdir()
        if outcome.rows:
            training_figures(outcome.rows, staging / "figures", spec.task)
        log = (
            f"pdesim train: task {spec.task}, model {spec.model}, norm {spec.norm}, residual {spec.residual}, "
            f"diffusion at {spec.diffusion_positions or 'none'}\n" + json.dumps(json_safe(outcome.summary)) + "\n"
        )
        (staging / "run.log").write_text(log)
    return outcome


def read_train_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a ``pdesim train`` directory's metrics.csv (nan where a step was not evaluated)."""
    return read_rows(run_dir, [c for c in TRAIN_COLUMNS if c != "layer_grad_norms"])
