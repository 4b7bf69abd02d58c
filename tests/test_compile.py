"""``solve(..., compile=True)``: the compiled fixed step gives the eager states to round-off, reports
its compile time, and falls back to eager with one warning line where compiling fails.

Compiling with inductor on CPU takes seconds, so one tiny system (1, 8) is compiled once.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import solvers
from solvers import compiled


def _field():
    weights = torch.linspace(-1.0, 1.0, 64, dtype=torch.float64).reshape(8, 8).sin() * 0.5

    def f(t, u):
        return torch.tanh(u @ weights) * (1 + t) - 0.1 * u

    return f


def _u0() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 8, dtype=torch.float64).reshape(1, 8)


def test_compiled_rk4_gives_the_eager_states_to_round_off_and_pays_compile_time_once():
    f, u0 = _field(), _u0()
    settings = dict(method="rk4", dt=0.01, t_eval=[0.0, 0.33, 1.0])
    with torch.no_grad():
        eager = solvers.solve(f, u0, (0.0, 1.0), **settings)
        first = solvers.solve(f, u0, (0.0, 1.0), compile=True, **settings)
        again = solvers.solve(f, u0, (0.0, 2.0), method="rk4", dt=0.01, compile=True)
        eager_again = solvers.solve(f, u0, (0.0, 2.0), method="rk4", dt=0.01)
    torch.testing.assert_close(first.u, eager.u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(again.u, eager_again.u, rtol=1e-12, atol=1e-14)
    assert first.t.tolist() == eager.t.tolist() == [0.0, 0.33, 1.0]
    assert first.stats["nfe"] == eager.stats["nfe"] == 4 * 100  # rk4: 4 per step, the probe step not counted
    assert first.stats["compiled"] is True and again.stats["compiled"] is True
    # the first solve compiled; the second (same field kind, shape, dtype) reused the compiled step
    assert first.stats["compile_time"] > 0.05
    assert again.stats["compile_time"] < first.stats["compile_time"] / 10
    assert "compile_time" not in eager.stats


def test_a_failing_compile_backend_falls_back_to_eager_with_one_warning_line(monkeypatch):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working C compiler found\n(details on further lines)")

    monkeypatch.setattr(compiled, "BACKEND", broken_backend)
    monkeypatch.setattr(compiled, "_unavailable", {})
    f, u0 = _field(), _u0()
    with torch.no_grad():
        eager = solvers.solve(f, u0, (0.0, 1.0), method="heun", dt=0.1)
        with pytest.warns(compiled.CompileUnavailableWarning) as caught:
            fallback = solvers.solve(f, u0, (0.0, 1.0), method="heun", dt=0.1, compile=True)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "\n" not in message
        assert message.startswith("compile=True is unavailable here (") and "no working C compiler" in message
        assert message.endswith(": running eager")
        # the failure is remembered: a second solve warns again without trying to compile
        with pytest.warns(compiled.CompileUnavailableWarning, match="no working C compiler"):
            solvers.solve(f, u0, (0.0, 1.0), method="heun", dt=0.1, compile=True)
    assert torch.equal(fallback.u, eager.u)
    assert fallback.stats["nfe"] == eager.stats["nfe"] == 20
    assert fallback.stats["compiled"] is False and fallback.stats["compile_time"] is None


def test_compile_with_an_adaptive_method_warns_that_it_runs_eager():
    f, u0 = _field(), _u0()
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = solvers.solve(f, u0, (0.0, 1.0), method="dopri5", compile=True)
        plain = solvers.solve(f, u0, (0.0, 1.0), method="dopri5")
    expected = "compile=True covers fixed-step methods; 'dopri5' is adaptive: running eager"
    assert [str(w.message) for w in caught] == [expected]
    assert torch.equal(sol.u, plain.u)


def test_a_bad_field_is_still_one_line_before_anything_compiles(monkeypatch):
    def must_not_compile(graph, example_inputs):
        raise AssertionError("compiled before the field was checked")

    monkeypatch.setattr(compiled, "BACKEND", must_not_compile)
    monkeypatch.setattr(compiled, "_unavailable", {})
    with pytest.raises(solvers.SolverInputError, match="returned shape"):
        solvers.solve(lambda t, u: u[..., :4], _u0(), (0.0, 1.0), method="rk4", dt=0.1, compile=True)


def test_a_compiled_exponential_step_is_one_graph_without_breaks_and_gives_the_eager_states(monkeypatch):
    """etd-rk2 caches its factors per float(dt) when eager; traced, dt is a tensor and the factors join the graph."""
    import pdesim

    model = pdesim.MasterPDE(pdesim.PDEConfig(tokens=16, dim=8, heads=2, diffusion=0.5, seed=0)).double()
    u0 = model.initial_state(batch=2)
    stepper = solvers.steppers.Semilinear("etd-rk2")
    t, h = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64)
    with torch.no_grad():
        explained = torch._dynamo.explain(compiled._step)(stepper, model.semilinear(), None, t, u0, h)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")  # traced as inductor would be, without its codegen
    monkeypatch.setattr(compiled, "_unavailable", {})
    with torch.no_grad():
        eager = solvers.solve(model, u0, (0.0, 1.0), method="etd-rk2", dt=0.1)
        traced = solvers.solve(model, u0, (0.0, 1.0), method="etd-rk2", dt=0.1, compile=True)
    assert traced.stats["compiled"] is True
    torch.testing.assert_close(traced.u, eager.u, rtol=1e-12, atol=1e-12)


def test_several_steps_per_compiled_call_give_the_eager_states_counts_and_save_points():
    f, u0 = _field(), _u0()
    settings = dict(method="rk4", dt=0.01, t_eval=[0.0, 0.37, 0.5, 1.0])  # 37, 13, 50 steps: blocks and tails
    with torch.no_grad():
        eager = solvers.solve(f, u0, (0.0, 1.0), **settings)
        blocks = solvers.solve(f, u0, (0.0, 1.0), compile=True, compile_steps=8, **settings)
    torch.testing.assert_close(blocks.u, eager.u, rtol=1e-12, atol=1e-14)
    assert blocks.t.tolist() == eager.t.tolist()
    assert blocks.stats["nfe"] == eager.stats["nfe"] == 4 * 100
    assert blocks.stats["compile_steps"] == 8 and blocks.stats["compiled"] is True


@pytest.mark.parametrize("steps", [1, 4])
def test_a_compiled_run_stops_at_a_blowup_and_a_non_finite_state_where_the_eager_run_does(steps):
    """The guard reads the max |u| each compiled call reduced itself, nan included (inductor's own reduction)."""
    u0 = _u0()
    grow = lambda t, u: 3.0 * u  # noqa: E731
    with torch.no_grad():
        eager = solvers.solve(grow, u0, (0.0, 10.0), method="rk4", dt=0.01, blowup=1e3)
        fast = solvers.solve(grow, u0, (0.0, 10.0), method="rk4", dt=0.01, blowup=1e3, compile=True,
                             compile_steps=steps)
    assert fast.stats["compiled"] is True
    assert (str(fast.status), str(eager.status)) == ("blowup", "blowup")
    assert fast.t_event == pytest.approx(eager.t_event, rel=1e-12) and fast.t_event == pytest.approx(2.302585, rel=1e-6)
    torch.testing.assert_close(fast.u[-1], eager.u[-1], rtol=1e-12, atol=0)

    def breaks_at_half(t, u):
        late = torch.as_tensor(t) > 0.5  # t is a number eager, a 0-d tensor compiled
        return u * torch.where(late, torch.tensor(float("nan"), dtype=u.dtype), torch.tensor(1.0, dtype=u.dtype))

    with torch.no_grad():
        eager = solvers.solve(breaks_at_half, u0, (0.0, 1.0), method="euler", dt=0.01)
        fast = solvers.solve(breaks_at_half, u0, (0.0, 1.0), method="euler", dt=0.01, compile=True, compile_steps=steps)
    assert (str(fast.status), str(eager.status)) == ("nonfinite", "nonfinite")
    assert fast.t.tolist() == eager.t.tolist() and bool(torch.isfinite(fast.u).all())
    torch.testing.assert_close(fast.u, eager.u, rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 1000])
