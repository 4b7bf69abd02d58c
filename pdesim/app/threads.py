"""How many CPU threads pdesim's torch uses: ``--threads N``, else OMP_NUM_THREADS, else the CPUs
this process may run on.

torch's own default is the machine's core count, which oversubscribes a CPU set shared with
another job (or limited by taskset/cgroups): each op then waits for threads that cannot run.
The default here is the CPUs available to this process (``os.sched_getaffinity``), or
OMP_NUM_THREADS when it is set to a positive integer. ``--threads N`` overrides both and is also
exported as OMP_NUM_THREADS, so worker processes that pdesim starts (``pdesim sweep``) inherit it.
"""

from __future__ import annotations

import argparse
import os

import torch

from ..config import ConfigError


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), or the machine's count where unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """OMP_NUM_THREADS when it is a positive integer, else ``available_cpus()``."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    return available_cpus()


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: OMP_NUM_THREADS, else the CPUs available)"
    )


def configure_threads(threads: int | None) -> int:
    """Sets torch's intra-op thread count (``threads``, or the default) and returns it.

    An explicit count is exported as OMP_NUM_THREADS for child processes; a count below 1 (or
    not an integer) is a ConfigError.
    """
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"--threads={threads!r} must be a positive integer")
        os.environ["OMP_NUM_THREADS"] = str(threads)
    count = default_threads() if threads is None else threads
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
