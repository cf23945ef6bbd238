"""Normalised code hashes: a step's fingerprint changes with its code, not its comments.

The function's source is parsed; decorators (resources, needs) and docstrings are dropped and
the syntax tree is dumped without positions, so comments, blank lines, docstrings and
formatting do not count. Where no source exists (a function built by ``exec``), the bytecode
and constants are hashed instead.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:  # (hashlib's blake2b is this one; importing hashlib also loads OpenSSL, ~4 ms)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover (not CPython)
    from hashlib import blake2b


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(
            node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)
        ) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = node.body[1:] or [ast.Pass()]


def normalised_source(fn: Callable[..., Any]) -> str | None:
    """The function's syntax tree without decorators, docstrings and positions (or None)."""
    try:
        src = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(src)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not defs:
        return None
    node = defs[0]
    node.decorator_list = []
    node.name = "_"  # the step name is its identity; the hash is about the body
    _strip_docstrings(node)
    return ast.dump(node, annotate_fields=False, include_attributes=False)


def _bytecode_text(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    parts: list[str] = []

    def walk(c: Any) -> None:
        parts.append(c.co_code.hex())
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                walk(const)
            else:
                parts.append(repr(const))
        parts.append(repr(c.co_names))

    walk(code)
    return "|".join(parts)


def code_hash(fn: Callable[..., Any]) -> str:
    """A short stable hash of the function's normalised code."""
    text = normalised_source(fn)
    if text is None:
        text = "bytecode:" + _bytecode_text(fn)
    return blake2b(text.encode(), digest_size=8).hexdigest()


def text_hash(text: str) -> str:
    """A short stable hash of a text (command templates)."""
    return blake2b(text.encode(), digest_size=8).hexdigest()


def hash_code(*parts: Any, base: str | None = None) -> str:
    """A short hash of files and functions, for ``version=``.

    A step's fingerprint covers its own function (or command template) only. Code it calls
    elsewhere — a helper module, the script a command runs — enters through ``version=``::

        exp.command("locate", "{python} locator_nn.py ...", per=["test_set"],
                    version=shoal.hash_code("locator_nn.py"))

    Strings are file paths (relative to the calling file's folder, or ``base``); callables
    are hashed by normalised code (comments and docstrings do not count); modules by their
    source file.
    """
    import sys

    if base is None:
        caller = sys._getframe(1).f_globals.get("__file__")
        base = str(Path(caller).resolve().parent) if caller else "."
    h = blake2b(digest_size=6)
    for part in parts:
        if isinstance(part, (str, Path)):
            path = Path(base) / part
            try:
                h.update(path.read_bytes())
            except OSError as exc:
                from shoal.errors import SpecError

                raise SpecError(f"shoal.hash_code({str(part)!r}): cannot read {path}: "
                                f"{exc.strerror}") from None
        elif inspect.ismodule(part):
            h.update(Path(inspect.getfile(part)).read_bytes())
        elif callable(part):
            h.update(code_hash(part).encode())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()
