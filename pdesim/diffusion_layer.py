"""The paper's Adaptive PDE Diffusion Layer: one learnable, provably non-expansive heat step.

``PDEDiffusion`` smooths a sequence of token states X of shape (..., N, d) along the token axis
with one explicit Euler step of heat diffusion at one or more dilations δ_s and mixes the scales
convexly:

    Y = Σ_s w_s (X + τ_s ⊙ D_{δ_s} X),   τ_s = τ_max·sigmoid(θ_s),   w = softmax(φ).

Conventions, and why each step is non-expansive (in ℓ2 and in max-norm, per channel):

- Symmetric step: (D_δ X)_i = X_{i+δ} − 2X_i + X_{i−δ} with *no* 1/δ² factor, so τ ≤ ½ is the
  CFL bound at every scale (``solvers.spectral.Laplacian1D`` divides by δ²: D_δ = δ²·L^{(δ)}).
  Out-of-range neighbours follow the even (Neumann) reflection about the sequence ends, ghost
  X_{−j} = X_{j−1} and X_{N−1+j} = X_{N−j}, continued 2N-periodically when δ > N. Row i of the
  step is then the convex combination (1−2τ)X_i + τX_{i+δ} + τX_{i−δ} (max-norm), and the
  operator is symmetric with the DCT-II eigenvectors and eigenvalues 1 − 4τ sin²(πkδ/2N) ∈
  [−1, 1] (ℓ2). It is doubly stochastic, so it conserves every channel's token mean.
- Masks (True = real token): padding is outside the domain. Every maximal run of valid tokens
  is its own Neumann domain, reflected at its first and last valid token, so a right-padded
  sequence behaves exactly like the unpadded shorter one, and packed documents separated by
  padding never mix. Valid tokens read only tokens of their own run (no leakage) and padded
  tokens are returned unchanged. The step on each run is the symmetric step above, so all its
  guarantees hold per run, hence over the valid tokens.
- Causal step (``causal=True``): the one-sided (upwind) transport/heat step
  Y_i = X_i + τ(X_{i−δ} − X_i), not the symmetric Laplacian. Token i reads only i and i−δ. Where
  i−δ is before the start of its run the ghost is 0 (zero inflow). The step is
  (1−τ)·I + τ·S with S a strict shift (‖S‖ ≤ 1 in ℓ2 and max-norm), so it is non-expansive for
  τ ≤ 1. The first δ tokens of each run are damped by (1−τ): a constant-preserving ghost
  (X_{i−δ} := X_i) would copy those tokens twice and break ℓ2 (x = (1, 0) ↦ (1, τ)). In fact no
  strictly causal, non-trivial, constant-preserving averaging step can be ℓ2 non-expansive.
  A lower-triangular stochastic matrix of ℓ2 norm 1 must also have unit column sums, and that
  forces it to be the identity.

The convex mix over scales keeps every one of these bounds. The cost is linear in N: each scale
is two gathers along the token axis. There are no N×N tensors and no loops over tokens.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from solvers.stencil import Segments, second_difference

CFL_LIMIT = 0.5


def _segments(x: Tensor, mask: Tensor | None) -> Segments | None:
    """The runs of valid tokens of a (..., N) mask (None without one: the whole sequence is one run)."""
    if mask is None:
        return None
    if mask.dtype != torch.bool or mask.shape != x.shape[:-1]:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(x.shape[:-1])}, got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return Segments.of_mask(mask)


def _outside_zeroed(x: Tensor, mask: Tensor | None) -> Tensor:
    """X with padding set to 0, so no NaN or inf stored there can reach any arithmetic."""
    return x if mask is None else torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))


def _keep_padding(y: Tensor, x: Tensor, mask: Tensor | None) -> Tensor:
    return y if mask is None else torch.where(mask.unsqueeze(-1), y, x)


def _difference(x: Tensor, dilation: int, segments: Segments | None, causal: bool) -> Tensor:
    """D_δ X: the symmetric Neumann stencil X_{i+δ} − 2X_i + X_{i−δ}, or the causal X_{i−δ} − X_i."""
    if not causal:
        return second_difference(x, dilation, "neumann", dim=-2, segments=segments)
    position = torch.arange(x.shape[-2], device=x.device)
    start = 0 if segments is None else segments.start
    source_inside_run = (position - start) >= dilation
    behind = x.roll(dilation, dims=-2) if segments is None else segments.take(x, (position - dilation).clamp(min=0))
    behind = torch.where(source_inside_run.unsqueeze(-1), behind, torch.zeros_like(behind))
    return behind - x


def heat_step(
    x: Tensor,
    tau: Tensor | float,
    dilation: int = 1,
    mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """One explicit heat step Y = X + τ ⊙ D_δ X along the token axis of x (..., N, d).

    ``tau`` broadcasts against the channel axis (a scalar, (1,) or (d,)). Y is non-expansive
    for 0 ≤ τ ≤ ½. The boundary, mask and causal rules are in the module docstring.
    """
    segments = _segments(x, mask)
    inside = _outside_zeroed(x, mask)
    return _keep_padding(inside + tau * _difference(inside, dilation, segments, causal), x, mask)


class PDEDiffusion(nn.Module):
    """Learnable multi-scale heat smoothing along the tokens, Y = Σ_s w_s (X + τ_s ⊙ D_{δ_s} X).

    ``dim`` is the channel count d. ``scales`` are the dilations δ_s. τ_s = tau_max·sigmoid(θ_s),
    with θ_s per channel (``per_channel=True``) or shared by all channels. ``init_tau`` is the
    starting τ (tau_max/2 when None). ``causal=True`` uses the one-sided step, where no token
    sees a later one.
    """

    def __init__(
        self,
        dim: int,
        scales: Sequence[int] = (1,),
        tau_max: float = CFL_LIMIT,
        per_channel: bool = True,
        causal: bool = False,
        init_tau: float | None = None,
    ):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer ≥ 1, got {dim!r}")
        scales = tuple(scales)
        if not scales or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in scales):
            raise ValueError(f"scales must be a non-empty sequence of positive integers, got {scales!r}")
        if not 0.0 < tau_max <= CFL_LIMIT:
            raise ValueError(f"tau_max must lie in (0, {CFL_LIMIT}] (the CFL limit), got {tau_max!r}")
        if init_tau is None:
            init_tau = tau_max / 2
        if not 0.0 < init_tau < tau_max:
            raise ValueError(f"init_tau must lie strictly between 0 and tau_max={tau_max}, got {init_tau!r}")
        self.dim, self.scales, self.tau_max = dim, scales, float(tau_max)
        self.per_channel, self.causal = per_channel, causal
        logit = math.log(init_tau / (tau_max - init_tau))
        self.theta = nn.Parameter(torch.full((len(scales), dim if per_channel else 1), logit))
        self.phi = nn.Parameter(torch.zeros(len(scales)))

    @property
    def tau(self) -> Tensor:
        """τ of each scale and channel: shape (S, d), or (S, 1) when shared. Always within (0, tau_max]."""
        return self.tau_max * torch.sigmoid(self.theta)

    @property
    def weights(self) -> Tensor:
        """The convex scale weights w = softmax(φ), shape (S,)."""
        return torch.softmax(self.phi, dim=0)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Smooth x of shape (..., N, d). ``mask`` (..., N) is True for real tokens."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected {self.dim} channels in the last axis, got shape {tuple(x.shape)}")
        segments = _segments(x, mask)
        inside = _outside_zeroed(x, mask)
        # Σ_s w_s (X + τ_s D_s X) = X + Σ_s (w_s τ_s) D_s X because Σ_s w_s = 1. This form needs
        # only one running sum.
        coefficients = (self.weights.unsqueeze(-1) * self.tau).to(x.dtype)
        y = inside
        for coefficient, dilation in zip(coefficients, self.scales):
            y = y + coefficient * _difference(inside, dilation, segments, self.causal)
        return _keep_padding(y, x, mask)

    def transfer_function(self, omega: Tensor) -> Tensor:
        """The step's multiplier on the mode of frequency ω, shape (*omega.shape, d or 1).

        Symmetric: H(ω) = Σ_s w_s (1 − 4τ_s sin²(ωδ_s/2)), real, exact on the Neumann modes
        ω_k = πk/N. Causal: the upwind symbol Σ_s w_s (1 − τ_s + τ_s e^{−iωδ_s}) of the interior
        stencil, complex. It ignores the zero-inflow boundary.
        """
        dtype = torch.promote_types(omega.dtype, self.theta.dtype)
        omega = omega.to(dtype).unsqueeze(-1).unsqueeze(-1)  # (..., 1, 1) against (S, d)
        tau = self.tau.to(dtype)
        weights = self.weights.to(dtype).unsqueeze(-1)
        dilations = torch.tensor(self.scales, dtype=dtype, device=tau.device).unsqueeze(-1)
        if self.causal:
            shift = torch.polar(torch.ones_like(omega * dilations), -omega * dilations)
            return (weights * (1 - tau + tau * shift)).sum(dim=-2)
        return (weights * (1 - 4 * tau * torch.sin(omega * dilations / 2) ** 2)).sum(dim=-2)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, scales={self.scales}, tau_max={self.tau_max}, "
            f"per_channel={self.per_channel}, causal={self.causal}"
        )
