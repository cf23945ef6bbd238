"""Input and output files of planned tasks: paths filled per task, digests of the inputs'
contents (cached by size, mtime, ctime and inode in the store, so only changed files are
read), and the ownership rules of outputs (no two tasks claim the same or nested paths).
"""

from __future__ import annotations

import glob
import os
import string
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shoal.codehash import blake2b
from shoal.errors import SpecError
from shoal.paths import value_text

if TYPE_CHECKING:
    from shoal.around import FileSet
    from shoal.state import Store

_GLOB = set("*?[")
#: A digest newer than this (seconds between the file's mtime and its hashing) is not
#: remembered: a write within the same timestamp tick could go unseen ("racy" entries).
RACY_S = 2.0
Entry = tuple[str, list[str]]  # (name, paths as filled: relative to the experiment folder)


class FileDigests:
    """Digests of file contents, remembered in the store by (size, mtime_ns, ctime_ns,
    inode): planning reads only the files that changed since they were last hashed."""

    def __init__(self, store: Store | None, base: str) -> None:
        self.base = base
        self.cache = store.digests() if store is not None and store.conn is not None else {}
        self.memo: dict[str, str | None] = {}
        self.fresh: list[tuple[Any, ...]] = []
        self.hashed = 0  # files read in this plan (for benchmarks)

    def abspath(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.base, path))

    def digest(self, path: str) -> str | None:
        """The digest of a file (or a folder's tree) relative to the base; None if absent."""
        if path in self.memo:
            return self.memo[path]
        got = self.memo[path] = self._digest(self.abspath(path))
        return got

    def _digest(self, full: str) -> str | None:
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if os.path.isdir(full):
            return self._tree(full)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        known = self.cache.get(full)
        if known is not None and tuple(known[:4]) == key:
            return known[4]
        digest = _hash_file(full)
        self.hashed += 1
        if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > RACY_S:
            self.fresh.append((full, *key, digest))
            self.cache[full] = (*key, digest)
        return digest

    def _tree(self, folder: str) -> str:
        h = blake2b(digest_size=16)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            rel = os.path.relpath(dirpath, folder)
            for name in sorted(filenames):
                d = self._digest(os.path.join(dirpath, name))
                h.update(f"{rel}/{name}\0{d}\n".encode())
        return "tree:" + h.hexdigest()

    def save(self, store: Store) -> None:
        """Remember what was hashed in this plan (the store must be writable)."""
        if self.fresh:
            store.save_digests(self.fresh)
            self.fresh = []


def _hash_file(path: str) -> str:
    h = blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Template:
    """A path template compiled once: plain-name fields are joined without the formatter."""

    def __init__(self, tpl: str, dims: Sequence[str], vars: dict[str, Any]) -> None:
        self.tpl, self.vars = tpl, vars
        parsed = list(string.Formatter().parse(tpl))
        simple = all(name is None or (name.isidentifier() and not spec and conv is None)
                     for _, name, spec, conv in parsed)
        self.parts: list[tuple[str, int | None, str]] | None = None
        if simple:
            self.parts = []
            for lit, name, _, _ in parsed:
                if name is None:
                    self.parts.append((lit, None, ""))
                elif name in dims:
                    self.parts.append((lit, dims.index(name), ""))
                else:
                    self.parts.append((lit, None, value_text(vars[name])))
        self.dims = dims
        self.globbed = any(c in tpl for c in _GLOB)

    def fill(self, point: Sequence[Any]) -> str:
        if self.parts is not None:
            return "".join([lit + (value_text(point[k]) if k is not None else text)
                            for lit, k, text in self.parts])
        from shoal.around import fill

        return fill(self.tpl, {**self.vars, **dict(zip(self.dims, point))})


@dataclass(eq=False)
class StepFiles:
    """The files of one step's tasks, as parallel lists indexed by task number."""

    inputs: list[list[Entry]] | None = None  # per task: (name, paths) per inputs= entry
    ident: list[str] | None = None  # per task: what of its inputs enters the fingerprint
    missing: dict[int, str] = field(default_factory=dict)  # task -> why it cannot run
    outputs: list[list[str]] | None = None  # per task: absolute paths it owns
    globs: list[bool] = field(default_factory=list)  # per inputs= entry: a glob?
    named_inputs: bool = False
    named_outputs: bool = False
    output_names: list[str] = field(default_factory=list)
    memo: dict[str, str | None] = field(default_factory=dict, repr=False)  # path -> digest

    def digests_of(self, i: int) -> dict[str, str]:
        """Task ``i``'s input files (as filled) and their digests (``-`` where missing)."""
        return {p: self.memo.get(p) or "-" for p in input_paths(self, i)}


