"""The training loop: train a classifier on a generated task and record how training behaves.

``train(spec)`` runs a ``TrainSpec`` and logs, per step, the learning rate, loss, accuracy and
global gradient norm (the value ``clip_grad_norm_`` returns, no second pass), and on every log
step (each ``log_every``-th, every evaluation and checkpoint step, and the last) the per-layer
gradient norms, the largest activation and the attention entropy of the first block. A step's
scalars stay on the device until the next log step, where they are read back in one transfer.

Non-finite steps: every step's loss and gradient norm is checked, in those batched reads, so
``first_nonfinite_step`` is exact. The loop keeps a copy of the state at the last log step
whose values were all finite; when a later read finds a non-finite step k, it goes back to that
copy and replays steps up to k - 1 (the batches of every step are fixed by the seed), so the run
ends with status ``nonfinite`` at step k holding the last finite state, the weights after k - 1.
On the CPU the replay is bit for bit; on a GPU to the reproducibility of its kernels.

Stops: Ctrl-C (and SIGTERM, which the app turns into the same KeyboardInterrupt) ends the run
with status ``interrupted`` between two steps, never inside an optimizer update. Whatever the
status, a ``checkpoint_dir`` receives ``last.safetensors`` with the last finite state, its step
and the history of every row, so any stop can be inspected and resumed.

The model is either the discrete Transformer classifier (``model="transformer"``) or the master
PDE with the solver inside the loop (``model="pde"``). Warm-up and decay are a
``torch.optim.lr_scheduler.LambdaLR`` of ``schedule_factor``. A run resumed from a checkpoint
(``pdesim.train.checkpoint``) continues bit for bit on the CPU, and its rows and summary continue
the original run's: the checkpoint carries every earlier row.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..classifier import Classifier, PDEClassifier
from ..stopping import held_interrupts
from ..tasks import TaskData
from .checkpoint import read_checkpoint, restore, save_checkpoint
from .compiling import compiled_forward
from .data import batch_stream, load_data
from .measures import evaluate, first_attention_entropy, layer_gradient_norms, representation_similarity
from .spec import TrainSpec, build_model, check_memory

# The columns read back from the device at every step, and those only a log step measures.
STEP_SCALARS = ("loss", "accuracy", "grad_norm")
LOG_SCALARS = ("max_activation", "attention_entropy")
# A step is non-finite when one of these is (the attention entropy of saturated attention may be nan alone).
CHECKED = ("loss", "grad_norm", "max_activation")


def schedule_factor(spec: TrainSpec, step: int) -> float:
    """The learning rate of ``step`` as a fraction of ``lr``: linear warm-up, then cosine decay to 10%."""
    if spec.warmup and step < spec.warmup:
        return (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def learning_rate(spec: TrainSpec, step: int) -> float:
    """The learning rate of ``step``."""
    return spec.lr * schedule_factor(spec, step)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec, start: int = 0) -> LambdaLR:
    """The schedule of ``spec`` positioned at step ``start`` (the optimizer's lr is set for that step)."""
    for group in optimizer.param_groups:
        group["initial_lr"] = spec.lr
    return LambdaLR(optimizer, partial(schedule_factor, spec), last_epoch=start - 1)


@dataclass
class TrainOutcome:
    spec: TrainSpec
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    model: Classifier


@dataclass
class TrainingSetup:
    """Everything a run needs before its first step, checked: data, model, optimizer, resume point."""

    spec: TrainSpec
    train_data: TaskData
    eval_data: TaskData
    model: Classifier
    optimizer: torch.optim.Optimizer
    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    earlier_wall_time: float = 0.0
    forward: Callable[..., Any] | None = None  # what a training step calls: the model, or it compiled (compile=True)
    compile_time: float | None = None  # seconds the Transformer's compile and warm-up took before the first step


def prepare(spec: TrainSpec, resume: Path | None = None) -> TrainingSetup:
    """Checks memory and the resume checkpoint, generates the data and builds the model; no step yet.

    Every refusal (too little memory, an impossible task length, an untrusted checkpoint, a
    network the config cannot build) is a one-line ``ConfigError`` raised here, before a run
    directory exists.
    """
    check_memory(spec)
    checkpoint = read_checkpoint(resume, spec) if resume is not None else None
    train_data, eval_data = load_data(spec)
    torch.manual_seed(spec.seed)
    model = build_model(spec, train_data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    setup = TrainingSetup(spec, train_data, eval_data, model, optimizer)
    if checkpoint is not None:
        restore(checkpoint, model, optimizer)
        setup.start, setup.history, setup.earlier_wall_time = checkpoint.step, checkpoint.history, checkpoint.wall_time
    if spec.compile and not isinstance(model, PDEClassifier):  # the PDE compiles its solver step itself
        setup.forward, setup.compile_time = compiled_forward(model, next(batch_stream(train_data, spec.batch, 0))[0])
    return setup


class _Snapshot:
    """A copy of the weights and optimizer state at a step whose values were all finite."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.step = step
        with torch.no_grad():
            self.params = [p.detach().clone() for p in model.parameters()]
            self.state = {p: {k: torch.as_tensor(v).clone() for k, v in s.items()} for p, s in optimizer.state.items()}

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            for param, saved in zip(model.parameters(), self.params):
                param.copy_(saved)
        optimizer.state.clear()
        for param, state in self.state.items():
            optimizer.state[param] = {k: v.clone() for k, v in state.items()}


@contextmanager
def _whole_step() -> Iterator[None]:
    """Holds Ctrl-C and SIGTERM back until the block is done, so an update is applied whole or not at all."""
    with held_interrupts() as caught:
        yield
    if caught:
        signal.raise_signal(caught[0])  # now the handler the caller had sees it


def _update(
    model: Classifier,
    forward: Callable[..., Any],
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    spec: TrainSpec,
    ids: torch.Tensor,
    labels: torch.Tensor,
    log: bool,
    into: list[dict[str, Any]],
) -> None:
    """One optimizer step; appends its row, with device scalars (and the probes on a log step), to ``into``.

    The update and the append happen together or not at all (``_whole_step``). ``forward`` is the
    model, or the model compiled (``TrainSpec.compile``): the same parameters.
    """
    optimizer.zero_grad(set_to_none=True)
    if log:
        logits, states = forward(ids, return_states=True)
    else:
        logits = forward(ids)
    loss = nn.functional.cross_entropy(logits, labels)
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    if spec.clip is None:
        grad_norm = nn.utils.get_total_norm([p.grad for p in params])
    else:
        grad_norm = nn.utils.clip_grad_norm_(params, spec.clip)  # the norm before clipping
    row: dict[str, Any] = {"step": scheduler.last_epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
    with torch.no_grad():
        row.update(loss=loss.detach(), accuracy=(logits.argmax(-1) == labels).float().mean(), grad_norm=grad_norm)
        if log:
            row["max_activation"] = states.detach().abs().amax()
            row["attention_entropy"] = first_attention_entropy(model, ids, states[0])
            if spec.model == "transformer":
                row["layer_grad_norms"] = layer_gradient_norms(model)
    with _whole_step():
        optimizer.step()
        scheduler.step()
        into.append(row)


def _read_back(pending: list[dict[str, Any]]) -> None:
    """Turns the pending rows' device scalars into floats with one transfer (values already read stay as they are)."""
    columns = (*STEP_SCALARS, *LOG_SCALARS, "layer_grad_norms")
    tensors = [(row, key) for row in pending for key in columns if isinstance(row.get(key), torch.Tensor)]
    if not tensors:
        return
    flat = torch.cat([row[key].detach().reshape(-1) for row, key in tensors]).cpu().tolist()
    offset = 0
    for row, key in tensors:
        size = row[key].numel()
        values, offset = flat[offset : offset + size], offset + size
        row[key] = json.dumps(values) if key == "layer_grad_norms" else values[0]


def _finite(row: dict[str, Any]) -> bool:
    return all(math.isfinite(row[key]) for key in CHECKED if key in row)


def train(
    spec: TrainSpec,
    *,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    setup: TrainingSetup | None = None,
) -> TrainOutcome:
    """Trains ``spec`` and returns per-step rows and a summary; never raises for a non-finite step.

    ``setup`` is ``prepare(spec, resume)`` done earlier (the app checks everything before it
    creates a run directory); ``on_step`` sees each row once its values are read back.
    """
    setup = setup if setup is not None else prepare(spec, resume)
    model, optimizer, start = setup.model, setup.optimizer, setup.start
    forward = model if setup.forward is None else setup.forward
    eval_data, train_data = setup.eval_data, setup.train_data
    probe_ids = eval_data.ids[: min(64, len(eval_data))]
    scheduler = make_scheduler(optimizer, spec, start)
    rows: list[dict[str, Any]] = [dict(r) for r in setup.history]
    pending: list[dict[str, Any]] = []
    status, first_nonfinite, interrupted = "success", None, False
    clock = time.perf_counter()
    stream = batch_stream(train_data, spec.batch, spec.seed, start)
    verified = _Snapshot(model, optimizer, start)

    def settle() -> bool:
        """Reads the pending rows back; keeps them if all are finite, else rewinds to the step before the first
        non-finite one. Returns whether training may go on."""
        nonlocal status, first_nonfinite, verified
        _read_back(pending)
        bad = next((i for i, row in enumerate(pending) if not _finite(row)), None)
        if bad is None:
            done = list(pending)
            pending.clear()
            rows.extend(done)
            for row in done:
                if on_step:
                    on_step(row)
            verified = _Snapshot(model, optimizer, rows[-1]["step"]) if done else verified
            return True
        status, first_nonfinite = "nonfinite", pending[bad]["step"]
        verified.restore(model, optimizer)
        replay = batch_stream(train_data, spec.batch, spec.seed, verified.step)
        rerun = make_scheduler(optimizer, spec, verified.step)
        for _ in range(verified.step, first_nonfinite - 1):
            _update(model, forward, optimizer, rerun, spec, *next(replay), log=False, into=[])
        scheduler.last_epoch = rerun.last_epoch
        done = pending[: bad + 1]
        pending.clear()
        for row in done:
            rows.append(row)
            if on_step:
                on_step(row)
        return False

    try:
        for step in range(start, spec.steps):
            ids, labels = next(stream)
            evaluating = (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps
            saving = bool(checkpoint_dir and spec.checkpoint_every and (step + 1) % spec.checkpoint_every == 0)
            log = evaluating or saving or (step + 1) % spec.log_every == 0
            _update(model, forward, optimizer, scheduler, spec, ids, labels, log, into=pending)
            if not log:
                continue
            row = pending[-1]
            if evaluating and _finite_now(row):
                row["val_loss"], row["val_accuracy"] = evaluate(model, eval_data)
                row.update(representation_similarity(model, probe_ids))
            if not settle():
                break
            if saving:
                save_checkpoint(
                    checkpoint_dir / f"step-{step + 1:06d}.safetensors", model, optimizer, step + 1, spec, rows,
                    setup.earlier_wall_time + time.perf_counter() - clock,
                )
    except KeyboardInterrupt:
        status, interrupted = "interrupted", True
        if not settle():  # a step cut short before its update is in no row and changed nothing
            status = "nonfinite"
    wall_time = time.perf_counter() - clock
    steps_done = first_nonfinite - 1 if status == "nonfinite" else (rows[-1]["step"] if rows else start)
    if checkpoint_dir:
        save_checkpoint(
            checkpoint_dir / "last.safetensors", model, optimizer, steps_done, spec, rows,
            setup.earlier_wall_time + wall_time,
        )
    summary = summarise(rows, eval_data, status=status, first_nonfinite=first_nonfinite, interrupted=interrupted)
    summary.update(
        steps_done=steps_done,
        resumed_from=start if start else None,
        wall_time=setup.earlier_wall_time + wall_time,
        parameters=sum(p.numel() for p in model.parameters()),
        checkpoint="checkpoints/last.safetensors" if checkpoint_dir else None,
        compile_time=_compile_time(spec, setup),
    )
    return TrainOutcome(spec, rows, summary, model)


def _compile_time(spec: TrainSpec, setup: TrainingSetup) -> float | None:
    """Seconds this run spent compiling (compile=True), None when it ran eager."""
    if not spec.compile:
        return None
    if isinstance(setup.model, PDEClassifier):
        return setup.model.compile_time
    return setup.compile_time


def _finite_now(row: dict[str, Any]) -> bool:
    """Whether a log step's own checked values are finite (one read before the batched one: an update from a
    non-finite gradient leaves a NaN model, which is not validated)."""
    return bool(torch.stack([torch.isfinite(row[key]).all() for key in CHECKED if key in row]).all())


def summarise(
    rows: list[dict[str, Any]],
    eval_data: TaskData,
    *,
    status: str,
    first_nonfinite: int | None,
    interrupted: bool,
) -> dict[str, Any]:
    """The run's summary over all its rows (a resumed run's include the original run's)."""
    if first_nonfinite is None:  # a resumed run that had already stopped at a non-finite step keeps saying so
        first_nonfinite = next((r["step"] for r in rows if not _finite(r)), None)

    def finite(column: str) -> list[float]:
        return [r[column] for r in rows if column in r and math.isfinite(r[column])]

    evaluated = [r for r in rows if "val_accuracy" in r and math.isfinite(r["val_accuracy"])]
    losses, grads = finite("loss"), finite("grad_norm")
    return {
        "kind": "train",
        "status": status,
        "interrupted": interrupted,
        "first_nonfinite_step": first_nonfinite,
        "final_train_loss": losses[-1] if losses else math.nan,
        "final_val_accuracy": evaluated[-1]["val_accuracy"] if evaluated else math.nan,
        "best_val_accuracy": max((r["val_accuracy"] for r in evaluated), default=math.nan),
        "final_input_cka": evaluated[-1]["input_cka"] if evaluated else math.nan,
        "final_input_cosine": evaluated[-1]["input_cosine"] if evaluated else math.nan,
        "max_grad_norm": max(grads, default=math.nan),
        "max_activation": max(finite("max_activation"), default=math.nan),
        "first_grad_norm": grads[0] if grads else math.nan,
        "chance_accuracy": float(eval_data.class_counts().max()) / len(eval_data),
    }
