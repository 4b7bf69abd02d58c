"""How a run is stopped: SIGTERM is treated exactly like Ctrl-C, and both can be held back.

Every long command (run, train, sweep) wraps its work in ``sigterm_as_interrupt()``: a SIGTERM
(a cluster's scheduler, ``kill``, a closing terminal multiplexer) raises ``KeyboardInterrupt`` in
the main thread, so the one code path that keeps a partial run on Ctrl-C also keeps it here.
``held_interrupts()`` makes both wait while something must happen whole (an optimizer update
and its row, a run directory's data files).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt; the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def held_interrupts() -> Iterator[list[int]]:
    """Within the block, Ctrl-C and SIGTERM wait: the signals received are listed in what it yields."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # handlers can be set in the main thread only
        yield received
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in signals}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
