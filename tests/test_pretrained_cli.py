"""``pdesim run --pretrained`` and ``pdesim info --pretrained`` on a tiny seeded BERT checkpoint."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from pdesim.app import cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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


WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
         *"the quick brown fox jumps over lazy dog a cat sat on mat .".split()]


@pytest.fixture(scope="module")
def bert_with_tokenizer(bert, tmp_path_factory):
    """The same BERT beside a WordPiece tokenizer of 19 words (ids 0..18), built without any download."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordPiece({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    directory = tmp_path_factory.mktemp("bert_tokenizer") / "checkpoint"
    shutil.copytree(bert, directory)
    wrapped = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")
    wrapped.save_pretrained(directory)
    return str(directory)


def _numbers(run_dir):
    """summary.json without the wall times, and every array of states.npz."""
    summary = json.loads((run_dir / "summary.json").read_text())
    for arm in summary["arms"].values():
        arm.pop("wall_time")
    with np.load(run_dir / "states.npz") as states:
        return summary, {name: states[name] for name in states.files}


def _same_numbers(first, second):
    (summary_1, states_1), (summary_2, states_2) = _numbers(first), _numbers(second)
    assert summary_1 == summary_2 and states_1.keys() == states_2.keys()
    for name in states_1:
        np.testing.assert_array_equal(states_1[name], states_2[name])


