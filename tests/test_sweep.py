"""pdesim sweep: the local and Ray engines agree bit for bit, sweeps resume, bad sweeps are one line, failures are kept.

The training points are tiny (a few optimizer steps on 64 examples) and the run points small
(N = 8, d = 8, T = 1), so each point costs a few seconds, most of it starting a process.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pdesim.app import cli
from pdesim.app.sweep import sweep
from pdesim.app.sweep_figure import _accuracy_limits
from pdesim.app.sweep_plan import NAME_LIMIT, load_plan, point_name

ROOT = Path(__file__).resolve().parent.parent
TRAIN_BASE = (
    "[base]\nseq_len = 32\nn_train = 64\nn_eval = 32\nlayers = 1\ndim = 16\nheads = 2\nsteps = 3\neval_every = 1\n"
)
TWO_SEEDS = TRAIN_BASE + "[grid]\nseed = [0, 1]\n"
RUN_SWEEP = (
    'kind = "run"\n[base]\ntokens = 8\ndim = 8\nheads = 2\nt_end = 1.0\nlayers = 4\nsaves = 5\nbaseline = false\n'
    "[grid]\nseed = [0, 1]\n"
)
TABLES = ("runs.csv", "table.csv", "table.md")


def _file(tmp_path: Path, text: str, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The two-seed training sweep on the local engine (2 worker processes)."""
    folder = tmp_path_factory.mktemp("local")
    outcome = sweep(_file(folder, TWO_SEEDS), out=folder / "out", workers=2)
    return folder, outcome


def test_a_local_sweep_tabulates_the_mean_and_std_of_its_runs_summaries(local_sweep):
    _, outcome = local_sweep
    assert (outcome.points, outcome.done, outcome.failed, outcome.skipped) == (2, 2, 0, 0)
    accuracies = [
        json.loads((outcome.out / "runs" / f"seed={seed}" / "summary.json").read_text())["final_val_accuracy"]
        for seed in (0, 1)
    ]
    table = pd.read_csv(outcome.out / "table.csv")
    assert table["runs"].tolist() == [2] and table["failed"].tolist() == [0]
    assert table["final_val_accuracy_mean"][0] == pytest.approx(statistics.fmean(accuracies), abs=1e-15)
    assert table["final_val_accuracy_std"][0] == pytest.approx(statistics.stdev(accuracies), abs=1e-15)
    runs = pd.read_csv(outcome.out / "runs.csv")
    assert runs["seed"].tolist() == [0, 1] and runs["final_val_accuracy"].tolist() == accuracies
    assert not runs.map(lambda cell: isinstance(cell, str) and cell.startswith(("[", "{", '"'))).any().any()


def test_the_ray_engine_writes_the_same_tables_bit_for_bit_as_local_processes(local_sweep, tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'pdesim[ray]'); the Ray engine is untested")
    folder, local = local_sweep
    remote = sweep(_file(tmp_path, TWO_SEEDS), out=tmp_path / "out", workers=2, engine="ray")
    assert (remote.done, remote.failed) == (2, 0)
    for name in TABLES:
        assert (remote.out / name).read_bytes() == (local.out / name).read_bytes(), name
    for seed in (0, 1):
        ours, theirs = (out / "runs" / f"seed={seed}" / "metrics.csv" for out in (remote.out, local.out))
        assert ours.read_bytes() == theirs.read_bytes()


def test_a_second_sweep_skips_the_finished_points_and_runs_only_the_new_ones(local_sweep):
    folder, first = local_sweep
    before = {name: (first.out / name).read_bytes() for name in TABLES}
    again = sweep(folder / "grid.toml", out=first.out, workers=2)
    assert (again.skipped, again.done, again.failed) == (2, 0, 0)
    assert {name: (first.out / name).read_bytes() for name in TABLES} == before
    grown = _file(folder, TRAIN_BASE + "[grid]\nseed = [0, 1, 2]\n", "grown.toml")
    more = sweep(grown, out=first.out, workers=2)
    assert (more.points, more.skipped, more.done) == (3, 2, 1)
    assert pd.read_csv(first.out / "table.csv")["runs"].tolist() == [3]


