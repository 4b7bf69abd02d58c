"""The run directory (DESIGN §8), written atomically, and read back for ``pdesim compare``.

    RUN/config.toml    the resolved RunSpec; ``pdesim run --config RUN/config.toml`` reproduces it
    RUN/metrics.csv    one row per arm, source (pde | transformer) and saved time
    RUN/summary.json   statuses, growth rates, finals, findings
    RUN/states.npz     saved states per arm and source (NumPy, no pickle)
    RUN/figures/*.png  curves over time with the PDE and the Transformer overlaid
    RUN/run.log        what the run printed

Everything is written into a hidden sibling directory first and renamed into place at the
end, so a crash or Ctrl-C never leaves a half-written run under the final name.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import tomlio
from .measure import METRIC_COLUMNS
from .runner import RunOutcome

CSV_COLUMNS = ("arm", "source", "t", *METRIC_COLUMNS)


class RunDirError(ValueError):
    """A run directory that cannot be written or read; one line."""


def json_safe(value: Any) -> Any:
    """The value with non-finite floats as JSON can hold them (nan -> null, ±inf -> "inf"/"-inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _array_key(label: str, source: str) -> str:
    clean = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    return f"{clean}__{source}"


# What pdesim writes into a run directory (run, train, pretrained run); nothing else may be in one it replaces.
RUN_DIR_ENTRIES = frozenset(
    {"config.toml", "metrics.csv", "summary.json", "states.npz", "figures", "run.log", "checkpoints", "tensorboard"}
)
# The mark that says a directory was written by pdesim: this key in its summary.json.
MARK = "pdesim"


def written_by_pdesim(path: Path) -> bool:
    """Whether ``path`` is a directory pdesim wrote: its summary.json carries pdesim's mark."""
    try:
        summary = json.loads((Path(path) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and MARK in summary


def check_out(out: Path, *, overwrite: bool = False) -> Path:
    """Checks, before any computation, that a run may be written to ``out``; returns it as a Path.

    ``out`` may be new, an empty directory, or (only with ``overwrite``) a run directory that pdesim
    wrote itself and that holds nothing pdesim did not write. Its parent must be a writable directory.
    """
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise RunDirError(f"--out {out} exists and is not a directory; choose another --out")
        entries = {entry.name for entry in out.iterdir()}
        if entries:
            if not written_by_pdesim(out):
                raise RunDirError(f"--out {out} exists and is not a pdesim run directory; choose another --out")
            foreign = sorted(entries - RUN_DIR_ENTRIES)
            if foreign:
                raise RunDirError(
                    f"--out {out} holds files pdesim did not write ({', '.join(foreign[:3])}); choose another --out"
                )
            if not overwrite:
                raise RunDirError(f"--out {out} holds an earlier pdesim run; pass --overwrite to replace it")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunDirError(f"--out {out}: cannot write into {parent}")
    return out


@contextmanager
def staged_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a hidden sibling of ``out`` to write into; renames it to ``out`` only if the block succeeds.

    ``out`` is checked by ``check_out`` on entry and again before it is replaced.
    """
    out = check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        check_out(out, overwrite=overwrite)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_rows(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """A CSV with floats written by repr, so they read back bit for bit."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """summary.json, with pdesim's mark first (``written_by_pdesim`` reads it)."""
    from .. import __version__

    marked = {MARK: {"version": __version__}, **{k: v for k, v in summary.items() if k != MARK}}
    path.write_text(json.dumps(json_safe(marked), indent=2) + "\n")


def write_run(
    outcome: RunOutcome, out: Path, *, log_text: str, figures: Callable[[RunOutcome, Path], list[Path]]
) -> Path:
    """Writes the whole run directory atomically; returns its path."""
    with staged_directory(out) as staging:
        (staging / "config.toml").write_text(tomlio.dumps(outcome.spec.to_tables()))
        write_rows(staging / "metrics.csv", CSV_COLUMNS, outcome.rows)
        write_summary(staging / "summary.json", outcome.summary)
        arrays: dict[str, np.ndarray] = {}
        for result in outcome.results:
            arrays[_array_key(result.arm.label, "pde_t")] = result.solution.t.numpy()
            arrays[_array_key(result.arm.label, "pde_u")] = result.solution.u.detach().cpu().float().numpy()
            if result.layer_states is not None:
                arrays[_array_key(result.arm.label, "transformer_t")] = result.layer_times.numpy()
                arrays[_array_key(result.arm.label, "transformer_u")] = result.layer_states.cpu().float().numpy()
        np.savez_compressed(staging / "states.npz", **arrays)
        (staging / "figures").mkdir()
        figures(outcome, staging / "figures")
        (staging / "run.log").write_text(log_text)
    return Path(out)


def read_rows(run_dir: Path, numeric: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of RUN/metrics.csv with the ``numeric`` columns parsed (an empty cell is nan)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no metrics.csv)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in numeric:
            row[key] = float(row[key]) if row.get(key) not in (None, "") else math.nan
    return rows


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a ``pdesim run`` directory's metrics.csv."""
    return read_rows(run_dir, ("t", *METRIC_COLUMNS))


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no summary.json)")
    return json.loads(path.read_text())
