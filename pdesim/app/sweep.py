"""``pdesim sweep``: train a grid of configurations, each in its own process, and tabulate them.

A sweep file is TOML with a [base] table (a [train] table), a [grid] table mapping keys to the
lists of values to cross, and an optional [sweep] table (workers, out). Every combination is
trained in its own local process (``python -m pdesim train``); the summaries are collected into
runs.csv, table.csv / table.md with mean ± std over seeds, and a bar chart of validation accuracy.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..train import TrainSpec
from . import tomlio


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order.

    A value that is a table (an inline ``{key = value, ...}``) sets several keys at once, so
    ``configs = [{diffusion_positions = []}, {diffusion_positions = ["after_embedding"],
    diffusion_scales = [1, 2, 4]}]`` crosses whole configurations with the other keys.
    """
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid key {key!r} must map to a non-empty list of values")
    keys = list(grid)
    points = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point: dict[str, Any] = {}
        for key, value in zip(keys, combo):
            point.update(value if isinstance(value, dict) else {key: value})
        points.append(point)
    return points


def _shown(value: Any) -> str:
    return ("+".join(map(str, value)) if isinstance(value, list) else str(value)) or "none"


def point_name(point: dict[str, Any]) -> str:
    """A file-name-safe name for a grid point: key=value,key=value."""
    return ",".join(f"{key}={_shown(value)}" for key, value in point.items()).replace("/", "_")


def point_label(point: dict[str, Any]) -> str:
    """A short label for tables and charts: the values only (scales marked as such)."""
    return " ".join(f"scales {_shown(v)}" if k == "diffusion_scales" else _shown(v) for k, v in point.items())


def run_sweep(
    path: Path,
    *,
    out: Path | None = None,
    workers: int | None = None,
    runner: Callable[[Path, Path], int] | None = None,
) -> Path:
    """Trains every grid point (local processes) and writes the collected table; returns the sweep dir."""
    tables = tomlio.load(str(path))
    unknown = sorted(set(tables) - {"base", "grid", "sweep"})
    if unknown:
        raise ConfigError(f"unknown table [{unknown[0]}] in the sweep file; expected [base], [grid], [sweep]")
    base, grid, settings = tables.get("base", {}), tables.get("grid", {}), tables.get("sweep", {})
    points = grid_points(grid)
    for point in points:  # validate every configuration before anything runs
        TrainSpec.from_table({**base, **point})
    out = Path(out or settings.get("out") or f"sweeps/{Path(path).stem}")
    workers = int(workers or settings.get("workers", 2))
    (out / "runs").mkdir(parents=True, exist_ok=True)
    jobs = []
    for point in points:
        run_dir = out / "runs" / point_name(point)
        config = out / "runs" / f"{point_name(point)}.toml"
        config.write_text(tomlio.dumps({"train": TrainSpec.from_table({**base, **point}).to_table()}))
        jobs.append((point, config, run_dir))
    runner = runner or _subprocess_runner
    with ThreadPoolExecutor(max_workers=workers) as pool:
        codes = list(pool.map(lambda job: runner(job[1], job[2]), jobs))
    results = collect_results([(point, run_dir) for point, _, run_dir in jobs], codes)
    write_sweep_table(out, grid, results)
    return out


def collect_results(runs: list[tuple[dict[str, Any], Path]], codes: list[int] | None = None) -> list[dict[str, Any]]:
    """Each grid point with its run's summary (empty where the run left none)."""
    results = []
    for index, (point, run_dir) in enumerate(runs):
        path = Path(run_dir) / "summary.json"
        summary = json.loads(path.read_text()) if path.exists() else {}
        results.append({"point": point, "exit_code": None if codes is None else codes[index], **summary})
    return results


def _subprocess_runner(config: Path, run_dir: Path) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, "-m", "pdesim", "train", "--config", str(config), "--out", str(run_dir), "--quiet"]
    return subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode


def _mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def write_sweep_table(out: Path, grid: dict[str, list[Any]], results: list[dict[str, Any]]) -> None:
    """table.csv (one row per run), table.md (mean ± std over seeds per configuration), accuracy.png."""
    from probes import plots

    keys = list(dict.fromkeys(k for r in results for k in r["point"]))
    with open(out / "runs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [*keys, "status", "final_val_accuracy", "best_val_accuracy", "first_nonfinite_step", "wall_time"]
        )
        for r in results:
            writer.writerow(
                [json.dumps(r["point"].get(k)) for k in keys]
                + [
                    r.get("status"),
                    r.get("final_val_accuracy"),
                    r.get("best_val_accuracy"),
                    r.get("first_nonfinite_step"),
                    r.get("wall_time"),
                ]
            )
    group_keys = [k for k in keys if k != "seed"]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        label = point_label({k: r["point"][k] for k in group_keys if k in r["point"]}) or "all"
        groups.setdefault(label, []).append(r)
    lines = [
        "| configuration | runs | final val accuracy (mean ± std) | best val accuracy (mean ± std) |",
        "|---|---|---|---|",
    ]
    labels, means, stds = [], [], []
    for label, members in groups.items():
        final = _mean_std([m.get("final_val_accuracy", math.nan) for m in members])
        best = _mean_std([m.get("best_val_accuracy", math.nan) for m in members])
        lines.append(f"| {label} | {len(members)} | {final[0]:.4f} ± {final[1]:.4f} | {best[0]:.4f} ± {best[1]:.4f} |")
        labels.append(label)
        means.append(final[0])
        stds.append(final[1])
    (out / "table.md").write_text("\n".join(lines) + "\n")
    with open(out / "table.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["configuration", "runs", "final_val_accuracy_mean", "final_val_accuracy_std"])
        for label, mean, std in zip(labels, means, stds):
            writer.writerow([label, len(groups[label]), mean, std])
    plots.plot_bars(
        out / "accuracy.png",
        labels,
        means,
        stds,
        ylabel="validation accuracy",
        title=f"{out.name}: mean ± std over seeds",
    )
