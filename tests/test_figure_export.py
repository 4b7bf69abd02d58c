"""--figure-format and --dpi on train, compare of train runs and sweep, and ``pdesim plot`` of a train directory:
the asked format is what is written (by its header), the chance line reaches compared train runs, a user's own
files are left alone, and bad flags or a damaged directory are one line with nothing written.

The train runs are tiny (2 optimizer steps on 64 examples of length 32, one block of width 16), so the file
runs in well under a minute.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from cli_checks import refused as _refused

from pdesim.app import cli, train_figures
from pdesim.app.plot_cmd import redraw_training
from pdesim.app.sweep import sweep
from pdesim.app.train_dir import read_train_rows
from pdesim.app.train_figures import TRAIN_FIGURE_STEMS, compare_chance, plan_compare_training_figures
from pdesim.config import ConfigError

TRAIN = ["train", "--seq-len", "32", "--n-train", "64", "--n-eval", "32", "--layers", "1", "--dim", "16",
         "--heads", "2", "--batch", "16", "--eval-every", "1", "--steps", "2", "--quiet"]
SWEEP = ("[base]\nseq_len = 32\nn_train = 64\nn_eval = 32\nlayers = 1\ndim = 16\nheads = 2\nbatch = 16\nsteps = 1\n"
         "eval_every = 1\n[grid]\nseed = [0]\n")
HEADERS = {"png": (b"\x89PNG\r\n\x1a\n",), "pdf": (b"%PDF",), "svg": (b"<?xml", b"<svg")}
DRAWN = {f"{stem}.{{}}" for stem in ("loss", "grad_norm", "max_activation", "val_accuracy")}


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _drawn(figure_format: str) -> set[str]:
    return {name.format(figure_format) for name in DRAWN}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PDESIM_CACHE", str(tmp_path_factory.getbasetemp() / "task-cache"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny train runs: "png" with the default figures (seed 0), "svg" at --figure-format svg --dpi 60 (seed 1)."""
    folder = tmp_path_factory.mktemp("train")
    made = {"png": folder / "png", "svg": folder / "svg"}
    assert cli.main([*TRAIN, "--out", str(made["png"])]) == 0
    assert cli.main([*TRAIN, "--seed", "1", "--figure-format", "svg", "--dpi", "60", "--out", str(made["svg"])]) == 0
    return made


def _edit_summary(run: Path, **changes: object) -> None:
    path = run / "summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_train_with_figure_format_svg_writes_its_four_figures_as_svg_and_no_png(runs):
    figures = runs["svg"] / "figures"
    assert _names(figures) == _drawn("svg")
    assert all((figures / name).read_bytes().startswith(HEADERS["svg"]) for name in _names(figures))
    assert _names(runs["png"] / "figures") == _drawn("png")  # the default is unchanged: png, the same stems
    assert all((runs["png"] / "figures" / n).read_bytes().startswith(HEADERS["png"]) for n in _drawn("png"))


def test_a_train_directory_redrawn_at_twice_the_dpi_has_twice_the_png_width(runs, tmp_path):
    low = redraw_training(shutil.copytree(runs["png"], tmp_path / "low"), figure_format="png", dpi=50)
    high = redraw_training(shutil.copytree(runs["png"], tmp_path / "high"), figure_format="png", dpi=100)
    assert [p.name for p in low] == [p.name for p in high] and low[0].name == "loss.png"
    # the PNG header's width (IHDR); the same figure, so the pixels scale with the dpi
    width = {dpi: int.from_bytes(paths[0].read_bytes()[16:20], "big") for dpi, paths in ((50, low), (100, high))}
    assert 1.9 < width[100] / width[50] < 2.1


def test_compare_of_two_train_runs_draws_their_common_chance_line_and_writes_pdf(runs, tmp_path, capsys, monkeypatch):
    seen = {}
    original = train_figures.draw

    def recording(plan, folder, **options):
        seen[plan.filename] = (plan.chance, options)
        return original(plan, folder, **options)

    monkeypatch.setattr(train_figures, "draw", recording)
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(runs["png"]), str(runs["svg"]), "--out", str(out), "--figure-format", "pdf",
                     "--dpi", "72"]) == 0
    chance = json.loads((runs["png"] / "summary.json").read_text())["chance_accuracy"]
    assert chance == json.loads((runs["svg"] / "summary.json").read_text())["chance_accuracy"]
    assert 0 < chance < 1
    assert seen["val_accuracy.png"] == (chance, {"figure_format": "pdf", "dpi": 72.0})
    assert seen["loss.png"][0] is None
    assert _names(out) == _drawn("pdf")
    assert all((out / name).read_bytes().startswith(HEADERS["pdf"]) for name in _names(out))
    assert "comparison figures:" in capsys.readouterr().out


def test_the_compare_chance_line_is_drawn_only_when_every_run_has_the_same_chance_level(runs):
    rows = {str(run): read_train_rows(run) for run in runs.values()}
    same = {str(run): {"chance_accuracy": 0.25} for run in runs.values()}
    plans = {p.filename: p for p in plan_compare_training_figures(rows, same)}
    assert plans["val_accuracy.png"].chance == 0.25 and plans["grad_norm.png"].chance is None
    assert compare_chance({"a": {"chance_accuracy": 0.25}, "b": {"chance_accuracy": 0.5}}) is None
    assert compare_chance({"a": {"chance_accuracy": 0.25}, "b": {}}) is None
    assert compare_chance({"a": {"chance_accuracy": "0.25"}}) is None  # a damaged value draws no line
    assert compare_chance(None) is None


