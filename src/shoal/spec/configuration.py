"""``shoal.config``: values the experiment file reads while it builds its grid.

The CLI (``--config key=value``, ``--config-file FILE``) fills the overrides *before* the
experiment file is imported; the file asks for them with defaults::

    N_SITES = shoal.config("sites", 4)     # `shoal run EXP --config sites=101`

Workers import the experiment with the same overrides, so every process builds the same grid.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from shoal.errors import ConfigError

_overrides: dict[str, Any] = {}
_read: dict[str, Any] = {}


def config(name: str, default: Any = None) -> Any:
    """Return the configured value of ``name``, or ``default`` when none was given.

    A value given on the command line as text is converted to the type of ``default``
    where that is unambiguous (``"101"`` -> ``101`` for an int default).
    """
    if name in _overrides:
        value = _coerce(name, _overrides[name], default)
    else:
        value = default
    _read[name] = value
    return value


def _coerce(name: str, value: Any, default: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"config '{name}': expected true/false, got {value!r}")
    if isinstance(value, bool) and isinstance(default, (int, float)):  # (bool is an int)
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ConfigError(f"config '{name}': expected {kind} (the default is {default!r}), "
                          f"got {json.dumps(value)}")
    if isinstance(default, int):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise ConfigError(
                f"config '{name}': expected an integer (the default is {default!r}), got {value!r}"
            ) from None
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"config '{name}': expected a number (the default is {default!r}), got {value!r}"
            ) from None
    if isinstance(default, (list, tuple)) and not isinstance(value, (list, tuple)):
        raise ConfigError(
            f"config '{name}': expected a list (the default is {json.dumps(list(default))}), "
            f"got {value!r}: write {name}={json.dumps([value])} for one value")
    if isinstance(default, str) and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return value


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are JSON where they parse as JSON, else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--config expects key=value, got {item!r} (example: sites=101)")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML or JSON config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
    except Exception as exc:  # parse errors of either format
        raise ConfigError(f"config file {str(p)!r} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a table of key = value")
    return data


def set_overrides(values: Mapping[str, Any]) -> None:
    """Install the overrides for the next experiment import (and forget earlier reads)."""
    _overrides.clear()
    _overrides.update(values)
    _read.clear()


def overrides() -> dict[str, Any]:
    """The overrides currently installed."""
    return dict(_overrides)


def read_keys() -> dict[str, Any]:
    """The keys the experiment asked for since the last :func:`set_overrides`, with values."""
    return dict(_read)