def expand_inputs(fs: FileSet, dims: Sequence[str], vars: dict[str, Any],
                  params: list[tuple[Any, ...]], digests: FileDigests,
                  label: Any) -> StepFiles:
    """Fill the input templates for every task, glob, and digest the files."""
    tpls = [(name, _Template(t, dims, vars)) for name, t in fs.items]
    out = StepFiles(inputs=[], ident=[], named_inputs=fs.named, memo=digests.memo,
                    globs=[t.globbed for _, t in tpls])
    assert out.inputs is not None and out.ident is not None
    digest = digests.digest
    base = digests.base
    for i, p in enumerate(params):
        entries: list[Entry] = []
        parts: list[str] = []
        for name, t in tpls:
            path = t.fill(p)
            if t.globbed:
                found = sorted(glob.glob(path, root_dir=None if os.path.isabs(path) else base))
                if not found:
                    out.missing.setdefault(i, f"no file matches input "
                                               f"{_named(name)}{path} (for {label(i)})")
                entries.append((name, found))
                for f in found:
                    parts.append(f"{name}:{f}={digest(f)}")
                continue
            d = digest(path)
            if d is None:
                out.missing.setdefault(i, f"input {_named(name)}{path} does not exist "
                                          f"(for {label(i)})")
            entries.append((name, [path]))
            parts.append(f"{name}:{path}={d}")
        out.inputs.append(entries)
        out.ident.append(";".join(parts))
    return out


def _named(name: str) -> str:
    return f"'{name}' " if name else ""


def expand_outputs(files: StepFiles, fs: FileSet, dims: Sequence[str], vars: dict[str, Any],
                   params: list[tuple[Any, ...]], base: str) -> None:
    """Fill the output templates for every task (absolute, normalised paths)."""
    tpls = [_Template(t, dims, vars) for _, t in fs.items]
    join, norm = os.path.join, os.path.normpath
    files.outputs = [[norm(join(base, t.fill(p))) for t in tpls] for p in params]
    files.named_outputs = fs.named
    files.output_names = [n for n, _ in fs.items]


def input_paths(files: StepFiles, i: int) -> list[str]:
    """Task ``i``'s input paths as filled (relative to the experiment folder, or absolute)."""
    if files.inputs is None:
        return []
    return [p for _, paths in files.inputs[i] for p in paths]


def check_claims(claims: Iterable[tuple[str, str, str]], protected: dict[str, str]) -> None:
    """Outputs are owned by one task each: no two claims of the same or nested paths, no
    input inside an output (or an output inside an input folder), no output holding the
    experiment folder or the run root, or inside the run root. ``claims``: (absolute path,
    "output"|"input", the task's label); ``protected``: path -> what it is."""
    first_reader: dict[str, str] = {}
    owned: set[tuple[str, str, str]] = set()
    for p, kind, who in claims:
        if kind == "input":  # (inputs never clash with each other: one row per path)
            first_reader.setdefault(p, who)
        else:
            owned.add((p, kind, who))
    owned.update((p, "input", who) for p, who in first_reader.items())
    # by path components ("a/b" sorts before "a/b-x" and "a/b/c" right after "a/b")
    rows = sorted(owned, key=lambda r: (r[0].replace("/", "\0"), r[1], r[2]))
    stack: list[tuple[str, str, str]] = []
    for path, kind, who in rows:
        if kind == "output":
            for spot, what in protected.items():
                if _within(spot, path):
                    raise SpecError(f"{who}: output {path} holds {what} ({spot}); shoal "
                                    "removes a task's outputs before it runs: name a path "
                                    "inside it")
                if what == "the run root" and _within(path, spot):
                    raise SpecError(f"{who}: output {path} is inside the run root; files "
                                    "there belong in the task's folder ({out} / ctx.out)")
        while stack and not _within(path, stack[-1][0]):
            stack.pop()
        for apath, akind, awho in stack:
            if akind == kind == "input":
                continue
            if apath == path and akind == kind == "output" and awho == who:
                raise SpecError(f"{who}: outputs= names {path} twice")
            if akind == kind == "output" and awho == who:
                raise SpecError(f"{who}: outputs= names nested paths ({apath}, {path}); "
                                "name only the outer one")
            if akind == kind == "output":
                how = "the same path" if apath == path else "nested paths"
                raise SpecError(
                    f"{awho} and {who} claim {how} as outputs ({apath}, {path}); each output "
                    "must belong to one task: put the task's dimensions in the template"
                )
            inp, outp, owner = ((path, apath, awho) if akind == "output" else
                                (apath, path, who))
            user = who if akind == "output" else awho
            raise SpecError(
                f"{user} reads {inp} (inputs=), which is or holds an output of {owner} "
                f"({outp}); a file that a task writes is no input to hash at plan time: "
                "depend on that step with needs= instead"
            )
        stack.append((path, kind, who))


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
