"""The layers import downwards only: solvers < probes < the model < training < the app.

Checked by parsing every module's imports (ast, including imports inside functions), not by
importing it: ``solvers/`` imports nothing of pdesim or probes, ``probes/`` nothing of pdesim,
the model (every module in ``pdesim/`` outside ``app/`` and ``train/``) nothing of
``pdesim.app`` or ``pdesim.train``, and ``pdesim/train/`` nothing of ``pdesim.app``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The one model-room module allowed to reach the app: ``python -m pdesim`` runs the CLI.
ENTRY_POINTS = {"pdesim/__main__.py"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in the file can load, relative imports resolved."""
    tree = ast.parse(source if source is not None else path.read_text(), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # "from pdesim import app"
    return found


def _violations(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in paths
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def _files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


# The model: everything in pdesim/ but the app, training and the entry point (tasks/ included).
MODEL_FILES = [
    p
    for p in _files("pdesim")
    if p.relative_to(REPO).parts[1] not in ("app", "train") and str(p.relative_to(REPO)) not in ENTRY_POINTS
]
APP_MODULES = ("cli", "experiment", "rundir", "figures", "stability", "tomlio", "training", "train_run")


def test_the_app_has_left_the_model_rooms():
    stray = sorted(name for name in APP_MODULES if (REPO / "pdesim" / f"{name}.py").exists())
    assert stray == [], "app and training modules belong in pdesim/app/ and pdesim/train/"


@pytest.mark.parametrize(
    ("files", "forbidden"),
    [
        (MODEL_FILES, ("pdesim.app", "pdesim.train")),
        (_files("pdesim/train"), ("pdesim.app",)),
        (_files("solvers"), ("pdesim", "probes")),
        (_files("probes"), ("pdesim",)),
    ],
    ids=["model", "train", "solvers", "probes"],
)
def test_no_layer_imports_a_layer_above_it(files, forbidden):
    assert files
    assert _violations(files, forbidden) == []


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("from .app import cli", "pdesim.app.cli"),
        ("from ..app.spec import RunSpec", "pdesim.app.spec"),  # from pdesim/tasks/
        ("from . import train", "pdesim.train"),
        ("import pdesim.train.loop", "pdesim.train.loop"),
        ("def f():\n    from pdesim.app import cli", "pdesim.app"),
    ],
)
def test_the_import_reader_resolves_relative_and_lazy_imports(source, found):
    path = REPO / ("pdesim/tasks/x.py" if source.startswith("from ..") else "pdesim/x.py")
    assert found in imported_modules(path, source)
