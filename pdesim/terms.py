"""The terms of the master PDE (DESIGN §2), one ``nn.Module`` each, acting on u of shape (B, N, d).

- ``Diffusion``: D ⊙ Σ_s L^{(δ_s)} u along the token axis, with its energy and its spectral view.
- ``SoftmaxAttention``: the Transformer's multi-head attention (the nonlocal term), fused SDPA.
- ``SymmetricAttention``: the unnormalized symmetric "USA" kernel, an exact gradient flow.
- ``MLPReaction``: the feed-forward network W₂σ(W₁u + b₁) + b₂ (the local reaction).
- ``GradientReaction``: −W₁ᵀσ(W₁u + b₁) = −∇Ψ(u), the reaction of the gradient-flow configuration.

Masks are (B, N) bool tensors of *valid* tokens, right-padded (a valid prefix per sequence).
The terms are weight containers with a forward; how they are initialized and combined is the
model's business (``pdesim.model``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from solvers.spectral import DiagonalLinear, Laplacian1D
from solvers.stencil import Segments, reflect_index, second_difference


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # GELU's tanh approximation, which GPT-2 and ALBERT were trained with (transformers' "gelu_new").
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": _gelu_tanh, "relu": F.relu, "tanh": torch.tanh}


def _log_cosh(z: torch.Tensor) -> torch.Tensor:
    # log cosh z = |z| + log(1 + e^{−2|z|}) − log 2 never overflows, unlike log(cosh(z)).
    a = z.abs()
    return a + F.softplus(-2.0 * a) - math.log(2.0)


def _half_relu_squared(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * F.relu(z) ** 2


POTENTIALS = {"tanh": _log_cosh, "relu": _half_relu_squared}  # ψ with ψ' = σ


def _gather_tokens(u: torch.Tensor, index: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """sign ⊙ u[b, index[b, i], :] for index and sign of shape (B, M)."""
    picked = torch.gather(u, 1, index.unsqueeze(-1).expand(-1, -1, u.shape[-1]))
    return picked * sign.unsqueeze(-1).to(u.dtype)


class Diffusion(nn.Module):
    """Dif(u) = Σ_s D_s ⊙ L^{(δ_s)} u along dim −2, per channel, with D_s ≥ 0.

    D is stored as a signed tensor θ of shape (scales, dim) and read as D = |θ|: it stays ≥ 0
    under any update and equals the configured value exactly (zero included), which a softplus
    cannot and a square θ² only up to rounding. Like θ², |θ| has zero gradient at θ = 0, so a
    coefficient configured as exactly 0 stays 0 when trained; start from a small positive value
    to learn it. With ``learnable=False`` θ is a buffer.

    With a padding mask, the valid prefix of each sequence is the domain: the configured
    boundary condition applies at its last valid token (Neumann reflects there) and padded
    tokens get zero velocity.
    """

    def __init__(
        self,
        tokens: int,
        dim: int,
        coefficients: Sequence[Sequence[float]] | torch.Tensor,
        *,
        scales: Sequence[int] = (1,),
        bc: str = "neumann",
        spacing: float = 1.0,
        learnable: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        table = torch.as_tensor(coefficients, dtype=dtype or torch.get_default_dtype(), device=device)
        if table.shape != (len(scales), dim):
            raise ValueError(f"diffusion coefficients must have shape ({len(scales)}, {dim}), got {tuple(table.shape)}")
        if not bool(torch.isfinite(table).all()) or bool((table < 0).any()):
            raise ValueError("diffusion coefficients must be finite and >= 0")
        self.bc, self.spacing, self.scales = bc, float(spacing), tuple(int(s) for s in scales)
        self.operators = tuple(Laplacian1D(tokens, bc, dim=-2, spacing=spacing, dilation=s) for s in self.scales)
        if learnable:
            self.theta = nn.Parameter(table.clone())
        else:
            self.register_buffer("theta", table.clone())
        self._mask_cache: tuple[torch.Tensor, Segments] | None = None

    @property
    def coefficients(self) -> torch.Tensor:
        """The current D, shape (scales, dim), every entry ≥ 0."""
        return self.theta.abs()

    def coefficient_list(self) -> tuple[torch.Tensor, ...]:
        """One (dim,) coefficient vector per scale, read afresh (the form ``DiagonalLinear`` takes)."""
        return tuple(self.coefficients.unbind(0))

    def linear(self, shift: float = 0.0) -> DiagonalLinear:
        """Σ_s D_s ⊙ L_s + shift·I as a spectral operator that always reads the current D."""
        return DiagonalLinear(self.operators, self.coefficient_list, shift=shift)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        segments = None if mask is None else self._segments(mask)
        out = None
        for c, op in zip(self.coefficient_list(), self.operators):
            # 1/(δh)² folded into the (d,) coefficient: one full-size kernel fewer per scale
            scaled = c / (op.dilation * op.h) ** 2
            term = scaled * second_difference(u, op.dilation, self.bc, dim=-2, segments=segments)
            out = term if out is None else out.add_(term)
        if mask is None:
            return out
        return torch.where(mask.unsqueeze(-1), out, torch.zeros((), dtype=out.dtype, device=out.device))

    def _segments(self, mask: torch.Tensor) -> Segments:
        """The valid run of each sequence; cached per mask object (a solve reuses one mask)."""
        if self._mask_cache is None or self._mask_cache[0] is not mask:
            self._mask_cache = (mask, Segments.of_mask(mask))
        return self._mask_cache[1]

    def energy(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """E_D = Σ_s Σ_c D_{s,c} / (2(δ_s h)²) Σ_i (u_{i+δ_s,c} − u_{i,c})², shape (B,).

        The differences run over the boundary-extended field (``reflect_index``): periodic
        wraps, Neumann adds nothing at the walls, Dirichlet adds the jumps to the zero wall.
        Summing over one full period of the extension counts each real edge twice for
        Neumann and Dirichlet, hence the ½ there. E_D = −½⟨u, Dif(u)⟩ exactly.
        """
        batch, tokens, _ = u.shape
        if mask is None:
            n = torch.full((batch, 1), tokens, dtype=torch.long, device=u.device)
        else:
            n = mask.sum(-1, keepdim=True).clamp_min(1)
        periods = {"periodic": (n, tokens), "neumann": (2 * n, 2 * tokens), "dirichlet": (2 * n + 2, 2 * tokens + 2)}
        period, longest = periods[self.bc]
        cover = 1.0 if self.bc == "periodic" else 0.5
        p = torch.arange(longest, device=u.device)
        in_period = (p < period).unsqueeze(-1)
        total = u.new_zeros(batch)
        for c, s in zip(self.coefficient_list(), self.scales):
            here = _gather_tokens(u, *reflect_index(p, n, self.bc))
            ahead = _gather_tokens(u, *reflect_index(p + s, n, self.bc))
            squares = torch.where(in_period, (ahead - here) ** 2, 0.0).sum(1)
            total = total + cover * (squares * c).sum(-1) / (2.0 * (s * self.spacing) ** 2)
        return total


class SoftmaxAttention(nn.Module):
    """Att(x)_i = W_O concat_h Σ_j softmax_j(β⟨W_Q^h x_i, W_K^h x_j⟩) W_V^h x_j, via fused SDPA.

    ``mask`` is a (B, N) bool tensor of valid tokens: padded keys receive no weight. Causal
    attention lets token i see j ≤ i. Normalized softmax attention is not a Euclidean gradient
    flow, so the model has no energy for it. ``bias=True`` gives Q, K, V and W_O biases, as in
    BERT and GPT-2 (the toy model has none).
    """

    def __init__(
        self, dim: int, heads: int, *, temperature: float | None = None, causal: bool = False, bias: bool = False
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.dim, self.heads, self.causal = dim, heads, causal
        self.temperature = temperature if temperature is not None else 1.0 / math.sqrt(dim // heads)
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)  # W_Q, W_K, W_V stacked: one matmul
        self.out = nn.Linear(dim, dim, bias=bias)  # W_O
        self._mask_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def w_query(self) -> torch.Tensor:
        return self.qkv.weight[: self.dim]

    @property
    def w_key(self) -> torch.Tensor:
        return self.qkv.weight[self.dim : 2 * self.dim]

    @property
    def w_value(self) -> torch.Tensor:
        return self.qkv.weight[2 * self.dim :]

    def _sdpa_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """Bool mask, True where attention is allowed; cached per mask object."""
        if self._mask_cache is not None and self._mask_cache[0] is mask:
            return self._mask_cache[1]
        allowed = mask[:, None, None, :]
        if self.causal:
            n = mask.shape[-1]
            allowed = allowed & torch.ones(n, n, dtype=torch.bool, device=mask.device).tril()
        self._mask_cache = (mask, allowed)
        return allowed

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.temperature)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self._sdpa_mask(mask), scale=self.temperature)
        return self.out(y.transpose(1, 2).reshape(batch, tokens, dim))


class SymmetricAttention(nn.Module):
    """USA attention: Att(x)_i = Σ_h (1/N) Σ_j exp(β x_iᵀA_h x_j) A_h x_j, an exact gradient flow.

    A_h = W_hᵀW_h (symmetric PSD; W_h the rows of head h of one d×d matrix W) or, with
    ``identity=True``, W = I so that A_h selects head h's channels (A = I for one head).
    Att = −∇E_A with E_A(x) = −(1/(2βN)) Σ_h Σ_{i,j} exp(β x_iᵀA_h x_j). With a mask, sums run
    over valid tokens and N is the valid count. This is the small-system gradient-flow model:
    it materializes the (B, H, N, N) kernel, which the softmax term never does.
    """

    def __init__(self, dim: int, heads: int, *, temperature: float | None = None, identity: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        self.dim, self.heads = dim, heads
        self.temperature = temperature if temperature is not None else 1.0 / math.sqrt(dim // heads)
        self.query = None if identity else nn.Linear(dim, dim, bias=False)  # W; A_h = W_hᵀW_h

    def matrices(self, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """The symmetric A_h, shape (H, d, d) (for analysis; the forward never forms them)."""
        w = torch.eye(self.dim, dtype=dtype, device=device) if self.query is None else self.query.weight
        w = w.view(self.heads, self.dim // self.heads, self.dim)
        return w.transpose(1, 2) @ w

    def _kernel(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W x per head (B, H, N, d_h), exp(β x_iᵀA_h x_j) with masked keys zeroed, valid count (B,))."""
        batch, tokens, dim = x.shape
        q = x if self.query is None else self.query(x)
        q = q.view(batch, tokens, self.heads, dim // self.heads).transpose(1, 2)
        kernel = torch.exp(self.temperature * (q @ q.transpose(-1, -2)))
        if mask is None:
            count = torch.full((batch,), tokens, dtype=x.dtype, device=x.device)
        else:
            kernel = torch.where(mask[:, None, None, :], kernel, 0.0)
            count = mask.sum(-1).to(x.dtype)
        return q, kernel, count

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, kernel, count = self._kernel(x, mask)
        y = (kernel @ q / count[:, None, None, None]).transpose(1, 2).reshape(batch, tokens, dim)
        # Σ_h W_hᵀ y_h is one matmul with Wᵀ on the concatenated heads.
        return y if self.query is None else y @ self.query.weight

    def energy(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """E_A(x) = −(1/(2βN)) Σ_h Σ_{i,j valid} exp(β x_iᵀA_h x_j), shape (B,)."""
        _, kernel, count = self._kernel(x, mask)
        if mask is not None:
            kernel = torch.where(mask[:, None, :, None], kernel, 0.0)
        return -kernel.sum((1, 2, 3)) / (2.0 * self.temperature * count)


class MLPReaction(nn.Module):
    """Rea(x) = W₂ σ(W₁ x + b₁) + b₂, token by token (the Transformer's feed-forward network)."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(ACTIVATIONS[self.activation](self.w1(x)))


class GradientReaction(nn.Module):
    """F(x) = −W₁ᵀ σ(W₁ x + b₁) = −∇Ψ(x), Ψ(x) = Σ_j ψ(W₁x + b₁)_j with ψ' = σ.

    σ = tanh gives ψ = log cosh (evaluated without overflow), σ = relu gives ψ = ½ relu².
    """

    def __init__(self, dim: int, hidden: int, activation: str = "tanh"):
        super().__init__()
        if activation not in POTENTIALS:
            raise ValueError(
                f"activation={activation!r} has no closed-form potential; use one of {', '.join(POTENTIALS)}"
            )
        self.activation = activation
        self.w1 = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -(ACTIVATIONS[self.activation](self.w1(x)) @ self.w1.weight)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Ψ per token, shape (B, N)."""
        return POTENTIALS[self.activation](self.w1(x)).sum(-1)

    def energy(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Σ over (valid) tokens of Ψ, shape (B,)."""
        psi = self.potential(x)
        if mask is not None:
            psi = torch.where(mask, psi, 0.0)
        return psi.sum(-1)
