"""Command templates: ``"python fit.py --site {site} --out {out}"`` filled with shell-quoted
values (``RawField`` for a value inserted as is), and the argv when no shell is needed."""

from __future__ import annotations

import shlex
import string
from typing import Any

from shoal.errors import SpecError
from shoal.spec.paths import value_text

#: fields whose value the shell reads from the task's environment when it runs
#: (``"$MASTER_PORT"``: the port reserved for the task where its ranks start)
RUNTIME_FIELDS = ("{staged[", "{port", "{master_addr")
_SHELL_META = set("|&;<>()$`\\\"'*?[]#~=%!{}\n")


class _QuotingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, RawField):
            return format(value.text, format_spec)
        text = format(value, format_spec) if format_spec else (
            value_text(value) if isinstance(value, (bool, int, float, str)) else str(value)
        )
        return shlex.quote(text)


class RawField:
    """A template value inserted as is (not shell-quoted), e.g. ``"$SHOAL_STAGED_DATA"``."""

    def __init__(self, text: str) -> None:
        self.text = text


_needs_shell: dict[str, bool] = {}
_argv_cache: dict[str, list[str] | None] = {}


_QUOTING = _QuotingFormatter()
_Parts = list[tuple[str, str | None, str]]
_simple_parts: dict[str, _Parts | None] = {}


def _fill(template: str, values: dict[str, Any]) -> str:
    """``template`` filled with shell-quoted values: a template whose fields are plain names
    (``{site}``, ``{out:>8}``) is parsed once; others go through the formatter."""
    if template in _simple_parts:
        parts = _simple_parts[template]
    else:
        parsed = list(string.Formatter().parse(template))
        simple = all(name is None or (name.isidentifier() and conv is None
                                      and "{" not in (spec or ""))
                     for _, name, spec, conv in parsed)
        parts = [(lit, name, spec or "") for lit, name, spec, _ in parsed] if simple else None
        if len(_simple_parts) < 1024:
            _simple_parts[template] = parts
    if parts is None:
        return _QUOTING.vformat(template, (), values)
    field = _QUOTING.format_field
    return "".join([lit if name is None else lit + field(values[name], spec)
                    for lit, name, spec in parts])


def render_command(template: str, values: dict[str, Any]) -> tuple[str, list[str] | None]:
    """The command with every value shell-quoted, and its argv when no shell is needed."""
    cmd = _fill(template, values)
    shell = _needs_shell.get(template)
    if shell is None:
        literal = "".join(t for t, *_ in string.Formatter().parse(template))
        shell = _needs_shell[template] = (
            any(c in _SHELL_META for c in literal)
            or any(f in template for f in RUNTIME_FIELDS))
    if shell:
        return cmd, None
    if cmd in _argv_cache:
        argv = _argv_cache[cmd]
        return cmd, None if argv is None else list(argv)
    try:
        argv = shlex.split(cmd)
    except ValueError:
        argv = None
    if len(_argv_cache) < 4096:
        _argv_cache[cmd] = argv
    return cmd, argv


def fill_command(step: str, template: str, values: dict[str, Any],
                 where: str = "") -> tuple[str, list[str] | None]:
    """:func:`render_command`, with a field that cannot be filled (``{lr:.2q}`` for a float,
    ``{a[0]}`` for a number) as one error naming the step, the values (``where``) and the fix."""
    try:
        return render_command(template, values)
    except (ValueError, KeyError, AttributeError, IndexError, TypeError) as exc:
        raise SpecError(
            f"step '{step}': the command template {template!r} cannot be filled{where}: "
            f"{type(exc).__name__}: {exc}; fix the field (a format spec must suit every "
            "value of its dimension)"
        ) from None
