"""Forward-mode derivatives of a system's field: Jacobian-vector products and dense Jacobians.

PyTorch's fused CPU attention kernel has no forward-mode derivative, so every forward-mode call
here runs with ``scaled_dot_product_attention`` restricted to its math backend (plain matmuls and
softmax, which have one). That changes nothing for systems without attention. Everything runs
under ``torch.no_grad()``: forward mode does not need the reverse graph, and a system's
trainable parameters would otherwise make every result carry one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as forward_ad

Field = Callable[[Any, torch.Tensor], torch.Tensor]


@contextmanager
def forward_mode_safe() -> Iterator[None]:
    """Inside the block, scaled_dot_product_attention uses its math backend (forward-AD capable)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3: no fused CPU kernel to avoid
        yield
        return
    with sdpa_kernel([SDPBackend.MATH]):
        yield


def jvp(system: Field, t: Any, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(t, u), ∂f/∂u(t, u)·v) in one forward-mode pass.

    Dual tensors (``torch.autograd.forward_ad``) rather than ``torch.func.jvp``: the same numbers,
    at about half the cost on the master PDE's field (no functorch transform around every call).
    """
    with torch.no_grad(), forward_mode_safe(), forward_ad.dual_level():
        out = system(t, forward_ad.make_dual(u, v))
        primal, tangent = forward_ad.unpack_dual(out)
    return primal, torch.zeros_like(primal) if tangent is None else tangent


def dense_jacobian(system: Field, u: torch.Tensor, t: Any = 0.0) -> torch.Tensor:
    """The n×n Jacobian of u ↦ f(t, u) at u (n = u.numel()), row i = ∂f_i/∂u, in u's dtype."""
    u = u.detach()
    n = u.numel()
    with torch.no_grad(), forward_mode_safe():
        try:
            jac = torch.func.jacfwd(lambda x: system(t, x))(u)
        except (RuntimeError, NotImplementedError):
            # Some fields cannot be vmapped (data-dependent control flow, in-place writes):
            # fall back to one JVP per basis vector.
            columns = []
            for index in range(n):
                e = torch.zeros(n, dtype=u.dtype, device=u.device)
                e[index] = 1.0
                columns.append(jvp(system, t, u, e.view_as(u))[1].reshape(n))
            return torch.stack(columns, dim=1)
    return jac.reshape(n, n)
