"""Observers of a run: they see each saved state and never touch the integrator.

Any callable ``cb(t, u)`` works; subclass ``Callback`` to also hear when a run starts and ends.
"""

from __future__ import annotations

import sys
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
    """A tqdm progress bar over the integration time, with its rate (time units per second) and ETA.

    Updated at saved times on ``stream`` (stderr by default); silent when the stream is not a
    terminal (a log file, a pipe, a batch job) unless ``force``. At the end it writes the run's
    status and, for a compiled run, its compile time (``solve(..., compile=True)``).
    """

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.1, force: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        is_terminal = getattr(self.stream, "isatty", lambda: False)()
        self.enabled = force or bool(is_terminal)
        self._bar: Any = None
        self._t0 = self._done = 0.0

    def on_start(self, t0: float, t1: float, u0: torch.Tensor) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._t0, self._done = float(t0), 0.0
        self._bar = tqdm(
            total=abs(float(t1) - float(t0)), file=self.stream, mininterval=self.min_interval, unit="t",
            bar_format="{l_bar}{bar}| t={n:.4g}/{total:.4g} [{elapsed}<{remaining}, {rate_fmt}{postfix}]", leave=True,
        )

    def on_save(self, t: float, u: torch.Tensor) -> None:
        if self._bar is None:
            return
        done = min(abs(float(t) - self._t0), self._bar.total)
        if done > self._done:
            self._bar.update(done - self._done)
            self._done = done

    def on_finish(self, solution: Any) -> None:
        if self._bar is None:
            return
        compile_time = solution.stats.get("compile_time")
        compiled = f", compiled in {compile_time:.1f}s" if compile_time is not None else ""
        self._bar.set_postfix_str(f"{solution.status!s}{compiled}")
        self._bar.close()
        self._bar = None
