"""Training probes, small and fast: learning, explosion without LayerNorm, resume, CLI and sweeps."""

import json
from dataclasses import replace

import pytest
import torch
from torch import nn

from pdesim.app import cli
from pdesim.train import TrainSpec, build_model, load_data, train

TINY = dict(task="listops", seq_len=32, n_train=256, n_eval=64, layers=2, dim=16, heads=2, batch=16, eval_every=5)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDESIM_CACHE", str(tmp_path_factory.getbasetemp() / "task-cache"))


@pytest.mark.parametrize("model", ["transformer", "pde"])
def test_a_few_steps_on_one_batch_decrease_the_loss(model):
    spec = TrainSpec(**TINY, model=model, steps=1)
    data, _ = load_data(spec)
    torch.manual_seed(0)
    net = build_model(spec, data)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    ids, labels = data.ids[:16], data.labels[:16]
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(ids), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]  # one step already helps
    assert losses[-1] < losses[0] - 0.05


def test_training_without_layernorm_records_the_first_non_finite_step_without_raising():
    spec = TrainSpec(**{**TINY, "layers": 6}, norm="none", clip=None, lr=0.1, steps=40, warmup=0)
    outcome = train(spec)
    assert outcome.summary["status"] == "nonfinite"
    step = outcome.summary["first_nonfinite_step"]
    assert step is not None and 1 <= step <= 40 and outcome.rows[-1]["step"] == step
    assert outcome.summary["max_grad_norm"] > 1e3 * outcome.summary["first_grad_norm"]


def test_gradients_without_layernorm_dwarf_the_standard_models_at_the_same_settings():
    settings = dict(**{**TINY, "layers": 6}, clip=None, lr=1e-2, steps=40, warmup=0)
    standard, no_layernorm = train(TrainSpec(**settings)), train(TrainSpec(**settings, norm="none"))
    assert standard.summary["status"] == "success" and standard.summary["first_nonfinite_step"] is None
    assert no_layernorm.summary["max_grad_norm"] > 100 * standard.summary["max_grad_norm"]
    assert no_layernorm.summary["max_activation"] > 3 * standard.summary["max_activation"]


def test_every_step_logs_loss_and_gradient_norm_and_log_steps_add_layer_gradients_and_activations():
    outcome = train(TrainSpec(**TINY, steps=6, log_every=2))
    assert all(r["grad_norm"] > 0 and r["loss"] > 0 for r in outcome.rows)
    logged = [r["step"] for r in outcome.rows if "max_activation" in r]
    assert logged == [2, 4, 5, 6]  # every 2nd, the evaluation at 5 and the last
    for row in (r for r in outcome.rows if r["step"] in logged):
        layer_norms = json.loads(row["layer_grad_norms"])
        assert len(layer_norms) == 2 and all(n > 0 for n in layer_norms)
        assert row["max_activation"] > 0
        assert 0 < row["attention_entropy"] <= torch.log(torch.tensor(32.0)).item() + 1e-6
    assert {"val_accuracy", "input_cosine", "input_cka"} <= set(outcome.rows[4])


