"""What training logs besides the loss: gradient norms, attention entropy, validation, drift.

Every measurement reads the model the way it computes: the attention entropy is taken of the
first block's attention on exactly the input that attention sees (``MasterPDE.branch_input``:
after LN₁ under pre-LN and after any ``before_norm``/``before_attention`` diffusion layer).

The probes the loop runs on its log steps (``layer_gradient_norms``, ``first_attention_entropy``)
return device tensors at the model's dtype and run under ``no_grad``: the loop reads them back
with the step's other scalars in one transfer, so they add no host synchronisation of their own.
"""

from __future__ import annotations

import torch
from torch import nn

import probes

from ..classifier import Classifier
from ..tasks import TaskData


def layer_gradient_norms(model: Classifier) -> torch.Tensor:
    """(layers,) ‖∇θ‖ of each layer's own parameters (its PDE's; tied layers share one), on the model's device."""
    with torch.no_grad():
        norms = []
        for pde in model.blocks.pdes:
            grads = [p.grad for p in pde.parameters() if p.grad is not None]
            if grads:
                norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
            else:
                norms.append(torch.zeros((), device=model.head.weight.device))
        return torch.stack(norms)


def first_attention_entropy(model: Classifier, ids: torch.Tensor, first_state: torch.Tensor) -> torch.Tensor:
    """Mean attention entropy of the first block (nats; log N is uniform attention), a 0-dim device tensor.

    ``first_state`` is the state the blocks start from in this batch's forward pass (``states[0]``).
    Computed at the model's dtype, one (B, heads, N, N) block of weights at a time; padded keys get
    no weight and padded queries are left out of the mean, as in ``probes.attention_entropy``.
    """
    with torch.no_grad():
        _, mask = model.embed_tokens(ids, model.valid_mask(ids))  # the mask the blocks see (CLS included)
        pde = model.blocks.blocks[0].pde
        attention = pde.attention
        x = pde.branch_input("attention", first_state.detach(), mask)
        batch, tokens, dim = x.shape
        heads = int(attention.heads)
        q, k, _ = attention.qkv(x).view(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-1, -2)) * float(attention.temperature)
        if getattr(attention, "causal", False):
            future = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).triu(1)
            logits = logits.masked_fill(future, -torch.inf)
        if mask is not None:
            logits = logits.masked_fill(~mask.view(batch, 1, 1, tokens), -torch.inf)
        entropy = torch.special.entr(torch.softmax(logits, dim=-1)).sum(-1)  # (B, heads, N)
        if mask is None:
            return entropy.mean()
        weight = mask.to(entropy.dtype).view(batch, 1, tokens)
        return ((entropy * weight).sum(-1) / weight.sum(-1).clamp_min(1.0)).mean()  # per example, then over (B, H)


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
