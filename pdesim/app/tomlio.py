"""Reading and writing the run configuration as TOML (tables of scalars and lists).

Python's ``tomllib`` reads; this module writes the small subset a run config needs: tables of
strings, booleans, integers, floats (written with ``repr`` so they read back bit for bit) and
nested lists of those. Keys whose value is None are left out (TOML has no null).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class TomlError(ValueError):
    """A config file that cannot be read; the message is one line."""


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for {table: {key: value}}."""
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_value(value)}" for key, value in table.items() if value is not None)
        lines.append("")
    return "\n".join(lines)


def load(path: str) -> dict[str, Any]:
    """Parses a TOML file; a missing or malformed file is a one-line ``TomlError``."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise TomlError(f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise TomlError(f"config file {path!r} is not valid TOML: {str(err).splitlines()[0]}") from None
