"""``pdesim train`` can be trusted: bad input is one line, nothing of the user's is lost, every stop keeps a
resumable checkpoint, a resumed run continues the whole history, and the loop's batching of its reads changes
no number."""

import json
import math
import os
import pickle
import signal
import struct
from pathlib import Path

import pytest
import torch
from cli_checks import refused as _refused
from safetensors import safe_open
from safetensors.torch import save_file

from pdesim.app import cli, train_dir
from pdesim.app.train_figures import plan_training_figures, switches
from pdesim.config import ConfigError
from pdesim.train import TrainSpec, check_memory, estimate_memory, learning_rate, train

TINY = dict(task="listops", seq_len=32, n_train=128, n_eval=32, layers=1, dim=16, heads=2, batch=16, eval_every=2)
ARGS = ["train", "--seq-len", "32", "--n-train", "128", "--n-eval", "32", "--layers", "1", "--dim", "16",
        "--heads", "2", "--batch", "16", "--eval-every", "2", "--quiet"]
EXPLODING = dict(TINY, layers=6, norm="none", clip=None, lr=0.1, warmup=0, steps=30)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDESIM_CACHE", str(tmp_path_factory.getbasetemp() / "task-cache"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A genuine checkpoint of TINY at step 2 of 4."""
    folder = tmp_path_factory.mktemp("ckpt")
    train(TrainSpec(**TINY, steps=4, checkpoint_every=2), checkpoint_dir=folder)
    return folder / "step-000002.safetensors"


def _rewritten(source: Path, target: Path, *, drop: str | None = None, metadata: dict | None = None,
               reshape: str | None = None) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = dict(handle.metadata())
    if drop:
        tensors.pop(drop)
    if reshape:
        tensors[reshape] = torch.zeros(3, 3)
    meta.update(metadata or {})
    save_file(tensors, str(target), metadata={k: v for k, v in meta.items() if v is not None})
    return target


def _damaged(kind: str, good: Path, folder: Path) -> Path:
    path = folder / f"{kind}.safetensors"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage header":
        path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"embed.weight": [1.0, 2.0]}))
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    elif kind == "no metadata":
        with safe_open(str(good), framework="pt") as handle:
            save_file({key: handle.get_tensor(key) for key in handle.keys()}, str(path))
    elif kind == "negative step":
        _rewritten(good, path, metadata={"step": "-3"})
    elif kind == "step past --steps":
        _rewritten(good, path, metadata={"step": "9"})
    elif kind == "step not a number":
        _rewritten(good, path, metadata={"step": "two"})
    elif kind == "spec not json":
        _rewritten(good, path, metadata={"train_spec": "{oops"})
    elif kind == "missing parameter":
        _rewritten(good, path, drop="head.weight")
    elif kind == "reshaped parameter":
        _rewritten(good, path, reshape="head.weight")
    elif kind == "half an optimizer state":
        _rewritten(good, path, drop="optim.head.weight.exp_avg")
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("truncated", "is not a readable safetensors file"),
        ("empty", "is empty"),
        ("garbage header", "is not a readable safetensors file"),
        ("pickle", "is not a readable safetensors file"),
        ("directory", "is not a file"),
        ("missing", "does not exist"),
        ("no metadata", "has no step and train spec"),
        ("negative step", "a step count cannot be negative"),
        ("step past --steps", "leaves nothing to train for steps=4"),
        ("step not a number", "malformed metadata"),
        ("spec not json", "malformed metadata"),
        ("missing parameter", "parameter 'head.weight' is missing from the checkpoint"),
        ("reshaped parameter", "parameter 'head.weight' is (3, 3)"),
        ("half an optimizer state", "the optimizer state of 'head.weight' is incomplete"),
    ],
)
def test_an_untrusted_resume_file_is_refused_in_one_line_before_anything_is_written(
    kind, says, checkpoint, tmp_path, capsys, monkeypatch
):
    damaged = _damaged(kind, checkpoint, tmp_path)
    err = _refused([*ARGS, "--steps", "4", "--resume", str(damaged)], capsys, tmp_path, monkeypatch)
    assert says in err


