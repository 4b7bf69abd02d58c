"""Long-range classification tasks generated offline: ListOps, Pathfinder-style images, associative recall.

    data = make_task("listops", n=10_000, seq_len=256, min_len=64, seed=0)
    train, val, test = data.split((0.8, 0.1, 0.1), seed=0)
    for ids, labels in train.batches(32, seed=epoch): ...

Every task returns a ``TaskData`` of right-padded ids (0 pads in every task), labels and lengths,
and is cached on disk under ``cache_dir`` (default ``$PDESIM_CACHE`` or ``~/.cache/pdesim/tasks``),
keyed by all of its parameters: the same parameters and seed give the same data, generated or
loaded. docs/tasks.md sets each generator's parameters beside the Long Range Arena benchmark's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import listops, pathfinder, recall
from .dataset import PAD_ID, TaskData, cached, default_cache_dir, load_task, save_task
from .listops import evaluate_listops, generate_listops
from .pathfinder import endpoints_connected, generate_pathfinder
from .recall import evaluate_recall, generate_recall

GENERATORS: dict[str, tuple[Callable[..., TaskData], int]] = {
    "listops": (generate_listops, listops.GENERATOR_VERSION),
    "pathfinder": (generate_pathfinder, pathfinder.GENERATOR_VERSION),
    "recall": (generate_recall, recall.GENERATOR_VERSION),
}
TASK_NAMES = tuple(GENERATORS)


def make_task(
    name: str,
    *,
    n: int,
    seq_len: int,
    seed: int,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    **params: Any,
) -> TaskData:
    """``n`` examples of task ``name`` with sequences of at most ``seq_len`` tokens, from the cache if there.

    ``params`` are the generator's own (``min_len``, ``balance``, ``path_length``, ...); an unknown
    one raises TypeError before anything is generated.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    if n < 1 or seq_len < 1:
        raise ValueError(f"n={n} and seq_len={seq_len} must be >= 1")
    generator, version = GENERATORS[name]
    bound = inspect.signature(generator).bind(n, seq_len=seq_len, seed=seed, **params)
    bound.apply_defaults()
    build = lambda: generator(*bound.args, **bound.kwargs)
    if not use_cache:
        return build()
    description = {"name": name, "version": version, "arguments": dict(bound.arguments)}
    return cached(description, build, cache_dir)


__all__ = [
    "GENERATORS",
    "PAD_ID",
    "TASK_NAMES",
    "TaskData",
    "default_cache_dir",
    "endpoints_connected",
    "evaluate_listops",
    "evaluate_recall",
    "generate_listops",
    "generate_pathfinder",
    "generate_recall",
    "load_task",
    "make_task",
    "save_task",
]
