"""Normalised code hashes: a step's fingerprint changes with its code, not its comments.

The function's source is parsed; decorators (resources, needs) and docstrings are dropped and
the syntax tree is dumped without positions, so comments, blank lines, docstrings and
formatting do not count. Where no source exists (a function built by ``exec``), the bytecode
and constants are hashed instead.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap
from collections.abc import Callable
from typing import Any


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
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def text_hash(text: str) -> str:
    """A short stable hash of a text (command templates)."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