def test_a_checkpoint_of_another_network_is_refused_naming_the_field(checkpoint, tmp_path, capsys, monkeypatch):
    args = [*ARGS, "--steps", "4", "--resume", str(checkpoint)]
    err = _refused([*args[:10], "32", *args[11:]], capsys, tmp_path, monkeypatch)  # --dim 32
    assert "was trained with dim=16 but this run has dim=32" in err


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--dim", "15", "--heads", "4"], "dim=15 is not divisible by heads=4"),
        (["--task", "pathfinder", "--seq-len", "2"], "seq_len=2 must be the square of an image side >= 6"),
        (["--task", "recall", "--seq-len", "3"], "hold no whole number of pairs"),
        (["--seq-len", "100000000"], "this training run needs about"),
        (["--batch", "100000000"], "this training run needs about"),
        (["--dim", "2000000", "--heads", "1"], "this training run needs about"),
        (["--log-every", "0"], "log_every=0 must be an integer >= 1"),
        (["--tensorboard", "--clip", "1", "--no-clip"], "give --clip or --no-clip, not both"),
    ],
)
def test_a_training_run_that_cannot_start_is_one_line_and_leaves_no_runs_directory(
    flags, says, tmp_path, capsys, monkeypatch
):
    assert says in _refused([*ARGS, *flags], capsys, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('seq_len = "32"', "seq_len='32' must be an integer"),
        ("steps = 2.5", "steps=2.5 must be an integer"),
        ('residual = "yes"', "residual='yes' must be true or false"),
        ("adjoint = 1", "adjoint=1 must be true or false"),
        ("clip = true", "clip=True must be a finite number"),
        ("weight_decay = nan", "weight_decay=nan must be a finite number"),
        ("lr = -1.0", "lr=-1.0 must be a finite number > 0"),
        ("task_seed = -1", "task_seed=-1 must be an integer >= 0"),
        ('diffusion_positions = "before_attention"', "diffusion_positions='before_attention' must be a list"),
        ("diffusion_scales = [0]", "diffusion scale=0 must be an integer >= 1"),
        ("solver = 5", "solver=5 cannot run inside training"),
        ('pooling = "max"', "pooling='max' is not one of"),
        ("eval_every = 0", "eval_every=0 must be an integer >= 1"),
        ("log_every = true", "log_every=True must be an integer"),
        ("checkpoint_every = 2.5", "checkpoint_every=2.5 must be an integer"),
        ("batches = 3", "unknown key 'batches' in [train]"),
    ],
)
def test_every_train_config_value_is_type_checked_in_one_line(line, says, tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text(f"[train]\n{line}\n")
    assert says in _refused(["train", "--config", str(config), "--quiet"], capsys, tmp_path, monkeypatch)


def test_the_memory_estimate_grows_with_the_sizes_and_refuses_with_its_figure():
    small, long = estimate_memory(TrainSpec(**TINY)), estimate_memory(TrainSpec(**{**TINY, "seq_len": 320}))
    assert long["data"] == 10 * small["data"]
    assert long["activations"] > 50 * small["activations"]  # the attention weights grow as N²
    check_memory(TrainSpec(**TINY), available=2**30)
    with pytest.raises(ConfigError, match=r"needs about .* GiB \(data .*, model .*, activations .*\), more than"):
        check_memory(TrainSpec(**TINY), available=1000)


def test_train_refuses_to_replace_a_run_without_overwrite_and_never_replaces_foreign_files(tmp_path, capsys):
    out = tmp_path / "run"
    args = [*ARGS, "--steps", "2", "--out", str(out)]
    assert cli.main(args) == 0
    first = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert cli.main(args) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite", "--lr", "0.01"]) == 0
    assert (out / "metrics.csv").read_text() != first
    (out / "notes.txt").write_text("mine")
    assert cli.main([*args, "--overwrite"]) == 2
    assert "holds files pdesim did not write (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"


def test_a_non_finite_step_stops_the_run_with_a_checkpoint_of_the_last_finite_state(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    batched = train(TrainSpec(**EXPLODING, log_every=10), checkpoint_dir=tmp_path / "a")
    stepwise = train(TrainSpec(**EXPLODING, checkpoint_every=1), checkpoint_dir=tmp_path / "b")
    k = batched.summary["first_nonfinite_step"]
    assert batched.summary["status"] == "nonfinite" and 1 < k <= 30
    assert k == stepwise.summary["first_nonfinite_step"]  # reading back every 10 steps finds the same first step
    assert batched.rows[-1]["step"] == k and not math.isfinite(batched.rows[-1]["grad_norm"])
    assert [r["loss"] for r in batched.rows] == [r["loss"] for r in stepwise.rows]
    assert batched.summary["steps_done"] == k - 1
    with safe_open(str(tmp_path / "a" / "last.safetensors"), framework="pt") as last, safe_open(
        str(tmp_path / "b" / f"step-{k - 1:06d}.safetensors"), framework="pt"
    ) as reference:
        assert last.metadata()["step"] == str(k - 1)
        assert set(last.keys()) == set(reference.keys())
        for key in last.keys():  # rewound and replayed to exactly the weights after step k - 1
            assert torch.equal(last.get_tensor(key), reference.get_tensor(key)), key
            assert bool(torch.isfinite(last.get_tensor(key)).all())
    again = train(TrainSpec(**EXPLODING), resume=tmp_path / "a" / "last.safetensors")  # the explosion, replayed
    assert again.summary["first_nonfinite_step"] == k and again.summary["resumed_from"] == k - 1
    assert [r["loss"] for r in again.rows] == [r["loss"] for r in batched.rows]


def test_sigterm_during_training_keeps_the_run_and_a_resumable_checkpoint(tmp_path, capsys, monkeypatch):
    original = train_dir._Progress.__call__

    def terminate_at_step_3(self, row):
        original(self, row)
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_dir._Progress, "__call__", terminate_at_step_3)
    out = tmp_path / "run"
    assert cli.main([*ARGS, "--steps", "40", "--log-every", "1", "--out", str(out)]) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted"] is True
    done = summary["steps_done"]
    assert 3 <= done < 40
    assert (out / "metrics.csv").read_text().count("\n") == 1 + done
    with safe_open(str(out / "checkpoints" / "last.safetensors"), framework="pt") as handle:
        assert handle.metadata()["step"] == str(done)
    monkeypatch.setattr(train_dir._Progress, "__call__", original)
    assert cli.main([*ARGS, "--steps", "40", "--resume", str(out / "checkpoints/last.safetensors"),
                     "--out", str(tmp_path / "resumed")]) == 0
    assert json.loads((tmp_path / "resumed" / "summary.json").read_text())["steps_done"] == 40


def test_a_resumed_run_continues_the_original_runs_metrics_and_summary(tmp_path):
    common = [*ARGS, "--steps", "8", "--checkpoint-every", "4"]
    assert cli.main([*common, "--out", str(tmp_path / "whole")]) == 0
    resume = tmp_path / "whole" / "checkpoints" / "step-000004.safetensors"
    assert cli.main([*common, "--resume", str(resume), "--out", str(tmp_path / "resumed")]) == 0
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert (resumed / "metrics.csv").read_text() == (whole / "metrics.csv").read_text()
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, resumed))
    for key in ("best_val_accuracy", "max_grad_norm", "max_activation", "first_grad_norm", "final_train_loss"):
        assert a[key] == b[key], key
    assert b["resumed_from"] == 4 and b["steps_done"] == 8


