"""Training probes: train a classifier on a generated task and record how training behaves.

``TrainSpec`` describes a run (task, model switches, optimizer); ``train`` runs it and logs, per
step, the loss and accuracy, the global and per-layer gradient norms, the largest activation,
the attention entropy of the first block, and the first step at which anything became
non-finite — a non-finite step ends the run with status ``nonfinite``, it does not crash it.

The model is either the discrete Transformer classifier (``model="transformer"``) or the master
PDE with the solver inside the loop (``model="pde"``: embeddings are the initial condition, the
PDE is integrated to ``t_end`` and the final state is pooled; gradients by backpropagation
through the solver or, with ``adjoint=True``, by recomputation / torchdiffeq's adjoint).

Checkpoints are safetensors files (weights and optimizer moments, no pickle); a run resumed
from a checkpoint continues bit for bit on the CPU, because every batch is drawn from a
permutation seeded by (seed, epoch) rather than from a global random state.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import probes
import solvers

from .classifier import Classifier, PDEClassifier
from .config import ConfigError, PDEConfig
from .tasks import TASK_NAMES, TaskData, make_task
from .transformer import POSITIONS

MODELS = ("transformer", "pde")


@dataclass
class TrainSpec:
    """A training run; round-trips through the [train] table of config.toml."""

    task: str = "listops"
    seq_len: int = 128
    n_train: int = 4000
    n_eval: int = 500
    task_seed: int = 0
    model: str = "transformer"
    layers: int = 2
    dim: int = 64
    heads: int = 4
    norm: str = "pre"
    residual: bool = True
    diffusion: float = 0.0
    diffusion_positions: list[str] = field(default_factory=list)
    diffusion_scales: list[int] = field(default_factory=lambda: [1])
    pooling: str = "mean"
    solver: str = "rk4"
    solver_dt: float = 0.25
    adjoint: bool = False
    steps: int = 500
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    clip: float | None = 1.0
    eval_every: int = 100
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASK_NAMES:
            raise ConfigError(f"task={self.task!r} is not one of {', '.join(TASK_NAMES)}")
        if self.model not in MODELS:
            raise ConfigError(f"model={self.model!r} is not one of {', '.join(MODELS)}")
        unknown = [p for p in self.diffusion_positions if p not in POSITIONS]
        if unknown:
            raise ConfigError(f"unknown diffusion position {unknown[0]!r}; choose from {', '.join(POSITIONS)}")
        for name, minimum in (
            ("seq_len", 2),
            ("n_train", 1),
            ("n_eval", 1),
            ("layers", 1),
            ("steps", 1),
            ("batch", 1),
            ("eval_every", 1),
            ("dim", 1),
            ("heads", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
        for name in ("lr", "solver_dt"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}={value!r} must be a finite positive number")
        if self.clip is not None and not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"clip={self.clip!r} must be a positive number (or absent to disable clipping)")
        if self.warmup < 0 or self.checkpoint_every < 0:
            raise ConfigError("warmup and checkpoint_every must be >= 0")
        if self.solver not in solvers.FIXED_METHODS + solvers.TORCHDIFFEQ_METHODS:
            raise ConfigError(
                f"solver={self.solver!r} cannot run inside training; use a fixed-step or torchdiffeq method"
            )

    def to_table(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> TrainSpec:
        names = {f.name for f in fields(cls)}
        bad = sorted(set(table) - names)
        if bad:
            raise ConfigError(f"unknown key {bad[0]!r} in [train]; expected one of {', '.join(sorted(names))}")
        return cls(**table)

    def pde_config(self, tokens: int) -> PDEConfig:
        return PDEConfig(
            tokens=tokens,
            dim=self.dim,
            heads=self.heads,
            diffusion=self.diffusion,
            norm=self.norm,
            residual=self.residual,
            seed=self.seed,
        )


# -- data ---------------------------------------------------------------------------------------------


def load_data(spec: TrainSpec) -> tuple[TaskData, TaskData]:
    """(train, eval) parts of the task: disjoint, generated offline and cached."""
    data = make_task(spec.task, n=spec.n_train + spec.n_eval, seq_len=spec.seq_len, seed=spec.task_seed)
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


# -- the model ------------------------------------------------------------------------------------------


def build_model(spec: TrainSpec, data: TaskData) -> Classifier:
    pooling_extra = 1 if spec.pooling == "cls" else 0
    cfg = spec.pde_config(data.max_len + pooling_extra)
    common = dict(
        vocab_size=data.vocab_size,
        num_classes=data.num_classes,
        layers=spec.layers,
        pooling=spec.pooling,
        pad_id=data.pad_id,
        diffusion_at=spec.diffusion_positions,
        diffusion_scales=tuple(spec.diffusion_scales),
    )
    if spec.model == "pde":
        return PDEClassifier(
            cfg, t_end=float(spec.layers), solver=spec.solver, dt=spec.solver_dt, adjoint=spec.adjoint, **common
        )
    return Classifier(cfg, **common)


# -- measurements -----------------------------------------------------------------------------------------


def layer_gradient_norms(model: Classifier) -> list[float]:
    """‖∇θ‖ of each block's own parameters (tied blocks share one norm)."""
    norms = []
    for block in model.blocks.blocks:
        squares = [p.grad.pow(2).sum() for p in block.parameters() if p.grad is not None]
        norms.append(float(torch.stack(squares).sum().sqrt()) if squares else 0.0)
    return norms