def test_sweep_with_figure_format_pdf_writes_its_chart_as_pdf(tmp_path, monkeypatch, capsys):
    def in_process(config, run_dir):
        return cli.main(["train", "--config", str(config), "--out", str(run_dir), "--quiet"])

    # the CLI's own sweep, with its one point trained in this process instead of a new one
    monkeypatch.setattr(cli, "run_sweep_file", lambda path, **options: sweep(path, runner=in_process, **options))
    (tmp_path / "grid.toml").write_text(SWEEP)
    out = tmp_path / "out"
    assert cli.main(["sweep", str(tmp_path / "grid.toml"), "--out", str(out), "--figure-format", "pdf",
                     "--quiet"]) == 0
    assert (out / "accuracy.pdf").read_bytes().startswith(HEADERS["pdf"])
    assert not (out / "accuracy.png").exists()
    assert "1 points: 0 finished earlier (skipped), 1 done, 0 failed" in capsys.readouterr().out


def test_plot_redraws_a_train_directory_in_svg_and_leaves_the_users_files_and_the_data_alone(runs, tmp_path, capsys):
    run = shutil.copytree(runs["png"], tmp_path / "run")
    figures = run / "figures"
    pngs = {name: (figures / name).read_bytes() for name in _drawn("png")}
    (figures / "notes.txt").write_text("mine")
    (figures / "mine.svg").write_text("<svg>mine</svg>")
    (figures / "grad_norm.svg").write_text("stale")  # pdesim's own stem in the asked format: replaced
    data = {name: (run / name).read_bytes() for name in ("metrics.csv", "summary.json", "config.toml", "run.log")}
    assert cli.main(["plot", str(run), "--figure-format", "svg"]) == 0
    assert _names(figures) == _drawn("svg") | _drawn("png") | {"notes.txt", "mine.svg"}
    assert all((figures / name).read_bytes().startswith(HEADERS["svg"]) for name in _drawn("svg"))
    assert {name: (figures / name).read_bytes() for name in _drawn("png")} == pngs
    assert (figures / "notes.txt").read_text() == "mine" and (figures / "mine.svg").read_text() == "<svg>mine</svg>"
    assert {name: (run / name).read_bytes() for name in data} == data
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no staging left behind
    # the title names the run's switches from config.toml, the chance level comes from summary.json
    accuracy = (figures / "val_accuracy.svg").read_text()
    chance = json.loads(data["summary.json"])["chance_accuracy"]
    assert "listops, transformer, norm=pre, residual=True, clip=1.0, diffusion at none" in accuracy
    assert f"chance {chance:.3f}" in accuracy
    assert capsys.readouterr().out.count(".svg") == 4


def test_plot_removes_pdesims_own_figure_of_that_format_that_the_data_no_longer_draws(runs, tmp_path):
    run = shutil.copytree(runs["png"], tmp_path / "run")
    with open(run / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(run / "metrics.csv", "w", newline="") as handle:  # as if the run had never been evaluated
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "val_accuracy": ""} for row in rows)
    (run / "figures" / "val_accuracy.svg").write_text("an earlier pdesim drawing")
    written = redraw_training(run, figure_format="svg")
    assert sorted(p.name for p in written) == ["grad_norm.svg", "loss.svg", "max_activation.svg"]
    assert not (run / "figures" / "val_accuracy.svg").exists() and (run / "figures" / "val_accuracy.png").exists()


def test_the_train_figure_stems_are_the_four_curves_whatever_the_format():
    assert TRAIN_FIGURE_STEMS == ("loss", "grad_norm", "max_activation", "val_accuracy")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda run: (run / "config.toml").unlink(), "no config.toml"),
        (lambda run: (run / "config.toml").write_text("[train\n"), "is not valid TOML"),
        (lambda run: (run / "config.toml").write_text("[other]\nx = 1\n"), "no [train] table"),
        (lambda run: (run / "config.toml").write_text("[train]\nwidth = 3\n"), "unknown key 'width'"),
        (lambda run: (run / "metrics.csv").write_text("step,loss\n1,oops\n"), "metrics.csv"),
        (lambda run: _edit_summary(run, chance_accuracy="x0"), "is damaged (chance_accuracy='x0')"),
        (lambda run: _edit_summary(run, kind="album"), "not kind='album'"),
    ],
    ids=["no-config", "bad-toml", "no-train-table", "unknown-key", "bad-metrics", "bad-chance", "foreign-kind"],
)
def test_plot_of_a_damaged_train_directory_is_one_line_and_changes_nothing(runs, tmp_path, capsys, damage, message):
    run = shutil.copytree(runs["png"], tmp_path / "run")
    damage(run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli.main(["plot", str(run), "--figure-format", "svg"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pdesim: error: ") and message in err, err
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--dpi", "0"], "--dpi=0 must be in 10..2400"), (["--dpi", "nan"], "--dpi=nan must be in"),
     (["--figure-format", "jpg"], "invalid choice")],
)
def test_bad_figure_flags_on_train_are_one_line_before_any_training(args, message, capsys, tmp_path, monkeypatch):
    assert message in _refused([*TRAIN, *args], capsys, tmp_path, monkeypatch)


def test_dpi_0_on_sweep_is_one_line_before_any_point_runs(capsys, tmp_path, monkeypatch):
    (tmp_path / "grid.toml").write_text(SWEEP)
    err = _refused(["sweep", str(tmp_path / "grid.toml"), "--dpi", "0", "--quiet"], capsys, tmp_path, monkeypatch)
    assert "--dpi=0 must be in 10..2400" in err


def test_the_sweep_and_training_functions_refuse_a_figure_format_they_cannot_write(tmp_path):
    (tmp_path / "grid.toml").write_text(SWEEP)
    with pytest.raises(ConfigError, match="--figure-format='jpg' is not one of png, pdf, svg"):
        sweep(tmp_path / "grid.toml", out=tmp_path / "out", figure_format="jpg")
    assert not (tmp_path / "out").exists()
