"""Task folders: ``<root>/<step>/<dim>=<value>/...`` with sanitised, reversible path parts.

Values are percent-encoded outside ``[A-Za-z0-9._+,@-]`` (as Hive partitioning does, so
pyarrow/duckdb/pandas read the tree as a partitioned data set); a leading dot is encoded, so
no part is ``.``, ``..`` or hidden. ``/``, NUL and every other byte become ``%XX``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from shoal.errors import SpecError
from shoal.spec.grid import Value

_SAFE = "._+,@-"
MAX_PART = 255  # bytes, the usual file-name limit


def value_text(value: Value) -> str:
    """The text of a value as it appears in folder names and on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def matches(value: Value, text: str) -> bool:
    """Whether ``text``, typed on the command line, names ``value``: its text, its folder
    form (percent-encoded), or the same number or truth value written another way
    (``lr=1e-5`` for 1e-05, ``lr=3`` for 3.0, ``flag=True`` for true)."""
    shown = value_text(value)
    if text in (shown, str(value)) or text == encode(shown):
        return True
    if isinstance(value, bool):
        return text.lower() in (("true", "yes", "on", "1") if value else
                                ("false", "no", "off", "0"))
    if isinstance(value, (int, float)):
        try:
            return float(text) == value
        except ValueError:
            return False
    return False


def encode(text: str) -> str:
    """Percent-encode a value for a path part."""
    enc = quote(text, safe=_SAFE)
    if enc.startswith("."):
        enc = "%2E" + enc[1:]
    return enc


def decode(part: str) -> str:
    """Inverse of :func:`encode`."""
    return unquote(part)


def part(dim: str, value: Value, *, step: str | None = None) -> str:
    """``dim=value`` as one path part, or a SpecError naming the step and the dimension."""
    text = value_text(value)
    where = f"step '{step}', " if step else ""
    if text == "":
        raise SpecError(
            f"{where}dimension '{dim}': the empty string cannot become a folder name; "
            "give the value a name (e.g. 'none')"
        )
    enc = f"{dim}={encode(text)}"
    if len(enc.encode()) > MAX_PART:
        raise SpecError(
            f"{where}dimension '{dim}': value {text[:40]!r}... is too long for a folder name "
            f"({len(enc.encode())} bytes > {MAX_PART}); use a short id and look the long value "
            "up inside the step"
        )
    return enc


def parse_key(key: str) -> dict[str, str]:
    """``"site=a/seed=1"`` -> ``{"site": "a", "seed": "1"}`` (values as text)."""
    out: dict[str, str] = {}
    if not key:
        return out
    for p in key.split("/"):
        d, _, v = p.partition("=")
        out[d] = decode(v)
    return out


def task_dir(root: Path, step: str, key: str) -> Path:
    """The folder of the task ``(step, key)``."""
    return root / step / key if key else root / step
