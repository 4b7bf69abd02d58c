"""``MasterPDE``: the Transformer as the field du/dt = f(t, u) of DESIGN §2–3, for ``solvers.solve``.

The velocity is a sum of named terms — diffusion, attention, reaction, and the stabilizers
(no residual: −u; ``relax``: −κ(u − LN₁u)) — followed by the tangent projection when
``norm="tangent"`` and by zeroing padded tokens. The same term objects serve three views:
``forward`` (their sum), ``parts()`` (for splitting methods) and ``semilinear()`` (D⊙L apart,
for IMEX/exponential methods), so the views agree by construction. For the gradient-flow
configuration, ``energy`` is a Lyapunov function and the velocity is exactly −∇E (or −P_u∇E).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from solvers.fields import SemilinearField

from .config import ConfigError, PDEConfig
from .terms import Diffusion, GradientReaction, MLPReaction, SoftmaxAttention, SymmetricAttention

Field = Callable[[Any, torch.Tensor], torch.Tensor]

# Independent random streams per purpose, so that switching one term off or resizing it never
# changes the weights of another, nor the initial state.
_STREAM_INITIAL_STATE, _STREAM_ATTENTION, _STREAM_REACTION = 0, 1, 2

# Where a PDE Diffusion Layer can sit inside the sub-layers (the block-level positions, around and
# between the blocks, belong to the Transformer): on the stream entering each LayerNorm, on the
# attention's input, and on the attention's and the FFN's outputs.
IN_BLOCK_POSITIONS = ("before_norm", "before_attention", "after_attention", "after_ffn")
BRANCHES = ("diffusion", "attention", "reaction", "stabilizer")
_DIFFUSION_SETTINGS = ("diffusion", "diffusion_scales", "bc", "spacing", "learnable_diffusion")
# Config fields that ``MasterPDE.switched`` may change on existing weights: none of them shapes a module.
SWITCHES = ("norm", "residual", "decay", "relax_kappa", "attention", "reaction", *_DIFFUSION_SETTINGS)


def derived_seed(seed: int, stream: int) -> int:
    """A well-mixed 64-bit seed for one purpose of a run seeded with ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, dtype=np.uint64)[0])


