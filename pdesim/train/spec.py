"""``TrainSpec``: a training run (task, model switches, optimizer), and the classifier it describes.

A spec is validated on creation by the validators of ``pdesim.config`` (so ``residual = "yes"``
in a config file is a one-line ``ConfigError``, like a bad PDE field), round-trips through the
[train] table of config.toml, and is stored in every checkpoint. ``MODEL_FIELDS`` are the fields
that shape the network: a checkpoint can only be resumed by a spec that agrees on all of them.
"""

from __future__ import annotations

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
        check_choice("task", self.task, TASK_NAMES)
        check_choice("model", self.model, MODELS)
        check_choice("norm", self.norm, NORMS)
        check_choice("pooling", self.pooling, POOLINGS)
        for name in ("residual", "adjoint"):
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
        if self.adjoint and self.model != "pde":
            raise ConfigError("adjoint=True needs model='pde': the Transformer has no solver to differentiate through")
        if self.solver not in TRAINING_SOLVERS:
            raise ConfigError(
                f"solver={self.solver!r} cannot run inside training; use one of {', '.join(TRAINING_SOLVERS)}"
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
            cfg, t_end=float(spec.layers), solver=spec.solver, dt=spec.solver_dt, adjoint=spec.adjoint, **common
        )
    return Classifier(cfg, **common)
