"""Timing for the benchmarks: paired rounds of ``torch.utils.benchmark.Timer``, ratios as median and range.

Every round times each candidate once (``Timer.blocked_autorange``: warmed up, synchronized on
CUDA, the median over enough repetitions to fill ``min_run_time``), one after the other, so that
machine noise in a round hits all of them alike; a ratio is formed within each round and
reported as the median and the range over the rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer


def time_once(fn: Callable[[], object], *, min_run_time: float = 0.2, threads: int | None = None) -> float:
    """Seconds per call of fn(): the median of one ``Timer.blocked_autorange``."""
    timer = Timer("fn()", globals={"fn": fn}, num_threads=threads or torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def paired_rounds(
    fns: dict[str, Callable[[], object]], *, rounds: int = 5, min_run_time: float = 0.2, threads: int | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each fn in each round (the fns alternate within a round; one warm-up call each)."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, min_run_time=min_run_time, threads=threads))
    return samples


def ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float]:
    """(median, min, max) over rounds of numerator[i] / denominator[i]."""
    values = [a / b for a, b in zip(numerator, denominator)]
    return statistics.median(values), min(values), max(values)


def format_ratio(numerator: list[float], denominator: list[float]) -> str:
    median, low, high = ratio(numerator, denominator)
    return f"{median:.3g} [{low:.3g}–{high:.3g}]"


def median_time(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 2, device: str = "cpu") -> float:
    """Median seconds per call of fn() over ``repeats`` rounds (``device`` is synchronized by Timer)."""
    return statistics.median(paired_rounds({"fn": fn}, rounds=repeats)["fn"])


def interleaved_times(
    fns: dict[str, Callable[[], object]], *, rounds: int = 7, device: str = "cpu"
) -> dict[str, float]:
    """Median seconds per call of each fn over paired rounds."""
    return {name: statistics.median(s) for name, s in paired_rounds(fns, rounds=rounds).items()}
