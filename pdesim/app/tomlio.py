"""Reading and writing configurations as TOML: ``tomli_w`` writes, ``tomllib`` (``tomli`` below 3.11) reads.

Every value round-trips, None included. TOML has no null, so a table's keys whose value is None
are listed in that table's reserved ``null`` array::

    [train]
    lr = 0.001
    null = ["clip"]          # clip = None: no gradient clipping

and ``load`` puts them back as None (no configuration has a field named ``null``). Floats are
written by ``repr``, so they read back bit for bit; nan and ±inf are TOML's own nan and inf.
A file that cannot be read (missing, a directory, binary, malformed, a misused ``null``) is a
one-line ``TomlError``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The reserved key of a table that lists its keys whose value is None.
NULL_KEY = "null"


class TomlError(ValueError):
    """A config file that cannot be read; the message is one line."""


def _encode(table: Mapping[str, Any]) -> dict[str, Any]:
    if NULL_KEY in table:
        raise TypeError(f"{NULL_KEY!r} is reserved in a TOML table (it lists the keys that are None)")
    out: dict[str, Any] = {}
    nulls = []
    for key, value in table.items():
        if value is None:
            nulls.append(key)
        elif isinstance(value, Mapping):
            out[key] = _encode(value)
        elif isinstance(value, tuple):
            out[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        else:
            out[key] = value
    if nulls:
        out[NULL_KEY] = nulls
    return out


def dumps(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for {table: {key: value}}; None values are listed in the table's ``null`` array."""
    return tomli_w.dumps(_encode(tables))


def _decode(table: dict[str, Any], where: str, path: str) -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        out[key] = _decode(value, f"{where}.{key}" if where else key, path) if isinstance(value, dict) else value
    if NULL_KEY in out:
        nulls = out.pop(NULL_KEY)
        name = f"[{where}]" if where else "the top level"
        if not isinstance(nulls, list) or not all(isinstance(k, str) for k in nulls):
            raise TomlError(f"config file {path!r}: {NULL_KEY} in {name} must be a list of key names (the keys that "
                            "are None)")
        for key in nulls:
            if key in out:
                raise TomlError(f"config file {path!r}: {key!r} in {name} has a value and is also listed in "
                                f"{NULL_KEY}")
            out[key] = None
    return out


def loads(text: str, path: str = "<string>") -> dict[str, Any]:
    """Parses TOML text (``null`` arrays become None values); a malformed text is a one-line ``TomlError``."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise TomlError(f"config file {path!r} is not valid TOML: {str(err).splitlines()[0]}") from None
    return _decode(document, "", path)


def load(path: str) -> dict[str, Any]:
    """Parses a TOML file; a missing, unreadable, binary or malformed file is a one-line ``TomlError``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise TomlError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise TomlError(f"config file {str(path)!r} is a directory, not a TOML file") from None
    except OSError as err:
        raise TomlError(f"config file {str(path)!r} cannot be read: {err.strerror or type(err).__name__}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TomlError(f"config file {str(path)!r} is not a text file (not UTF-8)") from None
    if "\x00" in text:
        raise TomlError(f"config file {str(path)!r} is not a text file (it holds NUL bytes)")
    return loads(text, str(path))
