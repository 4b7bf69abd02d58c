"""Running an experiment: every arm of a spec, the preset's after-step, the summary and its finding.

A run integrates one or more arms (``pdesim.app.arms``) chosen by its preset (the default: the
configuration asked for, and the standard one beside it when that switches a stabilizer off),
summarises each (``pdesim.app.summary``) and, when every arm finished, states the preset's
finding from the arm summaries by role. Ctrl-C keeps every arm solved so far; an arm stopped
while its Transformer or its exponents ran keeps its PDE solution, the rest reads "not measured".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import solvers

from .arms import Arm, ArmResult, complete_arm, default_arms, describe, is_standard, solve_arm
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


def planned_arms(spec: RunSpec) -> list[Arm]:
    """The arms a run of ``spec`` integrates; a spec its preset cannot use is a ConfigError."""
    preset = check_preset(spec)
    return preset.arms(spec) if preset.arms else default_arms(spec)


def run_name(spec: RunSpec) -> str:
    """What a run is called (its default directory's prefix): its preset, or the switches of a default run."""
    if spec.preset == "standard" and not is_standard(spec.pde):
        return "".join(c if c.isalnum() else "-" for c in describe(spec.pde)).replace("--", "-").strip("-")
    return spec.preset


def run_description(spec: RunSpec) -> str:
    """One line on what a run integrates: its preset's description, or the switched configuration it asked for."""
    preset = check_preset(spec)
    if spec.preset == "standard" and not is_standard(spec.pde):
        beside = " beside the standard run (pre-LN with residual connections)" if spec.baseline else ""
        return f"{describe(spec.pde)}: the configuration asked for{beside}"
    return preset.description


def run(spec: RunSpec, *, progress: bool = False) -> RunOutcome:
    """Runs every arm of the spec and summarizes; a spec its preset cannot use is a ConfigError first."""
    preset = check_preset(spec)
    arms = planned_arms(spec)
    results: list[ArmResult] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for arm in arms:
            result = solve_arm(arm, spec, progress=progress)
            results.append(result)  # kept from here on, whatever stops the run
            if result.solution.status == solvers.Status.INTERRUPTED:
                interrupted = True
                break
            complete_arm(result, spec)
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
        "description": run_description(spec),
        "interrupted": interrupted,
        "wall_time": time.perf_counter() - start,
        "arms": arm_summaries,
    }
    if preset.finding and not interrupted and len(results) == len(arms):
        summary["findings"] = preset.finding({s["role"]: s for s in arm_summaries.values()})
    return RunOutcome(spec, results, summary, rows, interrupted)
