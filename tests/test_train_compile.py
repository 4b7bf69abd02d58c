"""``TrainSpec.compile`` / ``pdesim train --compile``: the compiled model trains as the eager one does
(the same losses to float32 round-off), reports its compile time, and where compiling fails warns
once and trains eager. Compiling with inductor on the CPU takes seconds: the models are tiny."""

from __future__ import annotations

import warnings

import pytest
import torch

from pdesim.app import cli
from pdesim.train import TrainSpec, train
from solvers import compiled

TINY = dict(task="listops", seq_len=16, n_train=64, n_eval=32, layers=1, dim=16, heads=2, batch=8, eval_every=3,
            steps=4, log_every=2)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDESIM_CACHE", str(tmp_path_factory.getbasetemp() / "task-cache"))


def _column(outcome, name: str) -> torch.Tensor:
    return torch.tensor([row[name] for row in outcome.rows if name in row], dtype=torch.float64)


@pytest.mark.parametrize("model", ["transformer", "pde"])
def test_a_compiled_model_trains_to_the_eager_losses_and_reports_its_compile_time(model):
    eager = train(TrainSpec(**TINY, model=model))
    compiled_run = train(TrainSpec(**TINY, model=model, compile=True))
    for name in ("loss", "grad_norm", "max_activation"):
        eager_values, compiled_values = _column(eager, name), _column(compiled_run, name)
        finite = torch.isfinite(eager_values)
        torch.testing.assert_close(compiled_values[finite], eager_values[finite], rtol=2e-5, atol=1e-6)
    assert eager.summary["compile_time"] is None
    assert compiled_run.summary["compile_time"] > 0.1  # paid once: the warm-up (transformer) or first solves (pde)


def test_where_compiling_fails_training_warns_once_and_trains_eager(monkeypatch):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working C compiler found")

    monkeypatch.setattr(compiled, "BACKEND", broken_backend)
    monkeypatch.setattr(compiled, "_unavailable", {})
    monkeypatch.setattr(compiled, "_warned", {})
    for model in ("transformer", "pde"):
        eager = train(TrainSpec(**TINY, model=model))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")  # what a user's process shows: each warning once
            fallback = train(TrainSpec(**TINY, model=model, compile=True))
        messages = [str(w.message) for w in caught if issubclass(w.category, compiled.CompileUnavailableWarning)]
        assert len(messages) <= 1 and all("no working C compiler" in m for m in messages)
        assert _column(fallback, "loss").tolist() == _column(eager, "loss").tolist()
        assert fallback.summary["compile_time"] is None


def test_compile_with_adjoint_is_one_line_exit_2(tmp_path, capsys):
    argv = ["train", "--model", "pde", "--adjoint", "--compile", "--steps", "2", "--out", str(tmp_path / "x")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("pdesim: error: compile=True does not combine with adjoint=True (checkpointed segments are "
                   "recomputed eagerly); choose one")
    assert not (tmp_path / "x").exists()