def test_a_pretrained_runs_config_replays_it_with_the_same_numbers_from_another_directory(bert, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--ids", "1,5,9,13,2", "--no-layernorm", "--no-residual", "--solver", "euler", "--steps-per-layer", "3"]
    assert cli.main(["run", "--pretrained", bert, *args, "--out", str(first)]) == 0
    config = (first / "config.toml").read_text()
    table = tomllib.loads(config)["pretrained"]
    assert {key: table[key] for key in ("source", "ids", "solver", "steps_per_layer", "norm", "residual")} == {
        "source": bert, "ids": [1, 5, 9, 13, 2], "solver": "euler", "steps_per_layer": 3, "norm": "none",
        "residual": False,
    }
    monkeypatch.chdir(tmp_path)  # the source is recorded by its absolute path
    assert cli.main(["run", "--config", "first/config.toml", "--out", "second"]) == 0
    assert (second / "config.toml").read_text() == config
    _same_numbers(first, second)
    summary = json.loads((second / "summary.json").read_text())
    assert summary["arms"]["bert norm=none, no-residual"]["dt"] == pytest.approx(1 / 3)


def test_a_text_run_records_the_ids_it_read_and_its_replay_reads_those_ids(bert_with_tokenizer, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["run", "--pretrained", bert_with_tokenizer, "--text", "The cat sat on the mat.",
                     "--out", str(first)]) == 0
    assert "input: 9 tokens [CLS] the cat sat on the mat . [SEP]" in capsys.readouterr().out
    table = tomllib.loads((first / "config.toml").read_text())["pretrained"]
    assert (table["text"], table["ids"]) == ("The cat sat on the mat.", [2, 5, 14, 15, 16, 5, 17, 18, 3])
    assert cli.main(["run", "--config", str(first / "config.toml"), "--out", str(second)]) == 0
    _same_numbers(first, second)


def test_flags_override_a_pretrained_config_and_info_reads_it(bert, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli.main(["run", "--pretrained", bert, "--ids", "1,5,9", "--out", str(first)]) == 0
    config = str(first / "config.toml")
    assert cli.main(["run", "--config", config, "--steps-per-layer", "2", "--no-layernorm", "--out", str(second)]) == 0
    summary = json.loads((second / "summary.json").read_text())
    assert summary["arms"]["bert norm=none"]["dt"] == 0.5 and summary["arms"]["trained bert norm=post"]["dt"] == 0.5
    assert summary["model"]["tokens"] == 3
    capsys.readouterr()
    assert cli.main(["info", "--config", config]) == 0
    assert "input: 3 token ids 1,5,9" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[run]\nsolver = \"rk4\"\n", "has no [pretrained] table"),
        ("[pretrained]\nsource = \"BERT\"\nids = [1]\nlayers = 2\n", "unknown key 'layers' in [pretrained]"),
        ("[pretrained]\nsource = \"BERT\"\nids = [1]\nresidual = \"no\"\n", "residual='no' must be true or false"),
        ("[pretrained]\nsource = \"BERT\"\nids = [1, -2]\n", "ids=-2 must be an integer >= 0"),
        ("[pretrained]\nids = [1]\n", "[pretrained] has no source"),
        ("[pretrained]\nsource = \"BERT\"\n", "give the input as --text"),
    ],
)
def test_a_bad_pretrained_config_is_one_line_exit_2(bert, tmp_path, capsys, table, message):
    config = tmp_path / "config.toml"
    config.write_text(table.replace("BERT", bert))
    out = tmp_path / "never"
    assert cli.main(["run", "--pretrained", bert, "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdesim: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_a_pretrained_run_writes_both_arms_and_the_no_layernorm_one_grows_5_times_faster(bert, tmp_path, capsys):
    """Growth of the state and of perturbations (the layer maps' Lyapunov exponent), switched against trained."""
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
    # the layer maps' largest Lyapunov exponent: without LayerNorm perturbations grow 4 times faster
    assert switched["transformer"]["lyapunov"] > 4 * trained["transformer"]["lyapunov"] > 0.4
    assert switched["lyapunov"] is None and "not measured for an imported model" in switched["lyapunov_method"]
    assert "relative gap between the h = 1 network and the PDE at T = 3" in capsys.readouterr().out


def test_ctrl_c_during_a_pretrained_networks_run_keeps_the_solved_pde_and_exits_130(
    bert, tmp_path, monkeypatch, capsys
):
    from pdesim.app import pretrained_run

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrained_run, "_complete_arm", ctrl_c)  # the PDE is solved, its network not yet run
    out = tmp_path / "run"
    assert cli.main(["run", "--pretrained", bert, "--ids", "1,5,9", "--no-layernorm", "--out", str(out)]) == 130
    assert "interrupted: the partial run (arms solved so far) is saved" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and list(summary["arms"]) == ["bert norm=none"]
    arm = summary["arms"]["bert norm=none"]
    assert arm["status"] == "success" and "transformer" not in arm
    assert sorted(np.load(out / "states.npz")) == ["arm0__pde_t", "arm0__pde_u"]


def test_a_switch_the_model_already_has_runs_one_arm_not_two_alike(bert, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["run", "--pretrained", bert, "--ids", "1,5,9", "--norm", "post", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["arms"]) == ["trained bert norm=post"]
    assert summary["arms"]["trained bert norm=post"]["role"] == "main"


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
        (["--ids", "1", "--device", "nonsense"], "device='nonsense' is not a torch device name"),
        (["--ids", "1", "--steps-per-layer", "0"], "steps_per_layer=0 must be an integer >= 1"),
        (["--ids", "1", "--steps", "3"], "--steps and --t-end do not apply to --pretrained"),
        (["--ids", "1", "--text", "x"], "give the input as --text or as --ids, not both"),
        ([], 'give the input as --text "..." or as --ids'),
    ],
)
def test_bad_pretrained_input_is_one_line_exit_2_and_nothing_written(bert, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert cli.main(["run", "--pretrained", bert, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdesim: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_an_empty_pretrained_name_is_refused_not_read_as_the_current_directory(tmp_path, capsys):
    assert cli.main(["run", "--pretrained", "", "--ids", "1", "--out", str(tmp_path / "never")]) == 2
    assert "source='' must name a checkpoint directory or hub name" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_input_flags_without_a_pretrained_model_are_one_line_exit_2(capsys):
    assert cli.main(["run", "--text", "hello"]) == 2
    assert "--text, --ids and --steps-per-layer go with --pretrained" in capsys.readouterr().err
