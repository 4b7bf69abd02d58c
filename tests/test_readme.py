"""The README stays true: its cheap forward-run commands are rerun and its tables checked to their printed digits.

The drift-and-explosion table and the presets table name the command each number comes from; this
test runs those commands in-process and checks every number in those rows to half a unit in its last
printed digit. A change that moves a number fails here until the README is regenerated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pdesim.app import cli

README = Path(__file__).resolve().parent.parent / "README.md"
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def printed_number(text: str) -> tuple[float, float]:
    """A number as the README prints it (×719, −0.025, 4e−5, 5.7·10⁴) and half a unit of its last digit."""
    text = text.replace("**", "").replace("×", "").replace("−", "-").strip()
    mantissa, _, exponent = text.partition("·10")
    if not exponent and "e" in mantissa:
        mantissa, _, exponent = mantissa.partition("e")
    power = int(exponent.translate(SUPERSCRIPTS)) if exponent else 0
    decimals = len(mantissa.partition(".")[2])
    return float(mantissa) * 10.0**power, 0.5 * 10.0 ** (power - decimals) * (1 + 1e-9)


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after a line starting with ``heading``."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    rows = []
    for line in lines[start:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # past the header and the rule


def run_summary(tmp_path: Path, name: str, *flags: str) -> dict:
    out = tmp_path / name
    assert cli.main(["run", *flags, "--quiet", "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


def test_printed_numbers_parse_with_their_precision():
    assert printed_number("**×719**") == pytest.approx((719.0, 0.5))
    assert printed_number("−0.025") == pytest.approx((-0.025, 0.0005))
    assert printed_number("4e−5") == pytest.approx((4e-5, 0.5e-5))
    assert printed_number("5.7·10⁴") == pytest.approx((5.7e4, 0.05e4))


FLAGS = {"standard": (), "`--no-layernorm`": ("--no-layernorm",), "`--no-residual`": ("--no-residual",)}
COLUMNS = ("norm_growth", "growth_rate", "final_mean_cosine", "final_residual", "lyapunov")


def test_the_drift_and_explosion_table_is_what_the_runs_beside_it_print(tmp_path):
    rows = table_after("| run (defaults, seed 0)")
    assert {row[0] for row in rows} == set(FLAGS)
    summaries = {run: run_summary(tmp_path, f"run{i}", *flags) for i, (run, flags) in enumerate(FLAGS.items())}
    for run, side, *cells in rows:
        arm = next(a for a in summaries[run]["arms"].values() if a["role"] == "main")
        measured = arm if side == "PDE" else arm["transformer"]
        for column, cell in zip(COLUMNS, cells, strict=True):
            printed, half_unit = printed_number(cell)
            assert abs(measured[column] - printed) <= half_unit, (run, side, column, measured[column], cell)


def test_the_explosion_preset_row_is_what_the_preset_prints(tmp_path):
    row = next(r for r in table_after("| preset |") if r[0] == "`explosion`")
    growth, rate, t_blowup, standard = re.search(
        r"growth ×(\S+) at rate (\S+)/t, status `blowup` at t = (\S+); standard ×(\S+)", row[1]
    ).groups()
    arms = run_summary(tmp_path, "explosion", "--preset", "explosion")["arms"]
    main = next(a for a in arms.values() if a["role"] == "main")
    reference = next(a for a in arms.values() if a["role"] != "main")
    assert main["status"] == "blowup"
    for value, cell in ((main["norm_growth"], growth), (main["growth_rate"], rate),
                        (main["t_event"], t_blowup), (reference["norm_growth"], standard)):
        printed, half_unit = printed_number(cell)
        assert abs(value - printed) <= half_unit, (value, cell)
