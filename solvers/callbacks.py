"""Observers of a run: they see each saved state and never touch the integrator.

Any callable ``cb(t, u)`` works; subclass ``Callback`` to also hear when a run starts and ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import torch


class Callback:
    """Base observer. ``on_save`` is called at every saved time, in order, with the saved state."""

    def on_start(self, t0: float, t1: float, u0: torch.Tensor) -> None:
        pass

    def on_save(self, t: float, u: torch.Tensor) -> None:
        pass

    def on_finish(self, solution: Any) -> None:
        pass


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[float, torch.Tensor], Any]):
        self.fn = fn

    def on_save(self, t: float, u: torch.Tensor) -> None:
        self.fn(t, u)


def as_callbacks(callbacks: Iterable[Callable | Callback] | Callback | None) -> list[Callback]:
    """Normalize ``callbacks=`` (a callback, a callable, or an iterable of either) to a list."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    return [cb if isinstance(cb, Callback) else _FunctionCallback(cb) for cb in callbacks]


class Recorder(Callback):
    """Keeps ``metric(t, u)`` for every saved state: ``recorder.times``, ``recorder.values``."""

    def __init__(self, metric: Callable[[float, torch.Tensor], Any]):
        self.metric = metric
        self.times: list[float] = []
        self.values: list[Any] = []

    def on_save(self, t: float, u: torch.Tensor) -> None:
        with torch.no_grad():
            self.times.append(float(t))
            self.values.append(self.metric(t, u))


class Progress(Callback):
    """A one-line text progress bar on a stream (stderr by default), updated at saved times."""

    def __init__(self, stream: TextIO | None = None, width: int = 30, min_interval: float = 0.1):
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.min_interval = min_interval
        self._t0 = self._t1 = 0.0
        self._start = self._last = 0.0

    def on_start(self, t0: float, t1: float, u0: torch.Tensor) -> None:
        self._t0, self._t1 = float(t0), float(t1)
        self._start = self._last = time.perf_counter()

    def on_save(self, t: float, u: torch.Tensor) -> None:
        now = time.perf_counter()
        span = self._t1 - self._t0
        frac = 1.0 if span == 0 else min(max((float(t) - self._t0) / span, 0.0), 1.0)
        if now - self._last < self.min_interval and frac < 1.0:
            return
        self._last = now
        filled = int(round(frac * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] t={float(t):.4g}/{self._t1:.4g} {now - self._start:6.1f}s")
        self.stream.flush()

    def on_finish(self, solution: Any) -> None:
        self.stream.write(f"  {solution.status!s}\n")
        self.stream.flush()
