"""``TrainSpec``: a training run (task, model switches, optimizer), and the classifier it describes.

A spec is validated on creation by the validators of ``pdesim.config`` (so ``residual = "yes"``
in a config file is a one-line ``ConfigError``, like a bad PDE field), round-trips through the
[train] table of config.toml, and is stored in every checkpoint. ``MODEL_FIELDS`` are the fields
that shape the network: a checkpoint can only be resumed by a spec that agrees on all of them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import solvers

from ..classifier import POOLINGS, Classifier, PDEClassifier
from ..config import (
    NORMS,
    ConfigError,
    PDEConfig,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive,
)
from ..tasks import TASK_NAMES, TaskData
from ..transformer import POSITIONS

MODELS = ("transformer", "pde")
# The solvers that can run inside a training step (differentiable, fixed-step or torchdiffeq).
TRAINING_SOLVERS = solvers.FIXED_METHODS + solvers.TORCHDIFFEQ_METHODS
# The fields that shape the network (its parameters and the function it computes): a checkpoint
# resumes only under a spec that agrees on every one. Optimizer, schedule and data size may change.
MODEL_FIELDS = (
    "task",
    "seq_len",
    "model",
    "layers",
    "dim",
    "heads",
    "norm",
    "residual",
    "diffusion",
    "diffusion_positions",
    "diffusion_scales",
    "pooling",
)


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
    compile: bool = False  # torch.compile: the PDE's solver step, or the Transformer's forward pass
    steps: int = 500
    batch: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 50
    clip: float | None = 1.0
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("task", self.task, TASK_NAMES)
        check_choice("model", self.model, MODELS)
        check_choice("norm", self.norm, NORMS)
        check_choice("pooling", self.pooling, POOLINGS)
        for name in ("residual", "adjoint", "compile"):
            check_bool(name, getattr(self, name))
        for name, minimum in (
            ("seq_len", 2),
            ("n_train", 1),
            ("n_eval", 1),
            ("task_seed", 0),
            ("layers", 1),
            ("dim", 1),
            ("heads", 1),
            ("steps", 1),
            ("batch", 1),
            ("warmup", 0),
            ("eval_every", 1),
            ("log_every", 1),
            ("checkpoint_every", 0),
            ("seed", 0),
        ):
            check_int(name, getattr(self, name), minimum)
        self.diffusion = check_number("diffusion", self.diffusion, minimum=0.0)
        self.weight_decay = check_number("weight_decay", self.weight_decay, minimum=0.0)
        self.lr = check_positive("lr", self.lr)
        self.solver_dt = check_positive("solver_dt", self.solver_dt)
        if self.clip is not None:  # None: no clipping
            self.clip = check_positive("clip", self.clip)
        self.diffusion_positions = _list("diffusion_positions", self.diffusion_positions)
        for position in self.diffusion_positions:
            check_choice("diffusion position", position, POSITIONS)
        self.diffusion_scales = _list("diffusion_scales", self.diffusion_scales)
        for scale in self.diffusion_scales:
            check_int("diffusion scale", scale, 1)
        if self.adjoint and self.compile:
            raise ConfigError(
                "compile=True does not combine with adjoint=True (checkpointed segments are recomputed eagerly); "
                "choose one"
            )
        if self.adjoint and self.model != "pde":
            raise ConfigError("adjoint=True needs model='pde': the Transformer has no solver to differentiate through")
        if not isinstance(self.solver, str) or self.solver not in TRAINING_SOLVERS:
            raise ConfigError(
                f"solver={self.solver!r} cannot run inside training; use one of {', '.join(TRAINING_SOLVERS)}"
            )
        self.pde_config(self.seq_len)  # the network's own checks (dim divisible by heads, ...) before any work

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


# Bytes per element of the float32 tensors training keeps for backward, and of int64 token ids.
_FLOAT, _ID = 4, 8


def estimate_memory(spec: TrainSpec) -> dict[str, int]:
    """Bytes a training run needs at its peak, by part: ``data``, ``model`` and ``activations``.

    A deliberately generous estimate, made before anything is allocated: the task's ids (with the
    generator's working copies), the parameters with their gradients and AdamW moments (and the
    loop's copy of the last verified state), and what
    one step keeps for backward — per block the token states (B·N·d, a dozen copies in attention
    and MLP) and the attention weights (B·heads·N², three copies) — times the blocks a step runs
    (the PDE model: every stage of every solver step), or one validation batch if that is larger.
    """
    tokens = spec.seq_len + (1 if spec.pooling == "cls" else 0)
    data = (spec.n_train + spec.n_eval) * spec.seq_len * _ID * 3
    per_block_params = 12 * spec.dim * spec.dim + 13 * spec.dim
    blocks = 1 if spec.model == "pde" else spec.layers
    # weights, gradients, two AdamW moments, and the loop's copy of weights and moments at its last verified step
    model = (blocks * per_block_params + (spec.seq_len + 64) * spec.dim) * _FLOAT * 7
    if spec.model == "pde":
        stages = 13 if spec.solver in solvers.TORCHDIFFEQ_METHODS else 4
        evaluations = 1 if spec.adjoint else max(1, round(spec.layers / spec.solver_dt)) * stages
    else:
        evaluations = spec.layers
    per_example = (12 * tokens * spec.dim + 3 * spec.heads * tokens * tokens) * _FLOAT
    activations = max(evaluations * spec.batch, 2 * min(256, spec.n_eval)) * per_example
    return {"data": data, "model": model, "activations": activations}


def available_memory() -> int | None:
    """Bytes of memory this machine has free now (MemAvailable), or None where that cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(spec: TrainSpec, available: int | None = None) -> None:
    """Refuses, in one line with the estimate, a run that cannot fit in the memory available."""
    available = available_memory() if available is None else available
    parts = estimate_memory(spec)
    needed = sum(parts.values())
    if available is not None and needed > available:
        detail = ", ".join(f"{name} {_gib(size)}" for name, size in parts.items())
        raise ConfigError(
            f"this training run needs about {_gib(needed)} ({detail}), more than the {_gib(available)} "
            "available; lower --seq-len, --batch, --dim, --layers or --n-train"
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.3g} GiB"


def _list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}={value!r} must be a list")
    return list(value)


def build_model(spec: TrainSpec, data: TaskData) -> Classifier:
    """The classifier the spec describes, sized for the task's vocabulary, classes and length."""
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
            cfg, t_end=float(spec.layers), solver=spec.solver, dt=spec.solver_dt, adjoint=spec.adjoint,
            compile=spec.compile, **common,
        )
    return Classifier(cfg, **common)