def test_no_clip_survives_config_toml_and_train_config_reproduces_the_run(tmp_path):
    assert cli.main([*ARGS, "--steps", "3", "--no-clip", "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--quiet",
                     "--out", str(tmp_path / "b")]) == 0
    from pdesim.app import tomlio

    assert tomlio.load(str(tmp_path / "b" / "config.toml"))["train"]["clip"] is None
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_progress_is_silent_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert cli.main([a for a in ARGS if a != "--quiet"] + ["--steps", "2", "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err == ""


def test_tensorboard_holds_the_same_scalars_as_metrics_csv(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert cli.main([*ARGS, "--steps", "3", "--tensorboard", "--out", str(tmp_path / "r")]) == 0
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    rows = train_dir.read_train_rows(tmp_path / "r")
    assert losses == [(int(r["step"]), pytest.approx(r["loss"], rel=1e-7)) for r in rows]


def test_tensorboard_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    err = _refused([*ARGS, "--steps", "2", "--tensorboard"], capsys, tmp_path, monkeypatch)
    assert "--tensorboard needs the tensorboard package" in err


def test_the_lambda_lr_schedule_is_linear_warm_up_then_cosine_to_a_tenth():
    spec = TrainSpec(**TINY, steps=12, warmup=4, lr=1e-2)
    outcome = train(spec)
    assert [r["lr"] for r in outcome.rows] == pytest.approx([learning_rate(spec, s) for s in range(12)], rel=1e-12)
    assert outcome.rows[3]["lr"] == pytest.approx(1e-2) and outcome.rows[0]["lr"] == pytest.approx(2.5e-3)
    assert learning_rate(spec, 12) == pytest.approx(1e-3)


def test_the_logged_gradient_norm_is_the_global_norm_before_clipping():
    spec = TrainSpec(**TINY, steps=1, clip=1e-3)
    outcome = train(spec)
    from pdesim.train import build_model, load_data

    data, _ = load_data(spec)
    torch.manual_seed(spec.seed)
    model = build_model(spec, data)
    ids, labels = next(data.batches(spec.batch, seed=spec.seed * 100_003, drop_last=True))
    torch.nn.functional.cross_entropy(model(ids), labels).backward()
    by_hand = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]).norm()
    assert outcome.rows[0]["grad_norm"] == pytest.approx(float(by_hand), rel=1e-5)
    assert outcome.rows[0]["grad_norm"] > 100 * spec.clip


def test_the_training_figure_plans_a_log_axis_over_decades_the_non_finite_step_chance_and_switches():
    rows = [{"step": s, "loss": 10.0 ** -s, "grad_norm": 1.0, "max_activation": 2.0} for s in range(1, 5)]
    rows.append({"step": 5, "loss": math.nan, "grad_norm": math.inf, "max_activation": 2.0})
    rows[1]["val_accuracy"] = 0.4
    spec = TrainSpec(**TINY, norm="none", clip=None)
    plans = {p.filename: p for p in plan_training_figures({"run": rows}, subtitle=switches(spec), chance=0.25)}
    assert plans["loss.png"].logy and not plans["grad_norm.png"].logy
    assert all(p.curves["run"].first_nonfinite_step == 5 for p in plans.values())
    assert plans["loss.png"].curves["run"].steps == [1, 2, 3, 4]
    accuracy = plans["val_accuracy.png"]
    assert accuracy.chance == 0.25 and accuracy.curves["run"].style == "o" and plans["loss.png"].chance is None
    assert "norm=none" in accuracy.title and "clip=off" in accuracy.title and "residual=True" in accuracy.title


def test_sigterm_while_the_figures_are_drawn_keeps_the_finished_training_run(tmp_path, capsys, monkeypatch):
    def terminated_while_drawing(rows, folder, spec, summary, **figure_options):
        (Path(folder) / "loss.png").write_bytes(b"drawn before the signal")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the drawing")

    monkeypatch.setattr(train_dir, "training_figures", terminated_while_drawing)
    out = tmp_path / "run"
    assert cli.main([*ARGS, "--steps", "3", "--out", str(out)]) == 130
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "success" and summary["steps_done"] == 3
    assert (out / "metrics.csv").read_text().count("\n") == 4 and (out / "figures" / "loss.png").exists()
    assert "interrupted while drawing the figures" in (out / "run.log").read_text()