def global_gradient_norm(model: nn.Module) -> float:
    squares = [p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def first_attention_entropy(model: Classifier, ids: torch.Tensor) -> float:
    """Mean attention entropy of the first block on this batch (nats; log N is uniform attention)."""
    with torch.no_grad():
        mask = model.valid_mask(ids)
        u, mask = model.embed_tokens(ids, mask)
        block = model.blocks.blocks[0]
        x = block.ln1(u) if block.norm == "pre" else u
        return float(probes.attention_entropy_of(block.attention, x, mask).mean())


def evaluate(model: Classifier, data: TaskData, batch: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole set."""
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for ids, labels in data.batches(batch, seed=0, shuffle=False):
            logits = model(ids)
            total_loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
    return total_loss / len(data), correct / len(data)


def representation_similarity(model: Classifier, ids: torch.Tensor) -> dict[str, float]:
    """Mean token cosine and linear CKA between the embedded input and the last state (drift in training)."""
    with torch.no_grad():
        _, states = model(ids, return_states=True)
        drift = probes.drift(states[[0, -1]])
        return {"input_cosine": float(drift["mean_cosine"][-1]), "input_cka": float(drift["cka"][-1])}


# -- the loop -----------------------------------------------------------------------------------------------


def learning_rate(spec: TrainSpec, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to 10% of it."""
    if spec.warmup and step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class TrainOutcome:
    spec: TrainSpec
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    model: Classifier


def _checkpoint_tensors(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {f"model.{i}": p.detach().clone().contiguous() for i, p in enumerate(model.parameters())}
    for i, p in enumerate(model.parameters()):
        state = optimizer.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq", "step"):
            if key in state:
                tensors[f"optim.{i}.{key}"] = torch.as_tensor(state[key]).detach().clone().contiguous()
    return tensors


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Weights and AdamW moments, indexed by parameter order, in one safetensors file (written atomically)."""
    tmp = path.with_suffix(".tmp")
    save_file(_checkpoint_tensors(model, optimizer), str(tmp), metadata={"step": str(step)})
    tmp.replace(path)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restores weights and optimizer moments; returns the number of steps already taken."""
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        step = int(handle.metadata()["step"])
    params = list(model.parameters())
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(tensors[f"model.{i}"])
    for i, p in enumerate(params):
        if f"optim.{i}.exp_avg" in tensors:
            optimizer.state[p] = {k: tensors[f"optim.{i}.{k}"].clone() for k in ("exp_avg", "exp_avg_sq", "step")}
    return step


def train(
    spec: TrainSpec,
    *,
    checkpoint_dir: Path | None = None,
    resume: Path | None = None,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Trains ``spec`` and returns per-step rows and a summary; never raises for a non-finite step."""
    train_data, eval_data = load_data(spec)
    torch.manual_seed(spec.seed)
    model = build_model(spec, train_data)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    start = load_checkpoint(resume, model, optimizer) if resume else 0
    probe_ids = eval_data.ids[: min(64, len(eval_data))]
    rows: list[dict[str, Any]] = []
    status, first_nonfinite, interrupted = "success", None, False
    clock = time.perf_counter()
    stream = batch_stream(train_data, spec.batch, spec.seed, start)
    step = start
    try:
        for step in range(start, spec.steps):
            ids, labels = next(stream)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(spec, step)
            optimizer.zero_grad(set_to_none=True)
            logits, states = model(ids, return_states=True)
            loss = nn.functional.cross_entropy(logits, labels)
            loss.backward()
            grad_norm = global_gradient_norm(model)
            max_activation = float(states.detach().abs().amax())
            row = {
                "step": step + 1,
                "lr": optimizer.param_groups[0]["lr"],
                "loss": loss.item(),
                "accuracy": float((logits.argmax(-1) == labels).float().mean()),
                "grad_norm": grad_norm,
                "max_activation": max_activation,
                "layer_grad_norms": json.dumps(layer_gradient_norms(model)) if spec.model == "transformer" else "",
            }
            finite = math.isfinite(row["loss"]) and math.isfinite(grad_norm) and math.isfinite(max_activation)
            if finite:
                row["attention_entropy"] = first_attention_entropy(model, ids)
            if finite and spec.clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            if finite:
                optimizer.step()
            if (step + 1) % spec.eval_every == 0 or step + 1 == spec.steps or not finite:
                if finite:
                    row["val_loss"], row["val_accuracy"] = evaluate(model, eval_data)
                    row.update(representation_similarity(model, probe_ids))
            rows.append(row)
            if on_step:
                on_step(row)
            if not finite:
                status, first_nonfinite = "nonfinite", step + 1
                break
            if checkpoint_dir and spec.checkpoint_every and (step + 1) % spec.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir / f"step-{step + 1:06d}.safetensors", model, optimizer, step + 1)
    except KeyboardInterrupt:
        status, interrupted = "interrupted", True
    if checkpoint_dir and rows and status == "success":
        save_checkpoint(checkpoint_dir / "last.safetensors", model, optimizer, rows[-1]["step"])
    evaluated = [r for r in rows if "val_accuracy" in r]
    losses = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    grads = [r["grad_norm"] for r in rows if math.isfinite(r["grad_norm"])]
    acts = [r["max_activation"] for r in rows if math.isfinite(r["max_activation"])]
    summary = {
        "kind": "train",
        "status": status,
        "interrupted": interrupted,
        "steps_done": rows[-1]["step"] if rows else start,
        "first_nonfinite_step": first_nonfinite,
        "wall_time": time.perf_counter() - clock,
        "final_train_loss": losses[-1] if losses else math.nan,
        "final_val_accuracy": evaluated[-1]["val_accuracy"] if evaluated else math.nan,
        "best_val_accuracy": max((r["val_accuracy"] for r in evaluated), default=math.nan),
        "final_input_cka": evaluated[-1]["input_cka"] if evaluated else math.nan,
        "final_input_cosine": evaluated[-1]["input_cosine"] if evaluated else math.nan,
        "max_grad_norm": max(grads, default=math.nan),
        "max_activation": max(acts, default=math.nan),
        "first_grad_norm": grads[0] if grads else math.nan,
        "chance_accuracy": float(eval_data.class_counts().max()) / len(eval_data),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return TrainOutcome(spec, rows, summary, model)
