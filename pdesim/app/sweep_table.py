"""A sweep's results as pandas tables: one row per run (runs.csv), mean ± std over seeds (table.csv, table.md).

``train`` sweeps tabulate validation accuracy; ``run`` sweeps tabulate each finding of every arm
and source (PDE and Transformer): growth rate, cosine to the input, rank residual, the
finite-time Lyapunov exponent where the run's summary has one, and energy monotonicity. Grid
values are written as plain strings (lists joined by '+'), never as JSON inside the CSV.
Nothing here depends on which engine ran the points, so both engines write the same bytes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from .sweep_plan import SweepPlan, SweepPoint, point_label, shown

TRAIN_FINDINGS = {"final_val_accuracy": "final val accuracy", "best_val_accuracy": "best val accuracy"}
RUN_FINDINGS = {
    "growth_rate": "growth rate",
    "final_mean_cosine": "cos(u, u0)",
    "final_residual": "rank residual",
    "energy_monotone_fraction": "E monotone",
}
# Statuses of points that left no run (the rest are counted as runs, explosions included).
NO_RUN = ("failed", "not run", "interrupted")  # an interrupted run is kept on disk but not averaged
INTERRUPTED = 130  # the exit code of a point stopped by Ctrl-C or SIGTERM: not a failure
# A Lyapunov / FTLE entry of a run's arm summary, where the run computed one.
_LYAPUNOV = re.compile(r"ftle|lyapunov", re.IGNORECASE)


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _number(value: Any) -> float:
    """A summary value as a float: nan where absent or not a number ("inf" is how JSON holds infinity)."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _is_measure(value: Any) -> bool:
    """A number (or null, or JSON's "inf"), not a description or a spectrum."""
    if isinstance(value, bool):
        return False
    return value is None or value in ("inf", "-inf") or isinstance(value, (int, float))


def grid_keys(points: list[SweepPoint]) -> list[str]:
    """The swept keys in grid order (an inline table contributes each of its keys)."""
    return list(dict.fromkeys(key for point in points for key in point.values))


def configuration(plan: SweepPlan, values: dict[str, Any]) -> str:
    """A point's configuration (its values but the seed) as a label; 'all' when only seeds were swept."""
    values = {k: v for k, v in values.items() if k != "seed"}
    if plan.kind == "run":
        return " ".join(f"{k}={shown(v)}" for k, v in values.items()) or "all"
    return point_label(values) or "all"


def run_rows(plan: SweepPlan, exit_codes: dict[str, int | None]) -> pd.DataFrame:
    """One row per point (train) or per point, arm and source (run), from the run directories."""
    keys = grid_keys(plan.points)
    rows: list[dict[str, Any]] = []
    for point in plan.points:
        summary = _summary(plan.run_dir(point))
        code = exit_codes.get(point.name)
        missing = "not run" if code is None else "failed"  # the status of a point that left no summary
        head = {
            "point": point.name,
            "configuration": configuration(plan, point.values),
            **{key: shown(point.values[key]) if key in point.values else "-" for key in keys},
            "exit_code": code,
        }
        if plan.kind == "train":
            rows.append(
                {
                    **head,
                    "status": summary.get("status", missing),
                    **{name: _number(summary.get(name)) for name in TRAIN_FINDINGS},
                    "chance_accuracy": _number(summary.get("chance_accuracy")),
                    "first_nonfinite_step": _number(summary.get("first_nonfinite_step")),
                }
            )
            continue
        arms = summary.get("arms") or {"-": {}}
        for label, arm in arms.items():
            for source, measured in (("pde", arm), ("transformer", arm.get("transformer"))):
                if not isinstance(measured, dict) or (source == "transformer" and not measured):
                    continue
                lyapunov = {k: v for k, v in measured.items() if _LYAPUNOV.search(k) and _is_measure(v)}
                rows.append(
                    {
                        **head,
                        "arm": label,
                        "role": arm.get("role", "-"),
                        "source": source,
                        "status": arm.get("status", missing) if summary else missing,
                        **{name: _number(measured.get(name)) for name in RUN_FINDINGS},
                        **{name: _number(value) for name, value in lyapunov.items()},
                    }
                )
    frame = pd.DataFrame(rows)
    frame["exit_code"] = frame["exit_code"].astype("Int64")  # empty where a point never ran
    return frame


def findings(plan: SweepPlan, runs: pd.DataFrame) -> dict[str, str]:
    """The numeric columns to average, with their table headings (FTLE columns only where present)."""
    if plan.kind == "train":
        return dict(TRAIN_FINDINGS)
    named = dict(RUN_FINDINGS)
    for column in runs.columns:
        if _LYAPUNOV.search(column) and runs[column].notna().any():
            named[column] = "largest FTLE" if column == "lyapunov" else column.replace("_", " ")
    return named


def group_columns(plan: SweepPlan) -> list[str]:
    return ["configuration"] + (["arm", "source"] if plan.kind == "run" else [])


def aggregate(plan: SweepPlan, runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (over seeds) and count of each finding per configuration (and arm and source)."""
    names = list(findings(plan, runs))
    groups = runs.groupby(group_columns(plan), sort=False, dropna=False)
    finished = runs.assign(**{name: runs[name].where(~runs["status"].isin(NO_RUN)) for name in names})
    stats = finished.groupby(group_columns(plan), sort=False, dropna=False)[names].agg(["mean", "std"])
    stats.columns = [f"{name}_{stat}" for name, stat in stats.columns]
    counts = groups.agg(
        runs=("status", lambda status: int((~status.isin(NO_RUN)).sum())),
        failed=("exit_code", lambda codes: int((~codes.fillna(0).isin((0, INTERRUPTED))).sum())),
    )
    return counts.join(stats).reset_index()


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "nan"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def markdown(plan: SweepPlan, runs: pd.DataFrame, table: pd.DataFrame) -> str:
    """table.md: the aggregated table with 'mean ± std' cells (the mean alone where one seed ran)."""
    named = findings(plan, runs)
    head = [*group_columns(plan), "runs", "failed", *(f"{title} (mean ± std)" for title in named.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.itertuples(index=False):
        record = row._asdict()
        cells = [str(record[c]) for c in group_columns(plan)] + [str(record["runs"]), str(record["failed"])]
        cells += [_cell(record[f"{name}_mean"], record[f"{name}_std"]) for name in named]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(plan: SweepPlan, exit_codes: dict[str, int | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs.csv, table.csv and table.md in the sweep directory; returns (runs, table)."""
    runs = run_rows(plan, exit_codes)
    table = aggregate(plan, runs)
    runs.to_csv(plan.out / "runs.csv", index=False)
    table.to_csv(plan.out / "table.csv", index=False)
    (plan.out / "table.md").write_text(markdown(plan, runs, table))
    return runs, table