def test_a_changed_base_is_refused_rather_than_mixed_into_the_old_runs(local_sweep, capsys):
    folder, first = local_sweep
    changed = _file(folder, TWO_SEEDS.replace("steps = 3", "steps = 4"), "changed.toml")
    assert cli.main(["sweep", str(changed), "--out", str(first.out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a run of another configuration" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TRAIN_BASE + '[grid]\nnorm = ["pre", "sideways"]\n', "grid point norm=sideways: norm='sideways' is not"),
        (TRAIN_BASE + "[sweep]\nworkers = 0\n[grid]\nseed = [0]\n", "workers=0 must be an integer >= 1"),
        (TRAIN_BASE + "[sweep]\nretries = -1\n[grid]\nseed = [0]\n", "retries=-1 must be an integer >= 0"),
        (TRAIN_BASE + "[sweep]\ncpus = 2\n[grid]\nseed = [0]\n", "unknown key 'cpus' in [sweep]"),
        (TRAIN_BASE + "[sweep]\nout = '/elsewhere/sweep'\n[grid]\nseed = [0]\n", "lies outside the current directory"),
        (TRAIN_BASE + "[sweep]\nout = '../up'\n[grid]\nseed = [0]\n", "lies outside the current directory"),
        (TRAIN_BASE + "[grid]\nseed = []\n", "grid key 'seed' must map to a non-empty list"),
        (TRAIN_BASE + "[grid]\nseed = [1, 1]\n", "grid point seed=1 appears twice"),
        ('kind = "evolve"\n' + TWO_SEEDS, "kind='evolve' is not one of"),
        (TWO_SEEDS + "[extra]\nx = 1\n", "unknown entry 'extra' in the sweep file"),
        (RUN_SWEEP.replace("dim = 8", "dims = 8"), "unknown key 'dims' in a run sweep"),
        (RUN_SWEEP + 'norm = ["pre", "diagonal"]\n', "norm='diagonal'"),
        (RUN_SWEEP.replace("tokens = 8", 'preset = "explosion"\ntokens = 8'), "the explosion preset needs"),
    ],
)
def test_a_bad_sweep_file_is_one_line_and_exit_2_before_anything_runs(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", str(_file(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdesim: error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]  # nothing written


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "0"], "--workers=0 must be an integer >= 1"),
        (["--workers", "-3"], "--workers=-3 must be an integer >= 1"),
        (["--address", "ray://head:10001"], "--address names a Ray cluster; give it with --engine ray"),
        (["--engine", "dask"], "invalid choice: 'dask'"),
    ],
)
def test_bad_sweep_flags_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["sweep", str(_file(tmp_path, TWO_SEEDS)), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]


def test_the_ray_engine_without_ray_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    assert cli.main(["sweep", str(_file(tmp_path, TWO_SEEDS)), "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert err == "pdesim: error: --engine ray needs Ray, which is not installed here: pip install 'pdesim[ray]'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]


def test_an_out_directory_that_is_not_a_sweep_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert cli.main(["sweep", str(_file(tmp_path, TWO_SEEDS)), "--out", str(out)]) == 2
    assert "is not a pdesim sweep directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"] and (out / "thesis.tex").read_text() == "precious"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli.main(["sweep", str(tmp_path / "grid.toml"), "--out", str(afile)]) == 2
    assert afile.read_text() == "x"


def test_an_out_outside_the_current_directory_is_taken_from_the_command_line(tmp_path, monkeypatch):
    inside = tmp_path / "work"
    inside.mkdir()
    monkeypatch.chdir(inside)
    text = TRAIN_BASE + "[sweep]\nout = '../elsewhere'\n[grid]\nseed = [0]\n"
    plan = load_plan(_file(tmp_path, text), out=tmp_path / "elsewhere")
    assert plan.out == tmp_path / "elsewhere" and len(plan.points) == 1


def test_a_point_name_too_long_for_the_file_system_is_shortened_by_a_hash_that_tells_points_apart():
    long_a, long_b = {"note": "a" * 400}, {"note": "a" * 399 + "b"}
    name_a, name_b = point_name(long_a), point_name(long_b)
    assert len(name_a.encode()) <= NAME_LIMIT and len(name_b.encode()) <= NAME_LIMIT
    assert name_a != name_b and name_a == point_name(dict(long_a))
    assert point_name({"task": "a/b"}) != point_name({"task": "a_b"})
    assert "/" not in point_name({"task": "a/b"}) and point_name({"seed": 3}) == "seed=3"