def sinusoidal_positions(tokens: int, dim: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The Transformer's sin/cos position signal, shape (tokens, dim), entries in [−1, 1]."""
    position = torch.arange(tokens, dtype=torch.float64).unsqueeze(-1)
    frequency = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    signal = torch.zeros(tokens, dim, dtype=torch.float64)
    signal[:, 0::2] = torch.sin(position * frequency)
    signal[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return signal.to(dtype)


def layernorm_manifold(u: torch.Tensor) -> torch.Tensor:
    """Each token mapped to {v : mean(v) = 0, ‖v‖² = d}: LayerNorm with no affine and ε = 0."""
    centred = u - u.mean(-1, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True))


def tangent_projection(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """P_u w = w − mean(w) − ⟨w, v⟩/‖v‖² v per token, v = u − mean(u).

    The result has zero mean and is orthogonal to v, so a flow along it keeps each token's
    mean and centred norm: the tangent space of the LayerNorm manifold at u.
    """
    v = u - u.mean(-1, keepdim=True)
    w = w - w.mean(-1, keepdim=True)
    # clamp: a constant token (v = 0) has no radial direction to remove, not a 0/0.
    ratio = (w * v).sum(-1, keepdim=True) / (v * v).sum(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return w - ratio * v


class _Decay:
    """The no-residual term −κ_r u, with its exact flow e^{−κ_r dt}u for splitting methods."""

    def __init__(self, rate: float):
        self.rate = rate

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return -self.rate * u

    def flow(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        return u * math.exp(-self.rate * dt)


class _Projected:
    """A part of a tangent-flow field: P_u applied to one term."""

    def __init__(self, field: Field):
        self.field = field

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return tangent_projection(u, self.field(t, u))


class _Masked:
    """A part of a padded field: padded tokens do not move."""

    def __init__(self, field: Field, valid: torch.Tensor):
        self.field, self.valid = field, valid.unsqueeze(-1)

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return torch.where(self.valid, self.field(t, u), 0.0)


def _make_identity(attention: nn.Module) -> None:
    """Q = K = V = W_O = I (biases 0), frozen: the softmax attention of the interacting-particle models."""
    dim = attention.dim
    eye = torch.eye(dim, dtype=torch.float64)
    with torch.no_grad():
        attention.qkv.weight.copy_(torch.cat([eye, eye, eye]))
        attention.out.weight.copy_(eye)
        for layer in (attention.qkv, attention.out):
            if layer.bias is not None:
                layer.bias.zero_()
    attention.requires_grad_(False)


class _ScalarLinear:
    """A = shift·I, the linear part of a field without diffusion, for IMEX/exponential methods.

    Its eigenbasis is any basis, so the spectral transforms are the identity and, unlike a
    Laplacian's, need no fixed number of tokens.
    """

    def __init__(self, shift: float):
        self.shift = float(shift)

    def __call__(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.shift * u

    def multiplier(self, like: torch.Tensor) -> torch.Tensor:
        return torch.full((), self.shift, dtype=like.dtype, device=like.device)

    def to_spectral(self, u: torch.Tensor) -> torch.Tensor:
        return u

    def from_spectral(self, c: torch.Tensor) -> torch.Tensor:
        return c

    def flow(self, u: torch.Tensor, dt: float) -> torch.Tensor:
        return u * math.exp(self.shift * dt)


class MasterPDE(nn.Module):
    """du/dt = G(u) (residual) or G(u) − u (no residual), G per the LayerNorm mode of DESIGN §3.

    - ``pre``: G = Dif(u) + Att(LN₁u) + Rea(LN₂u)
    - ``post``: G = Φ(u); pass ``model.projection`` (u ↦ LN₂u) to ``solvers.solve(project=...)``
    - ``tangent``: du/dt = P_u(G − [no residual] u), G = Φ(u): the flow stays on the LN manifold
    - ``relax``: G = Φ(u) − κ(u − LN₁u)
    - ``none``: G = Φ(u)
    with Φ = Dif + Att + Rea. Switched-off terms are never evaluated, but their modules exist:
    every term draws its weights from its own stream of ``cfg.seed``, so turning attention off
    leaves the reaction's weights unchanged. Weights are N(0, init_scale²/fan_in), biases 0.
    ``forward`` is written for the hot path: no host syncs and no N×N softmax matrix.
    """

    def __init__(self, cfg: PDEConfig):
        super().__init__()
        self.cfg = cfg
        with torch.random.fork_rng(devices=[]):  # module constructors draw from the global RNG
            self.attention = self._seeded(_STREAM_ATTENTION, self._make_attention)
            if cfg.attention_kind == "softmax" and cfg.attention_matrix == "identity":
                _make_identity(self.attention)
            self.reaction = self._seeded(_STREAM_REACTION, self._make_reaction)
        self.diffusion = Diffusion(
            cfg.tokens, cfg.dim, cfg.diffusion_table(), scales=cfg.diffusion_scales, bc=cfg.bc,
            spacing=cfg.spacing, learnable=cfg.learnable_diffusion, dtype=torch.float64,
        )
        self.ln1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps, dtype=torch.float64)
        self.ln2 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps, dtype=torch.float64)
        # PDE Diffusion Layers inside the sub-layers, by position (see ``add_inserts``); empty by default.
        self.inserts = nn.ModuleDict()
        # Built in float64 on the CPU, then cast: the same seed gives the same weights on every
        # device, rounded to the target dtype.
        self.to(device=cfg.device, dtype=cfg.torch_dtype)
        self._valid: torch.Tensor | None = None
        self._has_grid = cfg.has_diffusion  # states must then have cfg.tokens tokens (read by check_state)
        self._fields = self._build_fields()

    # -- construction --------------------------------------------------------------------------
    def _make_attention(self) -> nn.Module:
        cfg = self.cfg
        if cfg.attention_kind == "symmetric":
            return SymmetricAttention(
                cfg.dim, cfg.heads, temperature=cfg.beta, identity=cfg.attention_matrix == "identity"
            )
        return SoftmaxAttention(cfg.dim, cfg.heads, temperature=cfg.beta, causal=cfg.causal, bias=cfg.attention_bias)

    def _make_reaction(self) -> nn.Module:
        cfg = self.cfg
        kind = GradientReaction if cfg.reaction_kind == "gradient" else MLPReaction
        return kind(cfg.dim, cfg.hidden_dim, cfg.activation)

    def _seeded(self, stream: int, make: Callable[[], nn.Module]) -> nn.Module:
        # The constructor's default init (drawn from the forked global RNG) is overwritten below.
        with torch.device("cpu"):
            module = make().to(torch.float64)
        generator = torch.Generator().manual_seed(derived_seed(self.cfg.seed, stream))
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                std = self.cfg.init_scale / math.sqrt(layer.in_features)
                with torch.no_grad():
                    nn.init.normal_(layer.weight, 0.0, std, generator=generator)
                    if layer.bias is not None:
                        layer.bias.zero_()
        return module

    def _build_fields(self) -> dict[str, Field]:
        """The active terms in summation order; rebuilt when the padding mask changes."""
        cfg, fields = self.cfg, {}
        shift = 0.0 if cfg.residual else -cfg.decay
        if self._valid is None and cfg.has_diffusion:
            fields["diffusion"] = self.diffusion.linear(shift)  # −u folded in: exact flow for splitting
        else:
            if cfg.has_diffusion:
                fields["diffusion"] = self._masked_diffusion_term
            if not cfg.residual:
                fields["residual"] = _Decay(cfg.decay)
        if cfg.attention:
            fields["attention"] = self._attention_term
        if cfg.reaction:
            fields["reaction"] = self._reaction_term
        if cfg.norm == "relax":
            fields["stabilizer"] = self._stabilizer_term
        return fields

    # -- the sub-layers: the one place that says what each term sees and returns ----------------
    def add_inserts(self, inserts: dict[str, nn.Module]) -> None:
        """Puts PDE Diffusion Layers at in-block positions (``IN_BLOCK_POSITIONS``); they become part of the field."""
        for name, layer in inserts.items():
            if name not in IN_BLOCK_POSITIONS:
                raise ValueError(f"{name!r} is not an in-block position; choose from {', '.join(IN_BLOCK_POSITIONS)}")
            if name == "before_norm" and self.cfg.norm not in ("pre", "post"):
                raise ValueError(f"diffusion position 'before_norm' needs a LayerNorm; norm={self.cfg.norm!r} has none")
            self.inserts[name] = layer

    def _insert(self, position: str, u: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.inserts[position](u, mask) if position in self.inserts else u

    def branch_input(self, name: str, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the module of sub-layer ``name`` ("attention" or "reaction") is applied to at state u.

        Under ``pre`` its LayerNorm (LN₁ for attention, LN₂ for the FFN) of the stream, after a
        ``before_norm`` diffusion layer; the attention's input then passes ``before_attention``.
        """
        if name not in ("attention", "reaction"):
            raise ValueError(f"branch_input: {name!r} has no module input; use 'attention' or 'reaction'")
        x = u
        if self.cfg.norm == "pre":
            x = (self.ln1 if name == "attention" else self.ln2)(self._insert("before_norm", x, mask))
        return self._insert("before_attention", x, mask) if name == "attention" else x

    def branch(self, name: str, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """X of sub-layer ``name`` at state u: the block adds it as u + h·X, the PDE sums the X's.

        "diffusion" D⊙L u (the mask's valid runs are the domain), "attention" Att of its input,
        then ``after_attention``; "reaction" Rea of its input, then ``after_ffn``; "stabilizer"
        the relax term −κ(u − LN₁u).
        """
        if name == "attention":
            return self._insert("after_attention", self.attention(self.branch_input(name, u, mask), mask), mask)
        if name == "reaction":
            return self._insert("after_ffn", self.reaction(self.branch_input(name, u, mask)), mask)
        if name == "diffusion":
            return self.diffusion(u, mask)
        if name == "stabilizer":
            return -self.cfg.relax_kappa * (u - self.ln1(u))
        raise ValueError(f"unknown branch {name!r}; choose from {', '.join(BRANCHES)}")

    def normalize(self, ln: nn.Module, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The post-LN projection u ↦ LN(u) (after a ``before_norm`` layer), padded tokens untouched."""
        normed = ln(self._insert("before_norm", u, mask))
        return normed if mask is None else torch.where(mask.unsqueeze(-1), normed, u)

    def _masked_diffusion_term(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.branch("diffusion", u, self._valid)

    def _attention_term(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.branch("attention", u, self._valid)

    def _reaction_term(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.branch("reaction", u, self._valid)

    def _stabilizer_term(self, t: Any, u: torch.Tensor) -> torch.Tensor:
        return self.branch("stabilizer", u, self._valid)

    # -- the field -------------------------------------------------------------------------------
    def check_state(self, u: Any) -> None:
        """A ConfigError (one line) unless u is a (B, N, d) tensor in the module's dtype, on its device.

        N must be ``cfg.tokens`` when the field has a token grid (diffusion) and the padding mask's
        length when one is set. Only attributes are read: cheap enough for every call of ``forward``.
        """
        if not isinstance(u, torch.Tensor):
            raise ConfigError(f"the state must be a torch.Tensor of shape (batch, tokens, dim), not {type(u).__name__}")
        cfg, reference = self.cfg, self.ln1.weight
        if u.ndim != 3 or u.shape[-1] != cfg.dim:
            raise ConfigError(f"the state has shape {tuple(u.shape)}; MasterPDE takes (batch, tokens, dim={cfg.dim})")
        if self._valid is not None and tuple(u.shape[:2]) != tuple(self._valid.shape):
            raise ConfigError(f"the state has shape {tuple(u.shape)}; the padding mask has {tuple(self._valid.shape)}")
        if self._has_grid and u.shape[1] != cfg.tokens:
            raise ConfigError(f"the state has {u.shape[1]} tokens but the diffusion grid has tokens={cfg.tokens}")
        if u.dtype != reference.dtype:
            raise ConfigError(f"the state is {u.dtype} but the module is {reference.dtype}; convert one to the other")
        if u.device != reference.device:
            raise ConfigError(f"the state is on {u.device} but the module is on {reference.device}; use u.to(...)")

    def forward(self, t: float | torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """du/dt at state u of shape (B, N, d); t is accepted for the solver and not used (autonomous)."""
        self.check_state(u)
        velocity = None
        for field in self._fields.values():
            term = field(t, u)
            velocity = term if velocity is None else velocity + term
        if velocity is None:
            velocity = torch.zeros_like(u)
        if self.cfg.norm == "tangent":
            velocity = tangent_projection(u, velocity)
        if self._valid is not None:
            velocity = torch.where(self._valid.unsqueeze(-1), velocity, 0.0)
        return velocity

    @property
    def projection(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """For ``norm="post"``: u ↦ LN₂(u) (padded tokens untouched), to apply after every step; else None."""
        return self._project if self.cfg.norm == "post" else None

    def _project(self, u: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.ln2, u, self._valid)

    def parts(self) -> dict[str, Field]:
        """The field as ordered named parts whose sum is ``forward``, for lie/strang splitting.

        Without a mask and off the tangent mode, "diffusion" is a ``DiagonalLinear`` (D⊙L, minus
        I without residual) and "residual" an exact decay, so splitting advances them exactly.
        Under ``tangent`` each part is projected; under a mask each part leaves padding still.
        """
        fields = dict(self._fields) or {"zero": lambda t, u: torch.zeros_like(u)}
        if self.cfg.norm == "tangent":
            fields = {name: _Projected(field) for name, field in fields.items()}
        if self._valid is not None:
            fields = {name: _Masked(field, self._valid) for name, field in fields.items()}
        return fields

    def semilinear(self) -> SemilinearField:
        """f = A u + N(u) with A = D⊙L (− I without residual) for IMEX/exponential methods."""
        if self._valid is not None:
            raise ValueError(
                "semilinear() needs the full token grid: spectral methods cannot honour a padding mask; "
                "clear it with set_padding_mask(None) or use an explicit method"
            )
        cfg = self.cfg
        shift = 0.0 if cfg.residual else -cfg.decay
        if cfg.has_diffusion:
            linear = self.diffusion.linear(shift)
        else:
            linear = _ScalarLinear(shift)  # no grid: the field then acts on sequences of any length
        if cfg.norm == "tangent":
            return SemilinearField(linear, lambda t, u: self(t, u) - linear(t, u))
        rest = [f for name, f in self._fields.items() if name not in ("diffusion", "residual")]

        def nonlinear(t: Any, u: torch.Tensor) -> torch.Tensor:
            total = torch.zeros_like(u)
            for field in rest:
                total = total + field(t, u)
            return total

        return SemilinearField(linear, nonlinear)

    # -- padding ---------------------------------------------------------------------------------
    @property
    def padding_mask(self) -> torch.Tensor | None:
        """The (B, N) bool mask of valid tokens in use, or None."""
        return self._valid

    def set_padding_mask(self, mask: torch.Tensor | None) -> None:
        """Use a (B, N) bool mask of valid tokens (right padding, at least one valid per row).

        N is ``cfg.tokens``; a field without diffusion has no token grid and takes any N.

        Attention ignores padded keys, diffusion reflects at each sequence's last valid token,
        and padded tokens get zero velocity. Checked here, once, so the hot path need not.
        """
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.ndim != 2:
                raise ValueError("padding mask must be a (batch, tokens) bool tensor of valid tokens")
            if mask.shape[1] != self.cfg.tokens and self.cfg.has_diffusion:
                raise ValueError(f"padding mask has {mask.shape[1]} tokens but the model has tokens={self.cfg.tokens}")
            lengths = mask.sum(-1, keepdim=True)
            if not bool((lengths >= 1).all()):
                raise ValueError("padding mask has a sequence with no valid token")
            prefix = torch.arange(mask.shape[1], device=mask.device) < lengths
            if not torch.equal(prefix, mask):
                raise ValueError("padding mask must be right padding: each row a run of True then only False")
            mask = mask.to(torch.device(self.cfg.device)).clone()
        self._valid = mask
        self._fields = self._build_fields()

    @contextmanager
    def masked(self, mask: torch.Tensor | None) -> Iterator[MasterPDE]:
        """``with model.masked(mask): ...`` uses ``mask`` inside the block and restores the previous one."""
        previous = self._valid
        self.set_padding_mask(mask)
        try:
            yield self
        finally:
            self._valid = previous
            self._fields = self._build_fields()

    # -- initial condition -----------------------------------------------------------------------
    def initial_state(self, batch: int, *, seed: int | None = None) -> torch.Tensor:
        """Seeded embeddings u(x, 0), shape (batch, tokens, dim), on the model's device and dtype.

        Entries are i.i.d. N(0, embed_scale²) (a token's norm ≈ embed_scale·√d), plus the
        sinusoidal position signal when ``cfg.positional``. ``seed`` defaults to ``cfg.seed``
        and uses its own stream, independent of the weights. Under ``tangent`` the state is
        put on the LayerNorm manifold exactly; under ``post`` it is passed through the projection.
        """
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch={batch!r} must be an integer >= 1")
        cfg = self.cfg
        stream_seed = derived_seed(cfg.seed if seed is None else seed, _STREAM_INITIAL_STATE)
        generator = torch.Generator().manual_seed(stream_seed)
        u = cfg.embed_scale * torch.randn(batch, cfg.tokens, cfg.dim, generator=generator, dtype=torch.float64)
        if cfg.positional:
            u = u + sinusoidal_positions(cfg.tokens, cfg.dim)
        if cfg.norm == "tangent":
            u = layernorm_manifold(u)
        reference = self.ln1.weight  # the module's dtype and device, also after .double() or .to(...)
        u = u.to(device=reference.device, dtype=reference.dtype)
        if cfg.norm == "post":
            with torch.no_grad():
                u = self._project(u)
        return u

    # -- energy ----------------------------------------------------------------------------------
    def _token_sum(self, per_token: torch.Tensor) -> torch.Tensor:
        if self._valid is not None:
            per_token = torch.where(self._valid, per_token, 0.0)
        return per_token.sum(-1)

    def energy_parts(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term's potential at u, shape (B,) each, over valid tokens; only terms that have one.

        "diffusion" E_D, "attention" E_A (symmetric kind), "reaction" ΣΨ (gradient kind),
        "residual" ½κ_r‖u‖² (without residual), "stabilizer" κ Σ_tokens (½‖u‖² − √d‖u − ū‖) (relax).
        The potentials are evaluated at u itself, also under ``pre`` (whose terms see LN(u)).
        """
        cfg, parts = self.cfg, {}
        if cfg.has_diffusion:
            parts["diffusion"] = self.diffusion.energy(u, self._valid)
        if cfg.attention and cfg.attention_kind == "symmetric":
            parts["attention"] = self.attention.energy(u, self._valid)
        if cfg.reaction and cfg.reaction_kind == "gradient":
            parts["reaction"] = self._token_sum(self.reaction.potential(u))
        if not cfg.residual:
            parts["residual"] = 0.5 * cfg.decay * self._token_sum(u.pow(2).sum(-1))
        if cfg.norm == "relax":
            centred = (u - u.mean(-1, keepdim=True)).norm(dim=-1)
            per_token = 0.5 * u.pow(2).sum(-1) - math.sqrt(cfg.dim) * centred
            parts["stabilizer"] = cfg.relax_kappa * self._token_sum(per_token)
        return parts

    def energy(self, u: torch.Tensor) -> torch.Tensor:
        """E(u) of DESIGN §2, shape (B,): a Lyapunov function exactly when ``energy_is_exact``."""
        total = u.new_zeros(u.shape[0])
        for value in self.energy_parts(u).values():
            total = total + value
        return total

    @property
    def energy_is_exact(self) -> bool:
        """True when du/dt = −∇E (norm none/relax) or −P_u∇E (tangent), so E never increases.

        Needs every active term to be a gradient (diffusion; symmetric attention; gradient
        reaction) and norm "none" or "tangent", or "relax" with ε = 0 and an identity LN₁ affine.
        """
        cfg = self.cfg
        if cfg.attention and cfg.attention_kind != "symmetric":
            return False
        if cfg.reaction and cfg.reaction_kind != "gradient":
            return False
        if cfg.norm in ("none", "tangent"):
            return True
        if cfg.norm == "relax" and cfg.ln_eps == 0.0:
            with torch.no_grad():
                return bool((self.ln1.weight == 1).all()) and bool((self.ln1.bias == 0).all())
        return False

    def norm_energy(self, u: torch.Tensor) -> torch.Tensor:
        """V(u) = ½‖u‖² over valid tokens, shape (B,): reported for every configuration."""
        return 0.5 * self._token_sum(u.pow(2).sum(-1))

    # -- switches on existing weights -------------------------------------------------------------
    def switched(self, **changes: Any) -> MasterPDE:
        """A MasterPDE with the config's switches changed that uses this one's very modules (no copies).

        ``changes`` may set the switches of the design (``SWITCHES``: norm, residual, decay,
        relax_kappa, the attention/reaction on-off flags, and the diffusion term's settings); the
        attention, reaction, LayerNorms and in-block diffusion layers are shared, so training or
        editing one model changes the other. The diffusion term is shared while its settings stay.
        """
        refused = sorted(set(changes) - set(SWITCHES))
        if refused:
            raise ConfigError(
                f"switched() cannot change {refused[0]!r}: it would need new weights; it changes {', '.join(SWITCHES)}"
            )
        cfg = self.cfg.replace(**changes)
        twin = MasterPDE(cfg)
        twin.attention, twin.reaction, twin.ln1, twin.ln2 = self.attention, self.reaction, self.ln1, self.ln2
        twin.inserts = self.inserts
        if all(getattr(cfg, name) == getattr(self.cfg, name) for name in _DIFFUSION_SETTINGS):
            twin.diffusion = self.diffusion
        twin._fields = twin._build_fields()  # the diffusion field holds the module it was built from
        return twin

    def save(self, directory: str | Path) -> Path:
        """Writes this model to ``directory`` (model.toml + model.safetensors); ``pdesim.load`` reads it back."""
        from .persist import save  # persist imports this module

        return save(self, directory)

    def extra_repr(self) -> str:
        cfg = self.cfg
        return f"tokens={cfg.tokens}, dim={cfg.dim}, norm={cfg.norm!r}, residual={cfg.residual}"
