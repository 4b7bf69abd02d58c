"""A run's Lyapunov curves, figures, formats, labels, and ``pdesim plot``: numbers, colours and file signatures."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pdesim.app import cli
from pdesim.app import measure as M
from pdesim.app.figures import RunData, plan_run_figures
from pdesim.app.presets import finding_sentence
from pdesim.config import PDEConfig
from pdesim.model import MasterPDE
from probes import plots

TINY = ["--tokens", "16", "--dim", "16", "--heads", "2", "--batch", "2", "--quiet"]
SHORT = ["--t-end", "2", "--saves", "9", "--layers", "4"]
SIGNATURES = {"png": (b"\x89PNG\r\n\x1a\n",), "pdf": (b"%PDF",), "svg": (b"<?xml", b"<svg")}


def _run(tmp_path: Path, *args: str, name: str = "run") -> tuple[int, dict, Path]:
    out = tmp_path / name
    code = cli.main(["run", *TINY, *args, "--out", str(out)])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    return code, summary, out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def explosion_run(tmp_path_factory):
    """A tiny explosion run: a blowing-up arm beside the standard one, with every figure."""
    tmp = tmp_path_factory.mktemp("explosion")
    code, summary, out = _run(tmp, "--preset", "explosion", "--t-end", "12", "--saves", "25", "--layers", "12")
    assert code == 0
    return summary, out


# -- the Lyapunov exponents of a run ---------------------------------------------------------------


def test_every_arm_and_source_has_a_finite_lyapunov_column_and_summary(explosion_run):
    summary, out = explosion_run
    rows = _csv(out / "metrics.csv")
    assert "lyapunov" in rows[0]
    for label, arm in summary["arms"].items():
        for source, entry in (("pde", arm), ("transformer", arm["transformer"])):
            values = [float(r["lyapunov"]) for r in rows if r["arm"] == label and r["source"] == source]
            finite = [v for v in values if math.isfinite(v)]
            assert len(finite) >= 4 and math.isnan(values[0])  # no exponent at t = 0
            assert entry["lyapunov"] == finite[-1]  # the summary states the last running value
            assert len(entry["lyapunov_spectrum"]) == M.SPECTRUM_K
            assert all(math.isfinite(x) for x in entry["lyapunov_spectrum"]) and entry["lyapunov_method"]
    exploding, standard = summary["arms"]["no-layernorm"], summary["arms"]["standard"]
    # without LayerNorm nearby trajectories separate fast, in the PDE and in the network alike
    assert exploding["lyapunov"] > 0.3 and exploding["transformer"]["lyapunov"] > 0.3
    assert abs(standard["lyapunov"]) < 0.2 and abs(standard["transformer"]["lyapunov"]) < 0.2
    # the largest exponent bounds the spectrum's first one from the same tangent estimator, within its spread
    assert exploding["lyapunov_spectrum"][0] > 0.3


def test_a_pure_decay_has_every_exponent_at_minus_its_rate():
    cfg = PDEConfig(tokens=4, dim=4, heads=1, attention=False, reaction=False, residual=False, decay=0.5,
                    diffusion=0.0, norm="none", dtype="float64")
    model = MasterPDE(cfg)
    found = M.flow_lyapunov(model, model.initial_state(batch=2), torch.linspace(0, 4, 17, dtype=torch.float64))
    # the midpoint rule at dt = 0.25: log(1 - 0.125 + 0.0078125) / 0.25 = -0.4986
    assert torch.allclose(found.largest, torch.full_like(found.largest, -0.4986), atol=1e-3)
    # the spectrum's midpoint steps of dt = T/16 = 0.25 decay by 1 - 0.125 + 0.0078125 per step
    per_unit_time = math.log(1 - 0.125 + 0.0078125) / 0.25
    assert torch.allclose(found.spectrum, torch.full((4,), per_unit_time, dtype=torch.float64), atol=1e-9)


def test_diffusion_alone_has_exponents_below_zero_approaching_it():
    cfg = PDEConfig(tokens=8, dim=2, heads=1, attention=False, reaction=False, diffusion=0.5, norm="none",
                    dtype="float64")
    model = MasterPDE(cfg)
    found = M.flow_lyapunov(model, model.initial_state(batch=2), torch.linspace(0, 20, 21, dtype=torch.float64))
    assert (found.largest < 0).all() and found.largest[-1] > -0.1  # the constant mode: λ₁ → 0 from below
    assert (found.spectrum <= 1e-12).all()


def test_the_run_spectrum_without_residual_agrees_with_a_fine_rk4_reference():
    """The decay replacing the residual bounds the cheap step: a step past 2/κ_r would read growth."""
    import probes
    from pdesim.app.presets import preset_spec

    model = MasterPDE(preset_spec("standard").pde.replace(residual=False))  # the default run's size
    u0 = model.initial_state(batch=1)
    cheap = M.flow_lyapunov(model, u0, torch.linspace(0, 8, 41))
    reference = probes.lyapunov_spectrum(model, u0, 8.0, k=4, dt=0.05, method="rk4", renormalize_every=0.5, seed=0)
    assert max(cheap.spectrum) == pytest.approx(max(reference["final"]).item(), abs=0.05)
    assert max(cheap.spectrum) < 0


def test_the_layer_map_spectrum_of_a_diagonal_map_is_the_log_of_its_factors_per_unit_depth():
    factors = torch.tensor([2.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    u0 = torch.randn(2, 1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    found = M.map_lyapunov([lambda x: x * factors] * 40, u0, 0.5, stop=1e300)
    assert torch.allclose(found.spectrum, factors.log() / 0.5, atol=0.05)
    assert abs(float(found.largest[-1]) - math.log(2.0) / 0.5) < 0.05
    assert torch.allclose(found.t, 0.5 * torch.arange(1, 41, dtype=torch.float64))


def test_the_layer_map_stops_at_the_blowup_threshold():
    u0 = torch.ones(1, 1, 2, dtype=torch.float64)
    found = M.map_lyapunov([lambda x: 10 * x] * 8, u0, 1.0, stop=1e4)
    assert len(found.t) == 4  # 10 .. 1e4 do not exceed 1e4 (the run's blow-up rule); 1e5 does
    assert math.isclose(float(found.largest[-1]), math.log(10.0), rel_tol=1e-12)


# -- figures: colours, scales, marks ---------------------------------------------------------------


def _synthetic(arms: int) -> RunData:
    rows, summary = [], {"preset": "standard", "arms": {}}
    t = np.linspace(0.0, 4.0, 5)
    for k in range(arms):
        label = f"arm{k}"
        summary["arms"][label] = {"status": "success", "t_event": None, "energy_functional": f"E{k % 2}",
                                  "energy_is_exact": k == 0, "sources": {"pde": f"PDE {k}", "transformer": f"TF {k}"},
                                  "blowup_threshold": 1e6, "lyapunov_spectrum": [0.1, 0.0],
                                  "transformer": {"blowup_layer": None, "lyapunov_spectrum": [0.2, 0.1]}}
        for source in ("pde", "transformer"):
            for time in t:
                rows.append({"arm": label, "source": source, "t": time, "mean_token_norm": 1 + time, "max_abs": 2.0,
                             "mean_cosine": 0.5, "cka": 0.5, "residual": 0.1, "energy": 10.0 ** (3 * k) * (1 + time),
                             "lyapunov": math.nan if time == 0 else 0.1 * k, "clusters": 3.0,
                             "mean_pairwise_cosine": 0.2})
    return RunData(rows, summary, {})


def test_each_arm_keeps_one_colour_in_every_figure_and_no_two_arms_share_one():
    plans = plan_run_figures(_synthetic(7))
    colour_of: dict[str, set] = {}
    for plan in plans:
        for panel in plan.panels:
            for curve in panel.curves:
                arm = curve.label.split(" ")[-1]  # "PDE 3" / "TF 3"
                colour_of.setdefault(arm, set()).add(tuple(np.round(curve.colour, 6)))
    assert len(colour_of) == 7 and all(len(c) == 1 for c in colour_of.values())
    assert len({next(iter(c)) for c in colour_of.values()}) == 7  # seven arms, seven colours


def test_series_colours_do_not_repeat():
    colours = plots.series_colours(f"s{k}" for k in range(40))
    assert len({tuple(np.round(c, 6)) for c in colours.values()}) == 40


def test_energy_gets_a_panel_per_functional_on_a_log_axis_and_says_where_it_is_no_lyapunov_function():
    plan = next(p for p in plan_run_figures(_synthetic(4)) if p.stem == "energy")
    assert [panel.title for panel in plan.panels] == ["E0", "E1"]
    assert plan.panels[0].scale[0] == "log"  # 10 .. 5e6 spans decades
    assert "not a Lyapunov function of: PDE 2" in plan.panels[0].note
    assert "not a Lyapunov function of: PDE 1, PDE 3" in plan.panels[1].note


def test_axis_scale_reads_decades():
    assert plots.axis_scale([np.array([1.0, 2.0, 3.0])])[0] == "linear"
    assert plots.axis_scale([np.array([1.0, 1e5])])[0] == "log"
    kind, linthresh = plots.axis_scale([np.array([-1e6, -1e3, -1.0, 0.0, 1.0, 10.0, 1e2, 1e4, 1e6, 1e8])])
    assert kind == "symlog" and 0 < linthresh < 1e3
    assert plots.axis_scale([np.array([-0.1, -0.05, 0.0, 0.02, 0.1])])[0] == "linear"  # a zero crossing alone


def test_norms_draw_the_threshold_and_each_blowup_and_the_network_after_its_pde_stopped(explosion_run):
    summary, out = explosion_run
    plan = next(p for p in plan_run_figures(RunData.read(out)) if p.stem == "norms")
    stop = summary["arms"]["no-layernorm"]["t_event"]
    assert plan.panels[1].hlines == [(1e6, "blow-up threshold 1e+06")]
    marks = {label: x for x, label, _ in plan.panels[0].vlines}
    assert marks[f"PDE no LayerNorm: blowup at t = {stop:.3g}"] == stop
    after = [c for c in plan.panels[0].curves if c.label.endswith("after the PDE stopped")]
    assert len(after) == 1 and after[0].hollow and (after[0].x >= stop).all()
    kymograph = next(p for p in plan_run_figures(RunData.read(out)) if p.stem == "kymograph")
    assert list(kymograph.images) == ["no-layernorm: PDE no LayerNorm", "standard: PDE pre-LN"]
    norm = plots.colour_norm(np.linalg.norm(u, axis=-1) for _, u in kymograph.images.values())
    assert type(norm).__name__ == "LogNorm"


# -- formats and pdesim plot -----------------------------------------------------------------------


@pytest.mark.parametrize("figure_format", ["png", "pdf", "svg"])
def test_save_figure_writes_the_format_its_suffix_names(tmp_path, figure_format):
    fig, _ = plots.new_figure("t")
    path = plots.save_figure(fig, tmp_path / f"f.{figure_format}", dpi=50)
    assert path.read_bytes().startswith(SIGNATURES[figure_format])


def test_save_figure_refuses_an_unknown_suffix_or_dpi(tmp_path):
    fig, _ = plots.new_figure("t")
    with pytest.raises(ValueError, match="suffix"):
        plots.save_figure(fig, tmp_path / "f.jpg")
    with pytest.raises(ValueError, match="dpi"):
        plots.save_figure(fig, tmp_path / "f.png", dpi=0)


def test_run_writes_svg_figures_and_plot_redraws_them_as_pdf_without_touching_the_data(tmp_path, capsys):
    code, _, out = _run(tmp_path, *SHORT, "--figure-format", "svg", "--dpi", "60")
    assert code == 0
    svgs = sorted(p.name for p in (out / "figures").iterdir())
    assert "lyapunov.svg" in svgs and "lyapunov_spectrum.svg" in svgs and not any(n.endswith(".png") for n in svgs)
    assert all((out / "figures" / n).read_bytes().startswith(SIGNATURES["svg"]) for n in svgs)
    data = {name: (out / name).read_bytes() for name in ("metrics.csv", "summary.json", "states.npz", "config.toml")}
    (out / "figures" / "notes.txt").write_text("mine")
    assert cli.main(["plot", str(out), "--figure-format", "pdf"]) == 0
    pdfs = sorted(p.name for p in (out / "figures").glob("*.pdf"))
    assert [n[:-4] for n in pdfs] == sorted(n[:-4] for n in svgs)
    assert all((out / "figures" / n).read_bytes().startswith(SIGNATURES["pdf"]) for n in pdfs)
    assert {name: (out / name).read_bytes() for name in data} == data
    assert (out / "figures" / "notes.txt").read_text() == "mine"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left behind
    assert "figures:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--dpi", "0"], "--dpi=0 must be in"), (["--figure-format", "jpg"], "invalid choice")],
)
def test_bad_figure_flags_are_one_line_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert cli.main(["run", *TINY, *SHORT, *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and not out.exists()


def test_plot_refuses_a_directory_pdesim_did_not_write(tmp_path, capsys):
    (tmp_path / "other").mkdir()
    assert cli.main(["plot", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.startswith("pdesim: error: ")


# -- labels, notes and sentences ------------------------------------------------------------------


def test_tangent_presets_label_each_source_by_what_ran_and_state_the_pairing(tmp_path, capsys):
    code, summary, out = _run(tmp_path, "--preset", "cluster", *SHORT)
    assert code == 0
    (arm,) = summary["arms"].values()
    assert arm["sources"] == {"pde": "PDE tangent", "transformer": "Transformer post-LN"}
    assert "continuum limit (h = T/L -> 0) is the tangent flow" in arm["pairing"]
    printed = capsys.readouterr().out
    assert "note: tangent PDE / post-LN net: PDE tangent beside Transformer post-LN" in printed
    assert "finding: The tokens go from " in printed and "final_clusters=" not in printed
    clusters = next(p for p in plan_run_figures(RunData.read(out)) if p.stem == "clusters")
    assert [panel.title for panel in clusters.panels] == ["cluster count", "mean pairwise cosine"]


@pytest.mark.parametrize("norm", ["tangent", "post"])
def test_no_residual_in_a_normalised_mode_warns_that_there_is_no_drift_to_see(tmp_path, capsys, norm):
    code, summary, _ = _run(tmp_path, "--norm", norm, "--no-residual", *SHORT, "--batch", "1")
    assert code == 0
    main = next(arm for arm in summary["arms"].values() if arm["role"] == "main")
    assert "drift without residual exists here only at h = 1" in main["warnings"][0]
    assert f"warning: {next(iter(summary['arms']))}: no residual under norm={norm}" in capsys.readouterr().out
    standard = summary["arms"]["standard"]
    assert "warnings" not in standard


def test_cfl_states_the_solver_and_step_of_each_arm(capsys):
    assert cli.main(["info", "--preset", "cfl", "--tokens", "16"]) == 0
    printed = capsys.readouterr().out
    for line in ("arm euler tau=0.45: PDE pre-LN by euler, dt=0.45", "arm euler tau=0.55: PDE pre-LN by euler, dt=0.55",
                 "arm etd1 tau=10: PDE pre-LN by etd1, dt=10"):
        assert line in printed


def test_a_finding_reads_as_a_sentence_with_its_numbers():
    sentence = finding_sentence("explosion", {
        "no_layernorm_growth": 5.3e4, "standard_growth": 1.2, "no_layernorm_rate": 0.9, "standard_rate": 0.01,
        "no_layernorm_status": "blowup", "no_layernorm_t_event": 12.7, "growth_ratio": 4.4e4})
    assert sentence == ("Without LayerNorm the token norm grows 5.3e+04x (rate 0.9/t, status blowup and stops at "
                        "t = 12.7); with it, 1.2x: 4.4e+04 times more growth.")


def test_a_token_uniform_state_says_why_it_has_no_cka():
    from pdesim.app.summary import cka_note

    assert cka_note(0.9, 0.3) is None
    assert "token-uniform" in cka_note(math.nan, 0.0)
    assert "rounding" in cka_note(0.14, 4e-8)