def test_a_failed_point_keeps_its_exit_code_and_stderr_and_the_sweep_exits_1(tmp_path, capsys):
    # pathfinder needs a square seq_len: the spec accepts 32, the task generator refuses it in the child
    text = TRAIN_BASE + '[grid]\ntask = ["listops", "pathfinder"]\n'
    assert cli.main(["sweep", str(_file(tmp_path, text)), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    printed = capsys.readouterr().out
    assert "2 points: 0 finished earlier (skipped), 1 done, 1 failed" in printed
    log = (tmp_path / "out" / "failures" / "task=pathfinder.log").read_text()
    assert log.startswith("exit code 2 after 1 attempt(s)\n") and "seq_len=32 must be the square" in log
    assert [p.name for p in (tmp_path / "out" / "failures").iterdir()] == ["task=pathfinder.log"]
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert runs["exit_code"].tolist() == [0, 2] and runs["status"].tolist() == ["success", "failed"]
    assert pd.read_csv(tmp_path / "out" / "table.csv")["failed"].tolist() == [0, 1]


def test_a_run_sweep_tabulates_mean_and_std_over_seeds_of_the_individual_runs_findings(tmp_path, capsys):
    outcome = sweep(_file(tmp_path, RUN_SWEEP), out=tmp_path / "out", workers=2)
    assert (outcome.done, outcome.failed) == (2, 0)
    summaries = [json.loads((outcome.out / "runs" / f"seed={s}" / "summary.json").read_text()) for s in (0, 1)]
    table = pd.read_csv(outcome.out / "table.csv").set_index("source")
    assert table["arm"].tolist() == ["standard", "standard"] and table["runs"].tolist() == [2, 2]
    for source in ("pde", "transformer"):
        arms = [s["arms"]["standard"] if source == "pde" else s["arms"]["standard"]["transformer"] for s in summaries]
        for finding in ("growth_rate", "final_mean_cosine", "final_residual"):
            values = [arm[finding] for arm in arms]
            assert table.loc[source, f"{finding}_mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert table.loc[source, f"{finding}_std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        if "lyapunov" in arms[0]:  # where run summaries carry the largest FTLE
            lyapunov = statistics.fmean(arm["lyapunov"] for arm in arms)
            assert table.loc[source, "lyapunov_mean"] == pytest.approx(lyapunov, rel=1e-12)
    energy = [s["arms"]["standard"]["energy_monotone_fraction"] for s in summaries]
    assert table.loc["pde", "energy_monotone_fraction_mean"] == pytest.approx(statistics.fmean(energy), rel=1e-12)
    assert np.isnan(table.loc["transformer", "energy_monotone_fraction_mean"])
    # the same experiment run on its own gives the sweep's numbers exactly
    single = tmp_path / "single"
    config = outcome.out / "configs" / "seed=1.toml"
    assert cli.main(["run", "--config", str(config), "--quiet", "--out", str(single)]) == 0
    alone = json.loads((single / "summary.json").read_text())["arms"]["standard"]
    assert alone["growth_rate"] == summaries[1]["arms"]["standard"]["growth_rate"]
    assert (outcome.out / "findings.png").stat().st_size > 10_000


def test_the_accuracy_axis_always_spans_at_least_one_point_either_side():
    assert _accuracy_limits(np.array([0.5, 0.5])) == pytest.approx((0.49, 0.51))
    low, high = _accuracy_limits(np.array([0.10, 0.60, 0.35]))
    assert low == pytest.approx(0.06) and high == pytest.approx(0.64)
    assert _accuracy_limits(np.array([0.999, 1.0])) == pytest.approx((0.989, 1.0))


def test_the_shipped_sweeps_validate_with_one_distinct_short_name_per_point(monkeypatch):
    monkeypatch.chdir(ROOT)
    positions = load_plan(ROOT / "sweeps" / "positions.toml")
    forward = load_plan(ROOT / "sweeps" / "forward_switches.toml")
    assert (len(positions.points), len(forward.points)) == (54, 16)
    for plan in (positions, forward):
        names = [p.name for p in plan.points]
        assert len(set(names)) == len(names) and max(len(n.encode()) for n in names) <= NAME_LIMIT
    assert forward.kind == "run" and forward.points[0].tables["pde"]["tokens"] == 16


def test_a_sweep_stopped_by_sigterm_keeps_the_partial_run_tabulates_it_as_interrupted_and_exits_130(tmp_path):
    import os
    import signal
    import subprocess
    import time

    text = TRAIN_BASE.replace("steps = 3", "steps = 100000").replace("eval_every = 1", "eval_every = 50")
    grid = _file(tmp_path, text + "[sweep]\nworkers = 1\n[grid]\nseed = [0, 1]\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    sweep_process = subprocess.Popen(
        [sys.executable, "-m", "pdesim", "sweep", str(grid), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list((out / "runs").glob(".seed=0.*")) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # training has begun
    sweep_process.send_signal(signal.SIGTERM)
    stdout, _ = sweep_process.communicate(timeout=180)
    assert sweep_process.returncode == 130 and "interrupted: the points finished so far" in stdout
    summary = json.loads((out / "runs" / "seed=0" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and 0 < summary["steps_done"] < 100000
    runs = pd.read_csv(out / "runs.csv")
    assert runs["status"].tolist() == ["interrupted", "not run"] and runs["exit_code"].fillna(-1).tolist() == [130, -1]
    assert pd.read_csv(out / "table.csv")["runs"].tolist() == [0] and not list((out / "failures").iterdir())
    assert not list((out / "runs").glob(".*"))  # no staging directory left behind


def test_a_ray_cluster_out_of_reach_is_one_line_and_leaves_nothing_on_disk(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'pdesim[ray]'); the Ray engine is untested")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert cli.main(["sweep", str(_file(tmp_path, TWO_SEEDS)), "--engine", "ray", "--address", "auto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdesim: error: cannot start or reach a Ray cluster at auto: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.toml"]
