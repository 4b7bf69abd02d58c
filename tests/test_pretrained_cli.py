"""``pdesim run --pretrained`` and ``pdesim info --pretrained`` on a tiny seeded BERT checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from pdesim.app import cli

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (pip install 'pdesim[hf]'): no checkpoint to build"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=24,
                                     num_hidden_layers=3, max_position_embeddings=12, initializer_range=0.3)
    directory = tmp_path_factory.mktemp("bert")
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(directory, safe_serialization=True)
    return str(directory)


def test_a_pretrained_run_writes_both_arms_and_the_no_layernorm_one_grows_5_times_faster(bert, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["run", "--pretrained", bert, "--ids", "1,5,9,13,2", "--no-layernorm", "--out", str(out)]) == 0
    for name in ("config.toml", "metrics.csv", "summary.json", "states.npz", "run.log", "figures/norms.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    switched, trained = summary["arms"]["bert norm=none"], summary["arms"]["trained bert norm=post"]
    assert (switched["role"], trained["role"], switched["solver"], switched["dt"]) == ("main", "standard", "rk4", 0.25)
    assert summary["model"] == {"architecture": "bert", "layers": 3, "dim": 16, "heads": 2, "norm": "post", "tokens": 5}
    for side in (switched, switched["transformer"]):
        assert side["growth_rate"] > 0.5
    assert switched["growth_rate"] > 5 * trained["growth_rate"]
    assert "relative gap between the h = 1 network and the PDE at T = 3" in capsys.readouterr().out


def test_pretrained_info_reports_every_layers_spectral_radius_and_the_steps_rk4_needs(bert, capsys):
    assert cli.main(["info", "--pretrained", bert, "--ids", "1,5,9"]) == 0
    report = capsys.readouterr().out
    assert "stability report: bert" in report and "L=3 d=16 heads=2 norm=post" in report
    assert [line.strip().startswith(f"layer {i}:") for i in (1, 2, 3) for line in report.splitlines()].count(True) == 3
    assert "rk4 with 4 steps per layer: dt·ρ_max" in report and "--steps-per-layer" in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ids", "1,2", "--tokens", "4"], "--tokens does not apply to --pretrained"),
        (["--ids", "1,2", "--dt", "0.3"], "--dt 0.3 must be 1/k for an integer k"),
        (["--ids", "1,40"], r"token id 40 is outside the vocabulary (0..39)"),
        (["--ids", ",".join(["1"] * 13)], "the input has 13 tokens, more than the model's 12 positions"),
        (["--ids", "1,x"], "must be comma-separated integers"),
        (["--text", "hello"], "this checkpoint has no tokenizer here"),
        (["--ids", "1", "--solver", "dopri5"], "a post-LN PDE is a projected integrator"),
    ],
)
def test_bad_pretrained_input_is_one_line_exit_2_and_nothing_written(bert, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert cli.main(["run", "--pretrained", bert, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdesim: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_input_flags_without_a_pretrained_model_are_one_line_exit_2(capsys):
    assert cli.main(["run", "--text", "hello"]) == 2
    assert "--text, --ids and --steps-per-layer go with --pretrained" in capsys.readouterr().err