def test_compile_steps_outside_1_to_256_is_one_line(bad):
    with pytest.raises(solvers.SolverInputError, match=r"compile_steps must be an integer in 1\.\.256"):
        solvers.solve(_field(), _u0(), (0.0, 1.0), method="rk4", dt=0.1, compile=True, compile_steps=bad)


def test_every_new_shape_in_one_process_is_compiled_not_dropped_to_eager_past_the_recompile_limit(monkeypatch):
    """dynamo stops compiling a function after 8 graphs; each prepared signature has a function of its own."""
    graphs = []

    def counting_backend(graph, example_inputs):
        graphs.append(tuple(example_inputs[0].shape) if example_inputs else ())
        return graph.forward

    monkeypatch.setattr(compiled, "BACKEND", counting_backend)
    monkeypatch.setattr(compiled, "_unavailable", {})
    f = _field()
    with torch.no_grad():
        for rows in range(1, 13):  # 12 shapes, 2 graphs each (1 and 4 steps per call)
            u0 = _u0().expand(rows, 8).contiguous()
            sol = solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=0.125, compile=True, compile_steps=4)
            eager = solvers.solve(f, u0, (0.0, 1.0), method="rk4", dt=0.125)
            torch.testing.assert_close(sol.u, eager.u, rtol=1e-12, atol=1e-14)
    assert len(graphs) >= 24


def test_gradients_through_several_compiled_steps_per_call_equal_eager_backprop():
    weights = (torch.linspace(-1.0, 1.0, 64, dtype=torch.float64).reshape(8, 8).sin() * 0.5).requires_grad_()

    def f(t, u):
        return torch.tanh(u @ weights) - 0.1 * u

    grads = []
    for options in ({}, {"compile": True, "compile_steps": 4}):
        sol = solvers.solve(f, _u0(), (0.0, 1.0), method="rk4", dt=0.05, **options)
        grads.append(torch.autograd.grad(sol.u[-1].pow(2).sum(), weights)[0])
    assert sol.stats["compiled"] is True
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-14)
