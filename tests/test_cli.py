"""The CLI end to end: runs write their directory and reproduce; compare and info; bad input is one line.

Presets and their findings: tests/test_presets.py.
"""

import json
import math
from pathlib import Path

import pytest

from pdesim.app import cli

TINY = ["--tokens", "16", "--dim", "16", "--heads", "2", "--batch", "2", "--quiet"]


def _run(tmp_path: Path, *args: str, name: str = "run") -> tuple[int, dict, Path]:
    out = tmp_path / name
    code = cli.main(["run", *TINY, *args, "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return code, summary, out


def test_default_run_writes_the_whole_run_directory(tmp_path, capsys):
    code, summary, out = _run(tmp_path, "--t-end", "2", "--saves", "5", "--layers", "4")
    assert code == 0
    for name in ("config.toml", "metrics.csv", "summary.json", "states.npz", "run.log"):
        assert (out / name).stat().st_size > 0
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert {"norms.png", "drift.png", "rank.png", "kymograph.png"} <= set(figures)
    assert summary["arms"]["standard"]["status"] == "success"
    assert "run directory:" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_no_layernorm_explodes_next_to_the_stable_standard_run(tmp_path):
    code, summary, _ = _run(tmp_path, "--no-layernorm", "--t-end", "8")
    arms = summary["arms"]
    assert code == 0 and set(arms) == {"no-layernorm", "standard"}
    assert arms["no-layernorm"]["norm_growth"] > 100 * arms["standard"]["norm_growth"]
    assert arms["no-layernorm"]["growth_rate"] > 0.5 > arms["standard"]["growth_rate"]
    assert arms["no-layernorm"]["transformer"]["norm_growth"] > 100


def test_no_residual_drifts_where_the_standard_run_keeps_its_input(tmp_path):
    code, summary, _ = _run(tmp_path, "--no-residual")
    arms = summary["arms"]
    assert arms["no-residual"]["final_mean_cosine"] < 0.1 < 0.4 < arms["standard"]["final_mean_cosine"]
    assert arms["no-residual"]["final_residual"] < 0.05 < 0.3 < arms["standard"]["final_residual"]
    assert arms["no-residual"]["transformer"]["final_mean_cosine"] < 0.1


def test_a_run_reproduces_bit_for_bit_from_its_config(tmp_path):
    _, _, first = _run(tmp_path, "--no-residual", "--t-end", "1", "--saves", "5", "--layers", "4", name="a")
    code = cli.main(["run", "--config", str(first / "config.toml"), "--quiet", "--out", str(tmp_path / "b")])
    assert code == 0
    assert (first / "metrics.csv").read_bytes() == (tmp_path / "b" / "metrics.csv").read_bytes()


def test_compare_overlays_runs(tmp_path, capsys):
    _, _, a = _run(tmp_path, "--t-end", "1", "--saves", "3", "--layers", "2", name="a")
    _, _, b = _run(tmp_path, "--no-layernorm", "--t-end", "1", "--saves", "3", "--layers", "2", name="b")
    assert cli.main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "norms.png").stat().st_size > 1000
    assert "no-layernorm" in capsys.readouterr().out


def test_info_prints_the_stability_report(capsys):
    assert cli.main(["info", *TINY[:-1], "--diffusion", "2", "--dt", "0.5"]) == 0
    report = capsys.readouterr().out
    assert "Laplacian (dilation 1): eigenvalues in [-3.96157, 0]" in report
    assert "diffusion number τ = D·dt/h² = 1" in report
    assert "recommended solver: etd-rk2" in report


def test_info_of_the_cfl_preset_checks_each_arms_own_solver_and_step_not_the_runs_unused_defaults(capsys):
    assert cli.main(["info", "--preset", "cfl", "--tokens", "16", "--dim", "8", "--heads", "2"]) == 0
    report = capsys.readouterr().out
    header = report.splitlines()[0]
    assert header == "stability report: N=16 d=8 bc=neumann h=1.0"  # no solver=rk4 dt=0.05 the arms do not use
    assert "arm euler tau=0.45: euler at dt=0.45: diffusion number τ = D·dt/h² = 0.45" in report
    assert "arm euler tau=0.55: euler at dt=0.55: diffusion number τ = D·dt/h² = 0.55" in report
    assert "euler's real-axis stability bound 2: OUTSIDE" in report and "rk4" not in report


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--heads", "5"], "dim=16 is not divisible by heads=5"),
        (["--diffusion", "-1"], "diffusion=-1.0 must be a finite number >= 0"),
        (["--solver", "rk5"], "solver='rk5' is not one of"),
        (["--bc", "robin"], "bc='robin' is not one of"),
        (["--diffusion", "nan"], "diffusion=nan"),
        (["--config", "/nonexistent.toml"], "config file '/nonexistent.toml' does not exist"),
        (["--device", "cuda:99"], "device='cuda:99' is not available here"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert cli.main(["run", *TINY, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pdesim: error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_ctrl_c_saves_the_partial_run_and_says_so(tmp_path, capsys, monkeypatch):
    import pdesim.model

    calls = {"n": 0}
    original = pdesim.model.MasterPDE.forward

    def interrupted(self, t, u):
        calls["n"] += 1
        if calls["n"] == 50:
            raise KeyboardInterrupt
        return original(self, t, u)

    monkeypatch.setattr(pdesim.model.MasterPDE, "forward", interrupted)
    code, summary, out = _run(tmp_path, "--t-end", "2")
    assert code == 130
    assert summary["interrupted"] is True
    assert summary["arms"]["standard"]["status"] == "interrupted"
    assert "interrupted: the partial run" in capsys.readouterr().out
    assert math.isfinite(summary["arms"]["standard"]["norm_growth"])


def test_a_compiled_run_says_how_long_compiling_took(tmp_path, capsys):
    code, summary, _ = _run(tmp_path, "--compile", "--t-end", "0.5", "--saves", "3", "--layers", "2")
    compile_time = summary["arms"]["standard"]["compile_time"]
    assert code == 0 and compile_time > 0
    assert f"its step was compiled in {compile_time:.1f} s" in capsys.readouterr().out
