"""What training logs besides the loss: gradient norms, attention entropy, validation, drift.

Every measurement reads the model the way it computes: the attention entropy is taken of the
first block's attention on exactly the input that attention sees (``MasterPDE.branch_input``:
after LN₁ under pre-LN and after any ``before_norm``/``before_attention`` diffusion layer).
"""

from __future__ import annotations

import torch
from torch import nn

import probes

from ..classifier import Classifier
from ..tasks import TaskData


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


def first_attention_entropy(model: Classifier, ids: torch.Tensor, first_state: torch.Tensor) -> float:
    """Mean attention entropy of the first block (nats; log N is uniform attention).

    ``first_state`` is the state the blocks start from in this batch's forward pass (``states[0]``).
    """
    with torch.no_grad():
        _, mask = model.embed_tokens(ids, model.valid_mask(ids))  # the mask the blocks see (CLS included)
        pde = model.blocks.blocks[0].pde
        x = pde.branch_input("attention", first_state.detach(), mask)
        return float(probes.attention_entropy_of(pde.attention, x, mask).mean())


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