def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    spec = TrainSpec(**TINY, steps=12, checkpoint_every=6)
    full = train(spec, checkpoint_dir=tmp_path)
    resumed = train(spec, resume=tmp_path / "step-000006.safetensors")
    assert resumed.rows == full.rows  # the original run's six rows, then six more equal to the uninterrupted run's
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_train_cli_writes_a_run_directory_and_compare_overlays_training_curves(tmp_path, capsys):
    args = [
        "train",
        "--seq-len",
        "32",
        "--n-train",
        "128",
        "--n-eval",
        "32",
        "--layers",
        "1",
        "--dim",
        "16",
        "--heads",
        "2",
        "--steps",
        "4",
        "--eval-every",
        "2",
        "--quiet",
    ]
    assert cli.main([*args, "--out", str(tmp_path / "a")]) == 0
    assert cli.main([*args, "--no-layernorm", "--no-clip", "--out", str(tmp_path / "b")]) == 0
    for name in (
        "config.toml",
        "metrics.csv",
        "summary.json",
        "run.log",
        "checkpoints/last.safetensors",
        "figures/loss.png",
    ):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert (
        cli.main(["train", "--config", str(tmp_path / "a" / "config.toml"), "--quiet", "--out", str(tmp_path / "c")])
        == 0
    )
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "c" / "metrics.csv").read_text()
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "loss.png").stat().st_size > 1000
    assert "first non-finite step" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "imagenet"], "task='imagenet' is not one of"),
        (["--diffusion-position", "inside"], "argument --diffusion-position: invalid choice: 'inside'"),
        (["--steps", "0"], "steps=0 must be an integer >= 1"),
        (["--clip", "1", "--no-clip"], "give --clip or --no-clip, not both"),
        (["--task", "pathfinder", "--seq-len", "32"], "task 'pathfinder': seq_len=32 must be the square"),
        (["--adjoint"], "adjoint=True needs model='pde'"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    assert cli.main(["train", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdesim: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x").exists()


def test_a_sweep_trains_every_grid_point_and_tabulates_mean_and_std(tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        "[base]\nseq_len = 32\nn_train = 64\nn_eval = 32\nlayers = 1\ndim = 16\nheads = 2\nsteps = 2\n"
        "eval_every = 1\n[grid]\nconfigs = [{diffusion_positions = []}, "
        '{diffusion_positions = ["after_embedding"], diffusion_scales = [1, 2]}]\nseed = [0, 1]\n'
    )

    def in_process(config, run_dir):
        return cli.main(["train", "--config", str(config), "--out", str(run_dir), "--quiet"])

    from pdesim.app.sweep import run_sweep

    out = run_sweep(sweep, out=tmp_path / "out", workers=1, runner=in_process)
    table = (out / "table.md").read_text()
    assert "| none | 2 |" in table
    assert "| after_embedding scales 1+2 | 2 |" in table
    assert (out / "accuracy.png").stat().st_size > 1000
    assert len(list((out / "runs").glob("*/summary.json"))) == 4


def test_the_spec_rejects_unknown_keys_in_one_line():
    with pytest.raises(Exception, match="unknown key 'layer' in \\[train\\]"):
        TrainSpec.from_table({"layer": 2})
    assert replace(TrainSpec(), steps=3).steps == 3


def test_a_checkpoint_is_keyed_by_parameter_name_and_carries_its_step_and_spec(tmp_path):
    from safetensors import safe_open

    spec = TrainSpec(**TINY, steps=2)
    outcome = train(spec, checkpoint_dir=tmp_path)
    with safe_open(str(tmp_path / "last.safetensors"), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
    names = {name for name, _ in outcome.model.named_parameters()}
    optimizer_keys = {tuple(key.split(".", 1)[1].rsplit(".", 1)) for key in keys - names}
    assert names <= keys and {name for name, _ in optimizer_keys} <= names
    assert {key for _, key in optimizer_keys} == {"exp_avg", "exp_avg_sq", "step"}
    assert "optim.embed.weight.exp_avg" in keys  # AdamW's moments under the parameter's name
    assert metadata["step"] == "2" and json.loads(metadata["train_spec"]) == spec.to_table()


def test_resuming_a_weight_tied_pde_model_continues_bit_for_bit(tmp_path):
    spec = TrainSpec(**{**TINY, "layers": 1}, model="pde", steps=4, checkpoint_every=2)
    full = train(spec, checkpoint_dir=tmp_path)
    resumed = train(spec, resume=tmp_path / "step-000002.safetensors")
    assert [r["loss"] for r in resumed.rows] == [r["loss"] for r in full.rows]
    for (name, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_of_another_network_in_one_line(tmp_path, capsys):
    spec = TrainSpec(**TINY, steps=1)
    train(spec, checkpoint_dir=tmp_path)
    args = ["train", "--seq-len", "32", "--n-train", "256", "--n-eval", "64", "--layers", "2", "--heads", "2"]
    resume = ["--resume", str(tmp_path / "last.safetensors"), "--quiet", "--out", str(tmp_path / "x")]
    assert cli.main([*args, "--dim", "32", *resume]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with dim=16 but this run has dim=32" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("positions", [[], ["before_attention"], ["after_embedding", "before_norm"]])
def test_attention_entropy_is_measured_on_the_input_the_attention_sees(positions):
    from pdesim.train.measures import first_attention_entropy
    from probes import attention_entropy_of

    spec = TrainSpec(**TINY, steps=1, diffusion_positions=positions, diffusion_scales=[1, 2])
    data, _ = load_data(spec)
    model = build_model(spec, data)
    ids = data.ids[:8]
    pde = model.blocks.blocks[0].pde
    seen = []
    hook = pde.attention.register_forward_pre_hook(lambda module, args: seen.append(args) if not seen else None)
    with torch.no_grad():
        _, states = model(ids, return_states=True)
    hook.remove()
    x, mask = seen[0]
    expected = float(attention_entropy_of(pde.attention, x, mask).mean())
    measured = first_attention_entropy(model, ids, states[0])
    assert measured.dtype == torch.float32  # the model's dtype, not float64
    assert float(measured) == pytest.approx(expected, rel=1e-5)
