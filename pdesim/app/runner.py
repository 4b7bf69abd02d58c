"""Running an experiment: every arm of a spec, the preset's after-step, the summary and its finding.

A run integrates one or more arms (``pdesim.app.arms``) chosen by its preset (the default: the
configuration asked for, and the standard one beside it when that switches a stabilizer off),
summarises each (``pdesim.app.summary``) and, when every arm finished, states the preset's
finding from the arm summaries by role. Ctrl-C keeps the arms finished so far.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import solvers

from .arms import ArmResult, default_arms, run_arm
from .presets import check_preset
from .spec import RunSpec
from .summary import summarize_arm


@dataclass
class RunOutcome:
    spec: RunSpec
    results: list[ArmResult]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    interrupted: bool = False


def run(spec: RunSpec, *, progress: bool = False) -> RunOutcome:
    """Runs every arm of the spec and summarizes; a spec its preset cannot use is a ConfigError first."""
    preset = check_preset(spec)
    arms = preset.arms(spec) if preset.arms else default_arms(spec)
    results: list[ArmResult] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for arm in arms:
            result = run_arm(arm, spec, progress=progress)
            results.append(result)
            if result.solution.status == solvers.Status.INTERRUPTED:
                interrupted = True
                break
        if preset.after and not interrupted and results:
            preset.after(spec, results)
    except KeyboardInterrupt:
        interrupted = True
    arm_summaries, rows = {}, []
    for result in results:
        arm_summary, arm_rows = summarize_arm(result, spec)
        arm_summaries[result.arm.label] = arm_summary
        rows.extend(arm_rows)
    summary: dict[str, Any] = {
        "preset": spec.preset,
        "description": preset.description,
        "interrupted": interrupted,
        "wall_time": time.perf_counter() - start,
        "arms": arm_summaries,
    }
    if preset.finding and not interrupted and len(results) == len(arms):
        summary["findings"] = preset.finding({s["role"]: s for s in arm_summaries.values()})
    return RunOutcome(spec, results, summary, rows, interrupted)
