"""The data of a training run: the task's train and validation parts, and the batches of every step.

Batches come from ``TaskData.batches`` (a ``torch.utils.data.DataLoader`` over a
``RandomSampler`` seeded by (seed, epoch)), not from a global random state, so the batch of
step k is the same whether a run got there in one go or resumed from a checkpoint: that is what
makes resuming bit-identical.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..config import ConfigError
from ..tasks import TaskData, make_task
from .spec import TrainSpec


def load_data(spec: TrainSpec) -> tuple[TaskData, TaskData]:
    """(train, eval) parts of the task: disjoint, generated offline and cached."""
    try:
        data = make_task(spec.task, n=spec.n_train + spec.n_eval, seq_len=spec.seq_len, seed=spec.task_seed)
    except ValueError as err:  # a generator refusing its parameters (pathfinder's square seq_len, too few lengths)
        raise ConfigError(f"task {spec.task!r}: {err}") from None
    fraction = spec.n_train / len(data)
    train, evaluation = data.split((fraction, 1.0 - fraction), seed=spec.task_seed)
    return train, evaluation


def batch_stream(
    data: TaskData, batch: int, seed: int, start_step: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches for steps start_step, start_step + 1, ...: epoch e is a permutation seeded by (seed, e)."""
    per_epoch = max(1, len(data) // batch)
    step = start_step
    while True:
        epoch, offset = divmod(step, per_epoch)
        batches = data.batches(batch, seed=seed * 100_003 + epoch, drop_last=len(data) >= batch)
        for index, item in enumerate(batches):
            if index >= offset:
                yield item
                step += 1
        if step == start_step:  # an epoch smaller than one batch yields nothing; take it whole
            yield data.ids, data.labels
            step += 1
