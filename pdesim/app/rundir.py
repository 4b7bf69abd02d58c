"""The run directory (DESIGN §8), written atomically, and read back for ``pdesim compare``.

    RUN/config.toml    the resolved RunSpec; ``pdesim run --config RUN/config.toml`` reproduces it
    RUN/metrics.csv    one row per arm, source (pde | transformer) and saved time
    RUN/summary.json   statuses, growth rates, finals, findings
    RUN/states.npz     saved states per arm and source (NumPy, no pickle)
    RUN/figures/*.png  curves over time with the PDE and the Transformer overlaid
    RUN/run.log        what the run printed

Everything is written into a hidden sibling directory first and renamed into place at the
end, so a crash or Ctrl-C never leaves a half-written run under the final name. The data files
are written first with Ctrl-C and SIGTERM held back until they are complete; a stop while the
figures are drawn keeps the run with the figures drawn so far. A staging directory is named
``.<out>.pdesim-staging-<pid>-<random>``: one left behind by a process that no longer exists
(SIGKILL) is removed by the next run written beside it. Directories get the user's umask.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..stopping import held_interrupts
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
    cwd = Path.cwd().resolve()
    if out.resolve() == cwd or out.resolve() in cwd.parents:
        raise RunDirError(f"--out {out} is the working directory or holds it; name a new directory for the run")
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
    unwritable = unwritable_parent(out)
    if unwritable is not None:
        raise RunDirError(f"--out {out}: cannot write into {unwritable}")
    return out


def unwritable_parent(out: Path) -> Path | None:
    """The nearest existing ancestor of ``out`` when it is not a writable directory, else None."""
    parent = Path(out).absolute().parent
    while not parent.exists():
        parent = parent.parent
    return None if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK) else parent


# A staging directory's name: ``.<out name>.pdesim-staging-<pid>-<random>``; nothing else matches it.
STAGING_INFIX = ".pdesim-staging-"
_STAGING_NAME = re.compile(r"^\..*\.pdesim-staging-(\d+)-[A-Za-z0-9_]+$")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or an absurd number): leave it alone
        return True
    return True


def remove_stale_staging(parent: Path) -> list[Path]:
    """Removes the staging directories in ``parent`` left by pdesim processes that no longer exist."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING_NAME.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink() and not _process_exists(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_staging(out: Path) -> Path:
    """A new hidden staging directory beside ``out`` (created with the user's umask, not 0700)."""
    remove_stale_staging(out.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}{STAGING_INFIX}{os.getpid()}-", dir=out.parent))
    os.chmod(staging, 0o777 & ~_umask())
    return staging


@contextmanager
def staged_directory(out: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields a hidden sibling of ``out`` to write into; renames it to ``out`` only if the block succeeds.

    ``out`` is checked by ``check_out`` on entry and again before it is replaced.
    """
    out = check_out(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = make_staging(out)
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


@dataclass
class Written:
    """Where a run directory was written, and whether every figure was drawn (False: stopped while drawing)."""

    path: Path
    figures_complete: bool = True


def write_figures_interruptibly(draw: Callable[[Path], Any], staging: Path, log_text: str) -> bool:
    """Draws the figures into ``staging/figures``; a stop while drawing keeps those drawn (returns False)."""
    (staging / "figures").mkdir()
    try:
        draw(staging / "figures")
    except KeyboardInterrupt:
        note = "interrupted while drawing the figures: the run is saved with the figures drawn so far\n"
        (staging / "run.log").write_text(log_text + note)
        return False
    return True


def write_run(
    outcome: RunOutcome,
    out: Path,
    *,
    log_text: str,
    figures: Callable[[RunOutcome, Path], list[Path]],
    overwrite: bool = False,
) -> Written:
    """Writes the whole run directory atomically: the data first (not interruptible), then the figures."""
    with staged_directory(out, overwrite=overwrite) as staging:
        with held_interrupts() as received:
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
            (staging / "run.log").write_text(log_text)
        if received:  # stopped while the data was written: keep it, skip the figures
            (staging / "run.log").write_text(log_text + "interrupted while saving: the run is saved without figures\n")
            complete = False
        else:
            complete = write_figures_interruptibly(lambda folder: figures(outcome, folder), staging, log_text)
    return Written(Path(out), complete)


def read_rows(run_dir: Path, numeric: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of RUN/metrics.csv with the ``numeric`` columns parsed (an empty cell is nan).

    A missing, unreadable or damaged file (no header, a missing column, a cell that is not a
    number) is a one-line RunDirError naming it.
    """
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no metrics.csv)")
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise RunDirError(f"{path} cannot be read: {type(err).__name__}") from None
    if not header:
        raise RunDirError(f"{path} is empty or damaged (no header row)")
    missing = [key for key in numeric if key not in header]
    if missing:
        raise RunDirError(f"{path} is damaged: it has no {missing[0]!r} column")
    for number, row in enumerate(rows, start=2):
        if None in row or any(value is None for value in row.values()):
            raise RunDirError(f"{path} is damaged: line {number} has {'more' if None in row else 'fewer'} cells "
                              "than the header")
        for key in numeric:
            try:
                row[key] = float(row[key]) if row[key] != "" else math.nan
            except ValueError:
                value = row[key][:40]
                raise RunDirError(f"{path} is damaged: line {number} has {key}={value!r}, not a number") from None
    return rows


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a ``pdesim run`` directory's metrics.csv."""
    return read_rows(run_dir, ("t", *METRIC_COLUMNS))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """RUN/summary.json as a dict; a missing, unreadable or damaged file is a one-line RunDirError."""
    path = Path(run_dir) / "summary.json"
    if not Path(run_dir).is_dir():
        raise RunDirError(f"{run_dir} is not a directory")
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a pdesim run directory (no summary.json)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path} cannot be read: {err.__class__.__name__}") from None
    except ValueError as err:
        raise RunDirError(f"{path} is damaged (not JSON: {str(err).splitlines()[0]})") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path} is damaged (not a JSON object)")
    return summary
