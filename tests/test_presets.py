"""Presets find their arms by role, state their findings, and refuse in one line what makes them meaningless."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pdesim.app import cli
from pdesim.app.arms import MAIN, STANDARD
from pdesim.app.presets import PRESETS, check_preset, finding_sentence, preset_spec
from pdesim.app.runner import run
from pdesim.config import ConfigError

TINY = ["--tokens", "16", "--dim", "16", "--heads", "2", "--batch", "2", "--quiet"]


def _run(tmp_path: Path, *args: str) -> tuple[int, dict, Path]:
    out = tmp_path / "run"
    code = cli.main(["run", *TINY, *args, "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return code, summary, out


# -- every preset states its finding -------------------------------------------------------------


def _explosion(found: dict) -> None:
    assert found["no_layernorm_status"] == "blowup" and 0 < found["no_layernorm_t_event"] <= 12
    assert found["growth_ratio"] > 1e3


def _drift(found: dict) -> None:
    assert found["no_residual_final_cka"] < 0.3 < found["standard_final_cka"]


def _energy(found: dict) -> None:
    assert found["energy_is_exact"] is True
    assert found["energy_monotone_fraction"] == 1.0
    assert found["max_relative_rate_error"] < 1e-3


def _cluster(found: dict) -> None:
    assert found["final_clusters"] < found["initial_clusters"]


def _rank_collapse(found: dict) -> None:
    assert found["pde_final_residual"] < 0.01 and found["transformer_final_residual"] < 0.01
    assert found["standard_final_residual"] > 100 * found["pde_final_residual"]


def _consistency(found: dict) -> None:
    assert abs(found["order"] - 1) < 0.3


def _cfl(found: dict) -> None:
    assert found["euler_below"]["tau"] == 0.45 and found["euler_below"]["norm_growth"] <= 1.0
    assert found["euler_above"]["norm_growth"] > 10 or found["euler_above"]["status"] == "blowup"
    assert found["etd1"]["tau"] == 10 and found["etd1"]["norm_growth"] <= 1.0


# preset -> (extra flags that keep it small, the check of its finding)
FINDINGS = {
    "explosion": ([], _explosion),
    "drift": ([], _drift),
    "energy": (["--t-end", "2", "--saves", "21"], _energy),
    "cluster": ([], _cluster),
    "rank-collapse": ([], _rank_collapse),
    "consistency": ([], _consistency),
    "cfl": ([], _cfl),
}


def test_every_preset_with_a_finding_has_its_check_here():
    assert set(FINDINGS) == {name for name, preset in PRESETS.items() if preset.finding}


@pytest.mark.parametrize("name", sorted(FINDINGS))
def test_every_preset_states_its_finding(tmp_path, name):
    flags, check = FINDINGS[name]
    code, summary, out = _run(tmp_path, "--preset", name, *flags)
    assert code == 0
    check(summary["findings"])
    sentence = finding_sentence(name, summary["findings"])  # what the run prints: words, not the dict's keys
    assert sentence.endswith(".") and "_" not in sentence and sentence[0].isupper()
    assert f"finding: {sentence}" in (out / "run.log").read_text()
    if name == "consistency":
        assert (out / "figures" / "consistency.png").exists()


def test_arms_carry_roles_and_a_label_is_only_for_display(tmp_path):
    # post-LN relabels the main arm ("norm=post, no-residual"); the finding reads it by role all the same
    spec = preset_spec("rank-collapse")
    spec = replace(spec, pde=spec.pde.replace(norm="post", tokens=8, dim=8, heads=2))
    outcome = run(spec)
    arms = outcome.summary["arms"]
    assert {label: arm["role"] for label, arm in arms.items()} == {"norm=post, no-residual": MAIN, "standard": STANDARD}
    assert outcome.summary["findings"]["standard_final_residual"] == arms["standard"]["final_residual"]


# -- and refuses what would make it meaningless ---------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "drift", "--norm", "none"], "the drift preset needs norm = pre"),
        (["--preset", "explosion", "--no-residual"], "the explosion preset needs residual = true"),
        (["--preset", "cfl", "--diffusion", "0"], "the cfl preset needs diffusion > 0"),
        (["--preset", "cfl", "--solver", "dopri5"], "the cfl preset needs its own solvers and steps"),
        (["--preset", "cfl", "--steps", "10"], "the cfl preset needs its own solvers and steps"),
        (["--preset", "energy", "--norm", "pre"], "the energy preset needs an energy that is a Lyapunov function"),
        (["--preset", "cluster", "--diffusion", "0.1"], "the cluster preset needs diffusion = 0"),
        (["--preset", "rank-collapse", "--diffusion", "0.1"], "the rank-collapse preset needs diffusion = 0"),
        (["--preset", "consistency", "--norm", "tangent"], "the consistency preset needs norm = one of pre, post"),
    ],
)
def test_a_preset_refuses_a_flag_that_makes_it_meaningless_in_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    try:
        code = cli.main(["run", *TINY, *args, "--out", str(out)])
    except SystemExit as stop:  # either way: exit code 2
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pdesim: error: {message}")
    assert not out.exists()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_accepts_its_own_spec(name):
    assert check_preset(preset_spec(name)) is PRESETS[name]


def test_a_config_file_cannot_name_an_unknown_preset(tmp_path):
    spec = preset_spec("standard")
    with pytest.raises(ConfigError, match="preset='nope' is not one of"):
        check_preset(replace(spec, preset="nope"))
