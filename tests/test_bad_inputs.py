"""Every bad input is one line: exit code 2, one ``pdesim: error:`` line on stderr, no traceback, nothing written.

The CLI runs in-process (``cli.main(argv)``) in an empty working directory holding only the
input files a case needs; each case must leave that directory exactly as it was (no ``runs/``,
no staging directory, no half-written output). The machine's memory is fixed at 16 GB for these
tests, so the size refusals do not depend on where they run. API misuse raises the API's own
one-line error type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pdesim.app import budget, cli, tomlio
from pdesim.app.rundir import CSV_COLUMNS
from pdesim.app.spec import RunSpec
from pdesim.config import ConfigError, PDEConfig
from pdesim.model import MasterPDE

TINY = ["--tokens", "8", "--dim", "8", "--heads", "2", "--t-end", "0.2", "--saves", "3", "--layers", "2"]
RUN = ["run", *TINY, "--quiet"]
INFO = ["info", *TINY]

GOOD_SUMMARY = json.dumps(
    {"pdesim": {"version": "test"}, "preset": "standard", "arms": {"standard": {"status": "success"}}}
)
GOOD_METRICS = ",".join(CSV_COLUMNS) + "\n" + ",".join(["standard", "pde"] + ["1.0"] * (len(CSV_COLUMNS) - 2)) + "\n"
TRAIN_SUMMARY = json.dumps({"pdesim": {}, "kind": "train", "status": "success"})

# Input files: path -> text (str) or bytes; a path ending in "/" is an empty directory.
FILES: dict[str, str | bytes] = {
    "notes.txt": "not a directory\n",
    "emptydir/": "",
    "configdir/": "",
    "proj/config.toml": "x = 1\n",
    "proj/thesis.tex": "precious\n",
    "binary.toml": bytes(range(256)),
    "nul.toml": b"[run]\x00\n",
    "invalid.toml": "dt = = 1\n",
    "dt_string.toml": '[run]\ndt = "0.1"\n',
    "run_int.toml": "run = 5\n",
    "pde_int.toml": "pde = 3\n",
    "t_end_bool.toml": "[run]\nt_end = true\n",
    "baseline_yes.toml": '[run]\nbaseline = "yes"\n',
    "saves_float.toml": "[run]\nsaves = 2.5\n",
    "solver_int.toml": "[run]\nsolver = 5\n",
    "unknown_table.toml": "[runn]\ndt = 0.1\n",
    "train_table.toml": "[train]\nlr = 0.001\n",
    "unknown_key.toml": "[run]\nsteps = 4\n",
    "pde_tokens_string.toml": '[pde]\ntokens = "8"\n',
    "pde_unknown.toml": "[pde]\nlayers = 3\n",
    "dt_adaptive.toml": '[run]\nsolver = "dopri5"\ndt = 0.1\n',
    "rtol_fixed.toml": '[run]\nsolver = "rk4"\nrtol = 1e-6\n',
    "null_not_list.toml": "[run]\nnull = 5\n",
    "null_and_value.toml": '[run]\ndt = 0.1\nnull = ["dt"]\n',
    "null_unknown.toml": '[run]\nnull = ["clip"]\n',
    "preset_int.toml": "[run]\npreset = 5\n",
    "preset_bogus.toml": '[run]\npreset = "bogus"\n',
    "blowup_nan.toml": "[run]\nblowup = nan\n",
    "batch_zero.toml": "[run]\nbatch = 0\n",
    "dtype_bad.toml": '[pde]\ndtype = "float8"\n',
    "diffusion_string.toml": '[pde]\ndiffusion = "x"\n',
    "residual_string.toml": '[pde]\nresidual = "no"\n',
    "seed_negative.toml": "[pde]\nseed = -1\n",
    "tokens_huge.toml": "[pde]\ntokens = 99999999999\n",
    "good/summary.json": GOOD_SUMMARY,
    "good/metrics.csv": GOOD_METRICS,
    "good2/summary.json": GOOD_SUMMARY,
    "good2/metrics.csv": GOOD_METRICS,
    "marked/summary.json": GOOD_SUMMARY,
    "marked_foreign/summary.json": GOOD_SUMMARY,
    "marked_foreign/thesis.tex": "precious\n",
    "garbage/summary.json": "this is not json",
    "garbage/metrics.csv": GOOD_METRICS,
    "truncated/summary.json": GOOD_SUMMARY[:20],
    "truncated/metrics.csv": GOOD_METRICS,
    "empty_summary/summary.json": "",
    "empty_summary/metrics.csv": GOOD_METRICS,
    "list_summary/summary.json": "[1, 2]",
    "list_summary/metrics.csv": GOOD_METRICS,
    "no_preset/summary.json": json.dumps({"arms": {}}),
    "no_preset/metrics.csv": GOOD_METRICS,
    "arms_number/summary.json": json.dumps({"preset": "standard", "arms": 5}),
    "arms_number/metrics.csv": GOOD_METRICS,
    "arm_no_status/summary.json": json.dumps({"preset": "standard", "arms": {"a": {}}}),
    "arm_no_status/metrics.csv": GOOD_METRICS,
    "binary_summary/summary.json": bytes(range(256)),
    "binary_summary/metrics.csv": GOOD_METRICS,
    "no_metrics/summary.json": GOOD_SUMMARY,
    "empty_metrics/summary.json": GOOD_SUMMARY,
    "empty_metrics/metrics.csv": "",
    "missing_column/summary.json": GOOD_SUMMARY,
    "missing_column/metrics.csv": "arm,source,t\nstandard,pde,0.0\n",
    "bad_number/summary.json": GOOD_SUMMARY,
    "bad_number/metrics.csv": GOOD_METRICS.replace("1.0", "abc", 1),
    "extra_cells/summary.json": GOOD_SUMMARY,
    "extra_cells/metrics.csv": GOOD_METRICS.strip() + ",1.0,2.0\n",
    "short_row/summary.json": GOOD_SUMMARY,
    "short_row/metrics.csv": GOOD_METRICS.splitlines()[0] + "\nstandard,pde\n",
    "binary_metrics/summary.json": GOOD_SUMMARY,
    "binary_metrics/metrics.csv": bytes(range(256)),
    "summary_dir/summary.json/": "",
    "bogus_kind/summary.json": json.dumps({"kind": "bogus"}),
    "train_dir/summary.json": TRAIN_SUMMARY,
    "train_no_status/summary.json": json.dumps({"kind": "train"}),
}

CASES: list[tuple[list[str], str]] = [
    # -- run: sizes and numbers ---------------------------------------------------------------------
    ([*RUN, "--tokens", "0"], "tokens=0 must be an integer >= 1"),
    ([*RUN, "--tokens", "-1"], "tokens=-1"),
    ([*RUN, "--tokens", "abc"], "invalid int value"),
    ([*RUN, "--tokens", "1e3"], "invalid int value"),
    ([*RUN, "--tokens", "99999999999"], "would need about"),
    ([*RUN, "--dim", "0"], "dim=0"),
    ([*RUN, "--dim", "9"], "dim=9 is not divisible by heads=2"),
    ([*RUN, "--heads", "0"], "heads=0"),
    ([*RUN, "--heads", "3"], "not divisible by heads=3"),
    ([*RUN, "--diffusion", "-1"], "diffusion=-1.0 must be a finite number >= 0"),
    ([*RUN, "--diffusion", "nan"], "diffusion=nan"),
    ([*RUN, "--diffusion", "inf"], "diffusion=inf"),
    ([*RUN, "--diffusion", "abc"], "invalid float value"),
    ([*RUN, "--bc", "robin"], "bc='robin' is not one of"),
    ([*RUN, "--init-scale", "-1"], "init_scale=-1.0"),
    ([*RUN, "--init-scale", "nan"], "init_scale=nan"),
    ([*RUN, "--seed", "-1"], "seed=-1"),
    ([*RUN, "--solver", "rk5"], "solver='rk5' is not one of"),
    ([*RUN, "--solver", ""], "solver='' is not one of"),
    ([*RUN, "--dt", "0"], "dt=0.0"),
    ([*RUN, "--dt", "-0.1"], "dt=-0.1"),
    ([*RUN, "--dt", "nan"], "dt=nan"),
    ([*RUN, "--dt", "inf"], "dt=inf"),
    ([*RUN, "--steps", "0"], "--steps=0 must be at least 1"),
    ([*RUN, "--steps", "-3"], "--steps=-3"),
    ([*RUN, "--steps", "4", "--dt", "0.1"], "give --steps or --dt, not both"),
    ([*RUN, "--t-end", "0"], "t_end=0.0"),
    ([*RUN, "--t-end", "-1"], "t_end=-1.0"),
    ([*RUN, "--t-end", "nan"], "t_end=nan"),
    ([*RUN, "--t-end", "inf"], "t_end=inf"),
    ([*RUN, "--saves", "1"], "saves=1 must be an integer >= 2"),
    ([*RUN, "--saves", "0"], "saves=0"),
    ([*RUN, "--saves", "1e9"], "invalid int value"),
    ([*RUN, "--saves", "1000000000"], "this run would need about"),
    ([*RUN, "--layers", "0"], "layers=0"),
    ([*RUN, "--layers", "1e8"], "invalid int value"),
    ([*RUN, "--layers", "100000000"], "(mostly measured trajectories: 410 GB)"),
    ([*RUN, "--batch", "0"], "batch=0"),
    ([*RUN, "--batch", "1e8"], "invalid int value"),
    ([*RUN, "--batch", "100000000"], "would need about"),
    ([*RUN, "--tokens", "100000"], "this run would need about 960 GB"),
    ([*RUN, "--tokens", "100000", "--heads", "1", "--dim", "1"], "(mostly metric Gram matrices: 480 GB)"),
    ([*RUN, "--blowup", "0"], "blowup=0.0"),
    ([*RUN, "--blowup", "-1"], "blowup=-1.0"),
    ([*RUN, "--blowup", "nan"], "blowup=nan"),
    ([*RUN, "--t-end", "1e9", "--dt", "1e-9"], "would take about"),
    # -- run: conflicting flags -----------------------------------------------------------------------
    ([*RUN, "--rtol", "1e-6"], "--rtol is a tolerance of adaptive solvers; the fixed-step solver rk4"),
    ([*RUN, "--solver", "euler", "--atol", "1e-6"], "--atol is a tolerance of adaptive solvers"),
    ([*RUN, "--solver", "dopri5", "--steps", "10"], "--steps sets the step of fixed-step solvers; dopri5"),
    ([*RUN, "--solver", "dopri5", "--dt", "0.1"], "--dt sets the step of fixed-step solvers"),
    ([*RUN, "--solver", "dopri5", "--rtol", "0"], "rtol=0.0"),
    ([*RUN, "--solver", "dopri5", "--rtol", "-1"], "rtol=-1.0"),
    ([*RUN, "--solver", "dopri5", "--atol", "nan"], "atol=nan"),
    ([*RUN, "--no-layernorm", "--norm", "pre"], "--no-layernorm contradicts --norm pre"),
    ([*RUN, "--norm", "bogus"], "invalid choice"),
    ([*RUN, "--dtype", "float16"], "invalid choice"),
    ([*RUN, "--preset", "bogus"], "invalid choice"),
    ([*RUN, "--preset", "explosion", "--config", "dt_string.toml"], "give --preset or --config, not both"),
    ([*RUN, "--preset", "explosion", "--norm", "pre"], "the explosion preset needs"),
    ([*RUN, "--text", "hi"], "--text, --ids and --steps-per-layer go with --pretrained"),
    ([*RUN, "--ids", "1,2"], "go with --pretrained"),
    ([*RUN, "--steps-per-layer", "2"], "go with --pretrained"),
    (["run", "--pretrained", "/nonexistent", "--text", "hi", "--quiet"], "/nonexistent"),
    (["run", "--pretrained", "/nonexistent", "--text", "hi", "--tokens", "8"], "--tokens does not apply"),
    ([*RUN, "--bogus-flag"], "unrecognized arguments"),
    # -- run: devices ---------------------------------------------------------------------------------
    ([*RUN, "--device", "cuda:99"], "device='cuda:99' is not available here"),
    ([*RUN, "--device", "gpu"], "device='gpu'"),
    ([*RUN, "--device", ""], "device=''"),
    # -- run: config files ----------------------------------------------------------------------------
    ([*RUN, "--config", "/nonexistent.toml"], "config file '/nonexistent.toml' does not exist"),
    ([*RUN, "--config", "configdir"], "is a directory"),
    ([*RUN, "--config", "binary.toml"], "is not a text file"),
    ([*RUN, "--config", "nul.toml"], "is not a text file"),
    ([*RUN, "--config", "invalid.toml"], "is not valid TOML"),
    ([*RUN, "--config", "dt_string.toml"], "dt='0.1' must be a finite number"),
    ([*RUN, "--config", "run_int.toml"], "run = 5 in the config must be a table [run]"),
    ([*RUN, "--config", "pde_int.toml"], "pde = 3 in the config must be a table [pde]"),
    ([*RUN, "--config", "t_end_bool.toml"], "t_end=True must be a finite number"),
    ([*RUN, "--config", "baseline_yes.toml"], "baseline='yes' must be true or false"),
    ([*RUN, "--config", "saves_float.toml"], "saves=2.5 must be an integer"),
    ([*RUN, "--config", "solver_int.toml"], "solver=5 is not one of"),
    ([*RUN, "--config", "unknown_table.toml"], "unknown table [runn]"),
    ([*RUN, "--config", "train_table.toml"], "unknown table [train]"),
    ([*RUN, "--config", "unknown_key.toml"], "unknown key 'steps' in [run]"),
    ([*RUN, "--config", "pde_tokens_string.toml"], "tokens='8' must be an integer"),
    ([*RUN, "--config", "pde_unknown.toml"], "unknown config key 'layers'"),
    (["run", "--quiet", "--config", "dt_adaptive.toml"], "[run] dt=0.1 applies to fixed-step solvers"),
    (["run", "--quiet", "--config", "rtol_fixed.toml"], "rtol=1e-06 is a tolerance of adaptive solvers"),
    ([*RUN, "--config", "null_not_list.toml"], "null in [run] must be a list of key names"),
    ([*RUN, "--config", "null_and_value.toml"], "'dt' in [run] has a value and is also listed in null"),
    ([*RUN, "--config", "null_unknown.toml"], "unknown key 'clip' in [run]"),
    ([*RUN, "--config", "preset_int.toml"], "preset=5 must be a preset name"),
    ([*RUN, "--config", "preset_bogus.toml"], "preset='bogus' is not one of"),
    ([*RUN, "--config", "blowup_nan.toml"], "blowup=nan"),
    ([*RUN, "--config", "batch_zero.toml"], "batch=0"),
    ([*RUN, "--config", "dtype_bad.toml"], "dtype='float8' is not one of"),
    ([*RUN, "--config", "diffusion_string.toml"], "diffusion='x'"),
    ([*RUN, "--config", "residual_string.toml"], "residual='no' must be true or false"),
    ([*RUN, "--config", "seed_negative.toml"], "seed=-1"),
    (["run", "--quiet", "--config", "tokens_huge.toml"], "would need about"),
    # -- run: where it writes -------------------------------------------------------------------------
    ([*RUN, "--out", "/dev/null"], "--out /dev/null exists and is not a directory"),
    ([*RUN, "--out", "notes.txt"], "--out notes.txt exists and is not a directory"),
    ([*RUN, "--out", "proj"], "--out proj exists and is not a pdesim run directory"),
    ([*RUN, "--out", "proj", "--overwrite"], "is not a pdesim run directory"),
    ([*RUN, "--out", "."], "--out . is the working directory or holds it"),
    ([*RUN, "--out", ".."], "--out .. is the working directory or holds it"),
    ([*RUN, "--out", "marked"], "holds an earlier pdesim run; pass --overwrite"),
    ([*RUN, "--out", "marked_foreign", "--overwrite"], "holds files pdesim did not write (thesis.tex)"),
    ([*RUN, "--out", "notes.txt/sub"], "cannot write into"),
    # -- info ---------------------------------------------------------------------------------------
    (["info", "--tokens", "20000"], "this report would need about 38.6 GB of memory (mostly attention scores"),
    ([*INFO, "--tokens", "20000"], "this report would need about 19.2 GB"),
    ([*INFO, "--solver", "dopri5", "--dt", "0.1"], "--dt sets the step of fixed-step solvers; dopri5"),
    ([*INFO, "--solver", "dopri5", "--steps", "4"], "--steps sets the step"),
    ([*INFO, "--rtol", "1e-3"], "--rtol is a tolerance of adaptive solvers"),
    ([*INFO, "--tokens", "0"], "tokens=0"),
    ([*INFO, "--device", "cuda:99"], "is not available here"),
    ([*INFO, "--config", "binary.toml"], "is not a text file"),
    ([*INFO, "--config", "configdir"], "is a directory"),
    ([*INFO, "--text", "hi"], "go with --pretrained"),
    ([*INFO, "--preset", "bogus"], "invalid choice"),
    ([*INFO, "--quiet"], "unrecognized arguments: --quiet"),
    # -- compare --------------------------------------------------------------------------------------
    (["compare"], "the following arguments are required: runs"),
    (["compare", "nonexistent"], "nonexistent is not a directory"),
    (["compare", "notes.txt"], "notes.txt is not a directory"),
    (["compare", "emptydir"], "emptydir is not a pdesim run directory (no summary.json)"),
    (["compare", "summary_dir"], "no summary.json"),
    (["compare", "good", "garbage"], "summary.json is damaged (not JSON"),
    (["compare", "good", "truncated"], "summary.json is damaged (not JSON"),
    (["compare", "empty_summary"], "summary.json is damaged (not JSON"),
    (["compare", "list_summary"], "is damaged (not a JSON object)"),
    (["compare", "binary_summary"], "summary.json cannot be read"),
    (["compare", "no_preset"], "summary.json is damaged (no 'preset')"),
    (["compare", "arms_number"], "summary.json is damaged (AttributeError)"),
    (["compare", "arm_no_status"], "summary.json is damaged (no 'status')"),
    (["compare", "good", "no_metrics"], "no_metrics is not a pdesim run directory (no metrics.csv)"),
    (["compare", "good", "empty_metrics"], "metrics.csv is empty or damaged (no header row)"),
    (["compare", "good", "missing_column"], "metrics.csv is damaged: it has no 'mean_token_norm' column"),
    (["compare", "good", "bad_number"], "metrics.csv is damaged: line 2 has t='abc', not a number"),
    (["compare", "good", "extra_cells"], "line 2 has more cells than the header"),
    (["compare", "good", "short_row"], "line 2 has fewer cells than the header"),
    (["compare", "good", "binary_metrics"], "metrics.csv cannot be read"),
    (["compare", "good", "train_dir"], "not both"),
    (["compare", "bogus_kind"], "not kind='bogus'"),
    (["compare", "train_no_status"], "summary.json is damaged (no 'status')"),
    (["compare", "good", "good2", "--out", "notes.txt"], "--out notes.txt exists and is not a directory"),
    (["compare", "good", "good2", "--out", "proj"], "--out proj exists and is not a pdesim run directory"),
    (["compare", "good", "good2", "--out", "/dev/null"], "is not a directory"),
    # -- the command line itself, train and sweep -------------------------------------------------
    ([], "the following arguments are required: command"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["train", "--dim", "15", "--quiet"], "dim=15 is not divisible by heads=4"),
    (["train", "--steps", "0", "--quiet"], "steps=0"),
    (["train", "--task", "bogus", "--quiet"], "bogus"),
    (["train", "--config", "binary.toml", "--quiet"], "is not a text file"),
    (["train", "--config", "configdir", "--quiet"], "is a directory"),
    (["train", "--clip", "1", "--no-clip", "--quiet"], "give --clip or --no-clip, not both"),
    (["sweep", "/nonexistent.toml"], "config file '/nonexistent.toml' does not exist"),
    (["sweep", "binary.toml"], "is not a text file"),
]


def _write_inputs(root: Path) -> None:
    for name, content in FILES.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _write_inputs(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(budget, "_physical_memory", lambda: 16 * 10**9)
    return tmp_path


def test_there_are_at_least_a_hundred_cli_cases():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("argv", "message"), CASES, ids=[" ".join(argv) or "<none>" for argv, _ in CASES])
def test_a_bad_input_is_one_line_exit_2_and_leaves_the_directory_as_it_was(workdir, capsys, argv, message):
    before = _snapshot(workdir)
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("pdesim: error: "), lines[0]
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(workdir) == before


def test_the_undamaged_inputs_compare_cleanly(workdir, capsys):
    """The control: the directories the damaged ones are made from are accepted."""
    assert cli.main(["compare", "good", "good2", "--out", "cmp"]) == 0
    assert (workdir / "cmp" / "norms.png").stat().st_size > 1000
    assert "== good: preset standard" in capsys.readouterr().out


# -- the API: its own one-line error types ----------------------------------------------------------

MODEL = MasterPDE(PDEConfig(tokens=8, dim=8, heads=2))
STATE = MODEL.initial_state(2)

API_STATES = [
    (STATE.double(), "the state is torch.float64 but the module is torch.float32"),
    (STATE[0], "the state has shape (8, 8); MasterPDE takes (batch, tokens, dim=8)"),
    (STATE[:, :4], "the state has 4 tokens but the diffusion grid has tokens=8"),
    (STATE[..., :4], "MasterPDE takes (batch, tokens, dim=8)"),
    (STATE.unsqueeze(0), "the state has shape (1, 2, 8, 8)"),
    ("u", "the state must be a torch.Tensor"),
    (STATE.numpy(), "not ndarray"),
    (torch.zeros(2, 8, 8, dtype=torch.int64), "the state is torch.int64"),
]


@pytest.mark.parametrize(("state", "message"), API_STATES, ids=[m for _, m in API_STATES])
def test_master_pde_refuses_a_state_it_cannot_take_in_one_line(state, message):
    with pytest.raises(ConfigError) as err:
        MODEL(0.0, state)
    assert message in str(err.value) and "\n" not in str(err.value)


API_CONFIGS = [
    ({"tokens": 0}, "tokens=0"),
    ({"dim": 6, "heads": 4}, "dim=6 is not divisible by heads=4"),
    ({"norm": "layer"}, "norm='layer'"),
    ({"residual": "yes"}, "residual='yes' must be true or false"),
    ({"diffusion": [0.1, 0.2]}, "diffusion has 2 entries but dim=32"),
    ({"device": "not a device"}, "is not a torch device name"),
]


@pytest.mark.parametrize(("changes", "message"), API_CONFIGS, ids=[m for _, m in API_CONFIGS])
def test_a_bad_pde_config_is_one_config_error(changes, message):
    with pytest.raises(ConfigError) as err:
        PDEConfig(**changes)
    assert message in str(err.value)


def test_a_run_spec_refuses_tolerances_for_a_fixed_step_solver():
    with pytest.raises(ConfigError, match="rtol=0.001 is a tolerance of adaptive solvers"):
        RunSpec(rtol=1e-3)
    with pytest.raises(ConfigError, match=r"pde = 1 in the config must be a table \[pde\]"):
        RunSpec.from_tables({"pde": 1})


def test_tomlio_load_refuses_what_is_not_a_toml_text_file(tmp_path):
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    for path, message in [(tmp_path, "is a directory"), (tmp_path / "bin.toml", "is not a text file")]:
        with pytest.raises(tomlio.TomlError, match=message):
            tomlio.load(str(path))
