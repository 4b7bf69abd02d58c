"""The training loop: train a classifier on a generated task and record how training behaves.

``train(spec)`` runs a ``TrainSpec`` and logs, per step, the loss and accuracy, the global and
per-layer gradient norms, the largest activation, the attention entropy of the first block, and
the first step at which anything became non-finite — a non-finite step ends the run with status
``nonfinite``, it does not crash it.

The model is either the discrete Transformer classifier (``model="transformer"``) or the master
PDE with the solver inside the loop (``model="pde"``: embeddings are the initial condition, the
PDE is integrated to ``t_end`` and the final state is pooled; gradients by backpropagation
through the solver or, with ``adjoint=True``, by recomputation / torchdiffeq's adjoint).

A run resumed from a checkpoint (``pdesim.train.checkpoint``) continues bit for bit on the CPU,
because the batches of every step are fixed by the seed (``pdesim.train.data``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..classifier import Classifier
from .checkpoint import load_checkpoint, save_checkpoint
from .data import batch_stream, load_data
from .measures import (
    evaluate,
    first_attention_entropy,
    global_gradient_norm,
    layer_gradient_norms,
    representation_similarity,
)
from .spec import TrainSpec, build_model


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
    start = load_checkpoint(resume, model, optimizer, spec) if resume else 0
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
                row["attention_entropy"] = first_attention_entropy(model, ids, states[0])
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
                save_checkpoint(checkpoint_dir / f"step-{step + 1:06d}.safetensors", model, optimizer, step + 1, spec)
    except KeyboardInterrupt:
        status, interrupted = "interrupted", True
    if checkpoint_dir and rows and status == "success":
        save_checkpoint(checkpoint_dir / "last.safetensors", model, optimizer, rows[-1]["step"], spec)
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
