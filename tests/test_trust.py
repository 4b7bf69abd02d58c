"""Nothing of the user's is lost: pdesim replaces only what it wrote, keeps what it computed when stopped.

Data loss (a foreign directory as --out, ``--out .``, ``--overwrite``), Ctrl-C while the figures
or the data are written, SIGTERM on a real ``python -m pdesim run`` process, staging directories
left by a killed process, the umask, runs named after what they ran, every config value
round-tripping (None included), and ``MasterPDE(cfg).double()``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import solvers
from pdesim.app import cli, rundir, tomlio
from pdesim.app.spec import RunSpec
from pdesim.config import PDEConfig
from pdesim.model import MasterPDE

TINY = ["--tokens", "8", "--dim", "8", "--heads", "2", "--t-end", "0.2", "--saves", "3", "--layers", "2", "--quiet"]
REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> int:
    return cli.main(["run", *TINY, *args])


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_a_foreign_directory_with_a_config_toml_survives_run_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "config.toml").write_text("x = 1\n")
    (tmp_path / "proj" / "thesis.tex").write_text("precious\n")
    for extra in ([], ["--overwrite"]):
        assert _run("--out", "proj", *extra) == 2
        assert "is not a pdesim run directory" in capsys.readouterr().err
    assert (tmp_path / "proj" / "thesis.tex").read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]


def test_out_dot_never_touches_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine\n")
    assert _run("--out", ".", "--overwrite") == 2
    assert "--out . is the working directory or holds it" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    (tmp_path / "notes.txt").unlink()
    for out in (".", "..", str(tmp_path)):  # not even an empty working directory, nor the one above it
        assert _run("--out", out) == 2
        assert "is the working directory or holds it" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_pdesim_run_only_when_asked_and_only_if_it_holds_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run("--seed", "1", "--out", str(out)) == 0
    first = (out / "metrics.csv").read_bytes()
    assert _run("--seed", "2", "--out", str(out)) == 2
    assert "holds an earlier pdesim run; pass --overwrite" in capsys.readouterr().err
    assert (out / "metrics.csv").read_bytes() == first
    assert _run("--seed", "2", "--out", str(out), "--overwrite") == 0
    assert (out / "metrics.csv").read_bytes() != first
    assert "seed = 2" in (out / "config.toml").read_text()
    (out / "thesis.tex").write_text("precious\n")
    assert _run("--seed", "3", "--out", str(out), "--overwrite") == 2
    assert "holds files pdesim did not write (thesis.tex)" in capsys.readouterr().err
    assert (out / "thesis.tex").read_text() == "precious\n"


def test_ctrl_c_while_the_figures_are_drawn_keeps_the_run_with_the_figures_so_far(tmp_path, monkeypatch, capsys):
    def one_figure_then_ctrl_c(outcome, folder: Path):
        (folder / "norms.png").write_bytes(b"png")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_figure_writer", lambda args: one_figure_then_ctrl_c)
    out = tmp_path / "run"
    assert _run("--out", str(out)) == 130
    captured = capsys.readouterr()
    assert "the run's data is saved, its figures are incomplete" in captured.err
    assert f"run directory: {out}" in captured.out
    assert _summary(out)["arms"]["standard"]["status"] == "success"
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 3 + 3  # header, 3 saves, 3 layer states
    assert np.load(out / "states.npz")["standard__pde_u"].shape == (3, 2, 8, 8)
    assert [p.name for p in (out / "figures").iterdir()] == ["norms.png"]
    assert "interrupted while drawing the figures" in (out / "run.log").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left


def test_ctrl_c_while_an_arms_exponents_run_keeps_its_pde_solution_and_says_what_was_not_measured(
    tmp_path, monkeypatch, capsys
):
    from pdesim.app import arms

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(arms, "map_lyapunov", ctrl_c)  # after the PDE, its exponents and the Transformer
    out = tmp_path / "run"
    assert _run("--no-residual", "--out", str(out)) == 130
    assert "interrupted: the partial run (arms finished so far) is saved" in capsys.readouterr().out
    summary = _summary(out)
    assert summary["interrupted"] is True and list(summary["arms"]) == ["no-residual"]  # the standard arm never ran
    arm = summary["arms"]["no-residual"]
    assert arm["status"] == "success" and arm["lyapunov_method"].startswith("tangent flow")
    assert arm["transformer"]["lyapunov_method"].startswith("not measured")
    assert np.load(out / "states.npz")["no_residual__pde_u"].shape == (3, 2, 8, 8)


def test_ctrl_c_while_the_data_is_written_is_held_until_it_is_complete(tmp_path, monkeypatch, capsys):
    original = rundir.write_rows

    def rows_then_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the data files are written
        return original(*args, **kwargs)

    monkeypatch.setattr(rundir, "write_rows", rows_then_ctrl_c)
    out = tmp_path / "run"
    assert _run("--out", str(out)) == 130
    assert {p.name for p in out.iterdir()} == {"config.toml", "metrics.csv", "summary.json", "states.npz", "run.log"}
    assert "interrupted while saving: the run is saved without figures" in (out / "run.log").read_text()
    assert "figures are incomplete" in capsys.readouterr().err


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (Linux: the SigCgt mask of /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc (Linux)")
def test_sigterm_stops_a_real_run_which_saves_its_partial_result_and_exits_130(tmp_path):
    out = tmp_path / "run"
    args = ["--tokens", "8", "--dim", "8", "--heads", "2", "--t-end", "2000", "--saves", "2001", "--layers", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "pdesim", "run", *args, "--out", str(out)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 120
    while not _catches_sigterm(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # until pdesim has taken SIGTERM over (it does so as the run starts)
    time.sleep(2.0)  # into the integration
    assert process.poll() is None, process.stderr.read()
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: the partial run (arms finished so far) is saved" in stdout
    summary = _summary(out)
    arm = summary["arms"]["standard"]
    assert summary["interrupted"] is True and arm["status"] == "interrupted"
    saved = np.load(out / "states.npz")["standard__pde_t"]
    assert 2 <= len(saved) < 2001 and 0 < saved[-1] < 2000  # stopped part way, the states so far kept
    steps = np.diff(saved)  # the save grid, then the state where the signal stopped it
    assert np.allclose(steps[:-1], 1.0) and 0 < steps[-1] <= 1.0


def test_a_new_run_removes_staging_left_by_a_killed_process_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.pdesim-staging-{dead.pid}-abc123"
    alive = tmp_path / f".other.pdesim-staging-{os.getpid()}-xyz789"
    foreign = tmp_path / ".run.backup"
    lookalike = tmp_path / f"run.pdesim-staging-{dead.pid}-abc123"  # not hidden: not pdesim's pattern
    for path in (stale, alive, foreign, lookalike):
        path.mkdir()
        (path / "file").write_text("x")
    assert _run("--out", str(tmp_path / "run")) == 0
    assert not stale.exists()
    assert alive.exists() and foreign.exists() and lookalike.exists()


def test_run_directories_get_the_users_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        assert _run("--out", str(tmp_path / "run")) == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "run").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "run" / "figures").stat().st_mode & 0o777 == 0o750


def test_a_run_is_named_after_what_it_ran(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _run("--no-layernorm") == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("no-layernorm-")
    description = _summary(run)["description"]
    assert description == "no-layernorm: the configuration asked for beside the standard run (pre-LN with residual " \
                          "connections)"
    assert f"preset standard: {description}" in capsys.readouterr().out


def test_the_t_end_help_states_the_real_default(capsys):
    assert cli.main(["run", "--help"]) == 0
    assert "final time T, the depth (default 8;" in capsys.readouterr().out
    assert RunSpec().t_end == 8.0


def test_every_config_value_round_trips_none_included():
    spec = RunSpec(pde=PDEConfig(tokens=8, dim=8, heads=2, temperature=None, diffusion=[[0.1], [0.2]],
                                 diffusion_scales=(1, 2)), solver="dopri5", dt=None, rtol=1e-7, blowup=1e300)
    text = tomlio.dumps(spec.to_tables())
    assert 'null = [\n    "dt",\n    "atol",\n]' in text
    assert RunSpec.from_tables(tomlio.loads(text)) == spec
    train = {"train": {"clip": None, "lr": 0.1 + 0.2, "decay": float("inf"), "positions": ["a", "b"]}}
    back = tomlio.loads(tomlio.dumps(train))
    assert back == train and back["train"]["lr"] == 0.30000000000000004


def test_master_pde_cast_to_float64_solves_in_float64():
    cfg = PDEConfig(tokens=8, dim=8, heads=2)
    model = MasterPDE(cfg).double()
    u0 = model.initial_state(2)
    assert u0.dtype == torch.float64
    sol = solvers.solve(model, u0, (0.0, 1.0), method="rk4", dt=0.05)
    assert sol.status == solvers.Status.SUCCESS and sol.u.dtype == torch.float64
    reference = MasterPDE(cfg.replace(dtype="float64"))
    with torch.no_grad():  # the float64 model's weights rounded to float32: the same field to float32 precision
        for cast, exact in zip(model.parameters(), reference.parameters()):
            exact.copy_(exact.float().double())
            assert torch.equal(cast, exact)
    expected = solvers.solve(reference, reference.initial_state(2), (0.0, 1.0), method="rk4", dt=0.05)
    assert torch.equal(sol.u, expected.u)
