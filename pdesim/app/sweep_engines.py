"""Where a sweep's points run: local processes (``local``) or one Ray task per point (``ray``).

Both engines call the same ``run_point``: it runs ``python -m pdesim train|run --config POINT.toml
--out RUN_DIR --quiet`` in a fresh process with the same thread count, so a point computes the
same numbers bit for bit whichever engine ran it. Ray is optional (``pip install 'pdesim[ray]'``):
it is imported only when ``--engine ray`` asks for it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ..config import ConfigError
from ..stopping import sigterm_as_interrupt
from .sweep_plan import SweepPlan, SweepPoint

ENGINES = ("local", "ray")
# Exit codes not worth another attempt: bad input (2) and an interrupted point (130).
NOT_RETRIED = (0, 2, 130)
STOP_GRACE_S = 15.0  # how long a stopped Ray sweep waits for its points to save their partial runs


@dataclass(frozen=True)
class PointOutcome:
    """How a point's process ended: its exit code, its stderr, and how many attempts it took."""

    exit_code: int
    stderr: str
    attempts: int


# The local engine's live child processes, so that an interrupt reaches each of them.
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


def run_point(command: str, config: str, run_dir: str, *, threads: int = 1, retries: int = 0) -> PointOutcome:
    """Runs one point in its own process (again after a failure, ``retries`` times); never raises on failure.

    An interrupt (Ctrl-C, SIGTERM, Ray's cancel) is passed on to the process as SIGTERM, which
    pdesim treats as Ctrl-C (it saves its partial run), and is then raised again.
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    argv = [sys.executable, "-m", "pdesim", command, "--config", config, "--out", run_dir, "--quiet"]
    attempts, code, stderr = 0, 1, ""
    while attempts <= retries:
        attempts += 1
        # stderr goes to a file and the wait polls: Ray's cancel raises KeyboardInterrupt only between
        # Python bytecodes, never inside a blocking read of a pipe
        with tempfile.TemporaryFile("w+") as errors:
            # its own session: a Ctrl-C at the terminal reaches the sweep only, which passes on exactly one stop
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
            with _LIVE_LOCK:
                _LIVE.add(process)
            try:
                code = _wait(process)
            except KeyboardInterrupt:
                process.send_signal(signal.SIGTERM)
                process.wait()
                raise
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(process)
            errors.seek(0)
            stderr = errors.read()
        if code in NOT_RETRIED or Path(run_dir).exists():
            break
    return PointOutcome(code, stderr, attempts)


def _wait(process: subprocess.Popen) -> int:
    while True:
        try:
            return process.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            continue


def _threads(plan: SweepPlan) -> int:
    return max(1, int(plan.cpus_per_point))


OnDone = Callable[[SweepPoint, PointOutcome], None]
OnStart = Callable[[SweepPoint], None]


def run_local(plan: SweepPlan, todo: list[SweepPoint], on_start: OnStart, on_done: OnDone) -> None:
    """``plan.workers`` points at a time, each in a local process; each point reports itself when it ends."""

    def job(point: SweepPoint) -> None:
        on_start(point)
        outcome = run_point(
            plan.kind,
            str(plan.config_path(point).absolute()),
            str(plan.run_dir(point).absolute()),
            threads=_threads(plan),
            retries=plan.retries,
        )
        on_done(point, outcome)

    pool = ThreadPoolExecutor(max_workers=plan.workers)
    futures = [pool.submit(job, point) for point in todo]
    try:
        for future in as_completed(futures):
            future.result()
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        with _LIVE_LOCK:
            live = list(_LIVE)
        for process in live:  # pdesim treats SIGTERM as Ctrl-C: each saves its partial run and exits with 130
            process.send_signal(signal.SIGTERM)
        # the interrupted points report their outcomes as their processes exit (a cancelled future
        # never counts as done for wait(): leave those out)
        wait([future for future in futures if not future.cancelled()])
        raise
    pool.shutdown()


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray, which is not installed here: pip install 'pdesim[ray]'") from None
    return ray


def run_ray(
    plan: SweepPlan,
    todo: list[SweepPoint],
    on_start: OnStart,
    on_done: OnDone,
    *,
    address: str | None = None,
    prepare: Callable[[], None] = lambda: None,
) -> None:
    """One Ray task per point, with the plan's CPUs and GPU fraction per task; Ray retries lost workers.

    With ``address`` it joins that cluster (whose nodes must share the sweep directory and have
    pdesim installed); without, it uses the Ray runtime already started in this process, or starts
    a local one sized for ``plan.workers`` points at a time. Ray schedules the tasks, so a point
    counts as running from its submission. ``prepare`` writes the points' configs once Ray is
    reached, so that a cluster out of reach leaves nothing on disk.
    """
    ray = _import_ray()
    started = False
    try:
        if not ray.is_initialized():
            options: dict = {"log_to_driver": False, "logging_level": "ERROR", "include_dashboard": False}
            if address:
                options["address"] = address
            else:
                options["num_cpus"] = math.ceil(plan.workers * plan.cpus_per_point)
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"at {address}" if address else "here"
                raise ConfigError(f"cannot start or reach a Ray cluster {where}: {str(err).splitlines()[0]}") from None
            started = True
        prepare()
        with sigterm_as_interrupt():  # again: ray.init installs its own SIGTERM handler, which aborts
            _collect(ray, plan, _submit(ray, plan, todo, on_start), on_done)
    finally:
        if started:
            ray.shutdown()


def _saving(plan: SweepPlan, point: SweepPoint, since: float) -> bool:
    """Whether the point's process is still writing its run (a staging directory of this sweep's making)."""
    run_dir = plan.run_dir(point)
    return any(p.stat().st_mtime >= since - 1 for p in run_dir.parent.glob(f".{run_dir.name}.*") if p.exists())


def _submit(ray: ModuleType, plan: SweepPlan, todo: list[SweepPoint], on_start: OnStart) -> dict:
    """One task per point, with the plan's resources; returns {task reference: point}."""
    task = ray.remote(run_point).options(
        num_cpus=plan.cpus_per_point, num_gpus=plan.gpus_per_point, max_retries=plan.retries
    )
    refs = {}
    for point in todo:
        ref = task.remote(
            plan.kind,
            str(plan.config_path(point).absolute()),
            str(plan.run_dir(point).absolute()),
            threads=_threads(plan),
            retries=plan.retries,
        )
        refs[ref] = point
        on_start(point)
    return refs


def _collect(ray: ModuleType, plan: SweepPlan, refs: dict, on_done: OnDone) -> None:
    """Reports each point as its task ends; on an interrupt, cancels the rest and lets them save."""
    started = time.time()
    pending = list(refs)

    def report(ready: list) -> None:
        for ref in ready:
            try:
                outcome = ray.get(ref)
            except ray.exceptions.TaskCancelledError:  # cancelled before it started: not run
                continue
            except ray.exceptions.RayError as err:  # a worker or node lost beyond the retries
                outcome = PointOutcome(-1, f"ray: {str(err).strip()}", plan.retries + 1)
            on_done(refs[ref], outcome)

    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            report(ready)
    except KeyboardInterrupt:
        for ref in pending:  # a running point gets KeyboardInterrupt, passed on to its process
            ray.cancel(ref)
        # Ray reports a cancelled task at once, while its process still saves the partial run (in a
        # hidden staging directory beside the run's): wait for those to be renamed into place.
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_saving(plan, refs[ref], started) for ref in pending):
            time.sleep(0.5)
        report([ref for ref in pending if ray.wait([ref], timeout=0)[0]])
        raise
