"""How spread out attention is: the Shannon entropy of the softmax rows, in O(chunk·N) memory.

Entropy log N is uniform attention (every key weighted alike), 0 is a hard one-hot choice.
Queries are processed ``chunk`` at a time so the N×N matrix is never held whole.
"""

from __future__ import annotations

import torch


def attention_entropy(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    scale: float,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    chunk: int = 1024,
) -> torch.Tensor:
    """Mean over queries of the entropy of softmax(scale · q kᵀ) rows, shape (B, H) float64.

    q (B, H, N_q, d_h), k (B, H, N_k, d_h). ``mask`` (B, N_k) bool marks valid keys; masked keys
    get no weight, and when N_q = N_k (self-attention with a padding mask) padded queries are
    left out of the mean too. ``causal``: query i sees keys j ≤ i. Computed in float64.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of queries, got {chunk}")
    batch, heads, queries, _ = q.shape
    keys = k.shape[-2]
    k = k.detach().to(torch.float64)
    valid_keys = None
    query_weight = torch.ones(batch, 1, queries, dtype=torch.float64, device=q.device)
    if mask is not None:
        if mask.shape != (batch, keys):
            raise ValueError(f"mask must be (batch, keys) = ({batch}, {keys}), got {tuple(mask.shape)}")
        valid_keys = mask.to(torch.bool).view(batch, 1, 1, keys)
        if queries == keys:
            query_weight = mask.to(torch.float64).view(batch, 1, queries)
    total = torch.zeros(batch, heads, dtype=torch.float64, device=q.device)
    key_index = torch.arange(keys, device=q.device)
    for start in range(0, queries, chunk):
        stop = min(start + chunk, queries)
        logits = scale * (q[:, :, start:stop].detach().to(torch.float64) @ k.transpose(-1, -2))
        allowed = torch.ones_like(logits, dtype=torch.bool)
        if valid_keys is not None:
            allowed = allowed & valid_keys
        if causal:
            query_index = torch.arange(start, stop, device=q.device)
            allowed = allowed & (key_index <= query_index.unsqueeze(-1))
        logits = logits.masked_fill(~allowed, -torch.inf)
        log_p = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        entropy = -torch.where(allowed, log_p.exp() * log_p, 0.0).sum(dim=-1)  # (B, H, chunk)
        total = total + (entropy * query_weight[..., start:stop]).sum(dim=-1)
    return total / query_weight.sum(dim=-1)


def attention_entropy_of(module: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attention_entropy`` of a softmax attention module on its input x (B, N, d), shape (B, H).

    Duck-typed: the module needs ``.qkv`` (a Linear d → 3d, queries, keys, values stacked by
    head), ``.heads`` and ``.temperature``; ``.causal`` is honoured if present. x is what the
    module sees (under pre-LN, pass LN₁(u)). ``mask`` (B, N) marks valid tokens.
    """
    if not all(hasattr(module, name) for name in ("qkv", "heads", "temperature")):
        raise TypeError(f"{type(module).__name__} has no .qkv/.heads/.temperature: not a softmax attention module")
    batch, tokens, dim = x.shape
    heads = int(module.heads)
    with torch.no_grad():
        q, k, _ = module.qkv(x).view(batch, tokens, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    return attention_entropy(
        q, k, scale=float(module.temperature), mask=mask, causal=bool(getattr(module, "causal", False))
    )
