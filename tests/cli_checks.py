"""Shared checks of how the command line refuses bad input: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

from pdesim.app import cli


def refused(args: list[str], capsys, tmp_path: Path, monkeypatch) -> str:
    """Runs the CLI in an empty working directory; asserts exit 2, one line, no traceback, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pdesim: error: ") and "Traceback" not in err
    assert list(work.iterdir()) == []  # no runs/, no staging directory, no --out
    return err
