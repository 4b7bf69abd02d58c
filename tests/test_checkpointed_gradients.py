"""Gradients through fixed-grid solves with ``adjoint=True`` (segments of ⌈√n⌉ steps recomputed in
the backward pass) equal plain backpropagation through the same steps, to round-off.

The memory claim (O(√n) states) is measured by ``python -m bench`` (P7), not asserted here.
"""

from __future__ import annotations

import math

import pytest
import torch

import solvers


class _Field(torch.nn.Module):
    """du/dt = tanh(u W + b) − u/2: a small field with parameters to differentiate."""

    def __init__(self, dim: int = 6):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.w = torch.nn.Parameter(torch.randn(dim, dim, generator=g, dtype=torch.float64) / math.sqrt(dim))
        self.b = torch.nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64) * 0.1)

    def forward(self, t: float, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u @ self.w + self.b) - 0.5 * u


def _gradients(adjoint: bool, **kwargs) -> tuple[solvers.Solution, list[torch.Tensor]]:
    field = _Field()
    u0 = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(2, 6).requires_grad_(True)
    sol = solvers.solve(field, u0, kwargs.pop("t_span", (0.0, 2.0)), adjoint=adjoint, **kwargs)
    loss = (sol.u**2).sum() + sol.u[-1].sin().sum()
    grads = torch.autograd.grad(loss, [u0, field.w, field.b])
    return sol, list(grads)


@pytest.mark.parametrize(
    "settings",
    [
        dict(method="rk4", dt=0.02),  # 100 steps, no save points between: segments of 10
        dict(method="rk4", dt=0.02, t_eval=[0.0, 0.3, 0.7, 2.0]),  # save points cut the segments
        dict(method="midpoint", dt=0.001),  # 2000 steps: segments of 45
        dict(method="heun", dt=0.05, t_eval=torch.linspace(0, 2, 41)),  # every step saved
    ],
    ids=["rk4-100-steps", "rk4-save-points", "midpoint-2000-steps", "heun-every-step-saved"],
)
def test_checkpointed_gradients_equal_plain_backprop_to_round_off(settings):
    plain_sol, plain = _gradients(False, **dict(settings))
    ckpt_sol, ckpt = _gradients(True, **dict(settings))
    assert torch.equal(plain_sol.u, ckpt_sol.u)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    assert ckpt_sol.stats["nfe"] == plain_sol.stats["nfe"]


def test_segments_hold_about_the_square_root_of_the_step_count():
    sol, _ = _gradients(True, method="rk4", dt=0.002)  # 1000 steps
    assert sol.stats["accepted"] == 1000
    assert sol.stats["checkpoint_segment"] == 32  # ⌈√1000⌉
    with torch.no_grad():
        no_grad_sol = solvers.solve(_Field(), torch.ones(2, 6, dtype=torch.float64), (0.0, 2.0), dt=0.002, adjoint=True)
    assert "checkpoint_segment" not in no_grad_sol.stats  # nothing to checkpoint without a graph


def test_a_blowup_in_a_later_segment_gives_the_same_state_and_gradient_as_plain_backprop():
    def grow(t, u, rate):
        return rate * u

    def run(adjoint: bool) -> tuple[solvers.Solution, torch.Tensor]:
        rate = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        u0 = torch.ones(3, dtype=torch.float64)
        sol = solvers.solve(
            lambda t, u: grow(t, u, rate), u0, (0.0, 5.0), method="rk4", dt=0.01, blowup=math.exp(3), adjoint=adjoint
        )
        (grad,) = torch.autograd.grad(sol.u[-1].sum(), [rate])
        return sol, grad

    plain_sol, plain_grad = run(False)
    ckpt_sol, ckpt_grad = run(True)
    assert ckpt_sol.status == plain_sol.status == "blowup"
    assert ckpt_sol.t_event == pytest.approx(3.0, abs=1e-6)
    assert ckpt_sol.t_event == plain_sol.t_event
    torch.testing.assert_close(ckpt_sol.u, plain_sol.u, rtol=1e-14, atol=0)
    # d/d(rate) of 3 e^{rate t} at the event: the event time itself depends on rate (the stop is
    # located, then the state there differentiated through the steps): equal either way
    torch.testing.assert_close(ckpt_grad, plain_grad, rtol=1e-12, atol=0)


class _Diffusion:
    """du/dt = D u_xx + sin(u) on 16 points (Neumann) with a learnable D: semilinear and split."""

    def __init__(self, diffusion: torch.Tensor):
        self.linear = solvers.DiagonalLinear([solvers.Laplacian1D(16, dim=-1)], lambda: [diffusion])

    def __call__(self, t, u):
        return self.linear(t, u) + torch.sin(u)

    def semilinear(self) -> solvers.SemilinearField:
        return solvers.SemilinearField(self.linear, lambda t, u: torch.sin(u))

    def parts(self) -> dict:
        return {"diffusion": self.linear, "sine": lambda t, u: torch.sin(u)}


@pytest.mark.parametrize("method", ["etd-rk2", "imex-euler", "strang"])
def test_semilinear_and_splitting_methods_checkpoint_to_the_same_gradients(method):
    grads, finals = [], []
    for adjoint in (False, True):
        diffusion = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        u0 = torch.linspace(0.0, 2.0, 32, dtype=torch.float64).reshape(2, 16).cos().requires_grad_(True)
        sol = solvers.solve(_Diffusion(diffusion), u0, (0.0, 1.0), method=method, dt=0.01, adjoint=adjoint)
        grads.append(torch.autograd.grad((sol.u[-1] ** 2).sum(), [diffusion, u0]))
        finals.append(sol.u[-1].detach())
    assert torch.equal(finals[0], finals[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-15)


def test_a_module_field_and_projection_run_graph_free_segments_with_the_same_gradients():
    def run(adjoint: bool) -> tuple[solvers.Solution, list[torch.Tensor], torch.nn.Module, torch.nn.Module]:
        field, norm = _Field(), torch.nn.LayerNorm(6, dtype=torch.float64)
        with torch.no_grad():
            norm.weight.copy_(torch.linspace(0.5, 1.5, 6, dtype=torch.float64))
        u0 = torch.linspace(-1.0, 1.0, 12, dtype=torch.float64).reshape(2, 6)
        sol = solvers.solve(field, u0, (0.0, 1.0), method="rk4", dt=0.01, project=norm, adjoint=adjoint)
        grads = torch.autograd.grad((sol.u[-1] ** 3).sum(), [field.w, field.b, norm.weight, norm.bias])
        return sol, list(grads), field, norm

    plain_sol, plain, _, _ = run(False)
    ckpt_sol, ckpt, _, _ = run(True)
    # the saved states come out of graph-free segments (10 of 10 steps), not out of a per-step graph
    segments = [node for node, _ in ckpt_sol.u.grad_fn.next_functions]
    assert [type(node).__name__ for node in segments] == ["NoneType", "_SegmentBackward"]  # u0, then the steps
    chain, node = 0, segments[1]
    while type(node).__name__ == "_SegmentBackward":
        chain, node = chain + 1, node.next_functions[0][0]
    assert chain == 10 and ckpt_sol.stats["checkpoint_segment"] == 10
    torch.testing.assert_close(ckpt_sol.u, plain_sol.u, rtol=0, atol=0)
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
    assert float(ckpt[2].abs().sum()) > 0  # the projection's own parameters receive their gradient
