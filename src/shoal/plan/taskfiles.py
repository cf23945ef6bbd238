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
from stat import S_ISDIR
from typing import TYPE_CHECKING, Any

from shoal.errors import SpecError
from shoal.spec.codehash import blake2b
from shoal.spec.paths import value_text

if TYPE_CHECKING:
    from shoal.spec.around import FileSet
    from shoal.state.store import Store

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
        full = path if path.startswith("/") else f"{self.base}/{path}"
        if "/." in full or "//" in full or full.endswith("/"):
            full = os.path.normpath(full)
        return full

    def digest(self, path: str) -> str | None:
        """The digest of a file (or a folder's tree) relative to the base; None if absent."""
        memo = self.memo
        if path in memo:
            return memo[path]
        got = memo[path] = self._digest(self.abspath(path))
        return got

    def digest_all(self, paths: Iterable[str]) -> dict[str, str | None]:
        """:meth:`digest` of many paths (the memo, which then holds them all)."""
        memo, cache, stat, base = self.memo, self.cache, os.stat, self.base
        for path in paths:
            if path in memo:
                continue
            full = path if path.startswith("/") else f"{base}/{path}"
            if "/." in full or "//" in full or full.endswith("/"):
                full = os.path.normpath(full)
            known = cache.get(full)
            if known is not None:  # (the common case: a file seen before, unchanged)
                try:
                    st = stat(full)
                except OSError:
                    st = None
                if st is not None and known[0] == st.st_size and \
                        known[1] == st.st_mtime_ns and known[2] == st.st_ctime_ns and \
                        known[3] == st.st_ino and not S_ISDIR(st.st_mode):
                    memo[path] = known[4]
                    continue
            memo[path] = self._digest(full)
        return memo

    def _digest(self, full: str) -> str | None:
        try:
            st = os.stat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # (a link loop, no permission...)
            raise SpecError(f"input {full} cannot be read: {exc.strerror or exc}; fix the "
                            "file or its path in inputs=") from None
        if S_ISDIR(st.st_mode):
            return self._tree(full)
        known = self.cache.get(full)
        if known is not None and known[0] == st.st_size and known[1] == st.st_mtime_ns \
                and known[2] == st.st_ctime_ns and known[3] == st.st_ino:
            return known[4]
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        try:
            digest = _hash_file(full)
        except OSError as exc:
            raise SpecError(f"input {full} cannot be read: {exc.strerror or exc}; fix its "
                            "permissions or its path in inputs=") from None
        self.hashed += 1
        if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > RACY_S:
            self.fresh.append((full, *key, digest))
            self.cache[full] = (*key, digest)
        return digest

    def _tree(self, folder: str) -> str:
        """A folder's digest: the relative names and digests of the files below it, through
        symbolic links (each real folder once: a link loop ends)."""
        h = blake2b(digest_size=16)
        seen: set[tuple[int, int]] = set()
        def unreadable(exc: OSError) -> None:
            raise SpecError(f"input folder {folder}: {exc.filename} cannot be read "
                            f"({exc.strerror}); fix its permissions or the path in inputs=")

        for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable,
                                                    followlinks=True):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
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

    def __init__(self, tpl: str, dims: Sequence[str], vars: dict[str, Any],
                 owner: str = "") -> None:
        self.tpl, self.vars = tpl, vars
        parsed = list(string.Formatter().parse(tpl))
        for _, name, _, _ in parsed:  # an empty var would make 'x/{v}/y' 'x//y', '{v}/y' '/y'
            if name in vars and value_text(vars[name]) == "":
                raise SpecError(
                    f"{owner}: template {tpl!r} takes the var '{name}', which is empty; a "
                    "path made with it would point elsewhere (a relative path could become "
                    "absolute): give it a value"
                )
        simple = all(name is None or (name.isidentifier() and not spec and conv is None)
                     for _, name, spec, conv in parsed)
        # a simple template becomes a positional format string over the dimensions it
        # uses (vars filled in once): "data/{site}/{seed}.txt" -> "data/{}/{}.txt", [0, 2]
        self.fmt: str | None = None
        self.pos: list[int] = []
        if simple:
            fmt = []
            for lit, name, _, _ in parsed:
                fmt.append(lit.replace("{", "{{").replace("}", "}}"))
                if name in dims:
                    fmt.append("{}")
                    self.pos.append(dims.index(name))
                elif name is not None:
                    fmt.append(value_text(vars[name]).replace("{", "{{").replace("}", "}}"))
            self.fmt = "".join(fmt)
        self.dims = dims
        self.globbed = any(c in tpl for c in _GLOB)

    def fill(self, point: Sequence[Any]) -> str:
        if self.fmt is not None:
            return self.fmt.format(*[_text(point[k]) for k in self.pos])
        from shoal.spec.around import fill

        return fill(self.tpl, {**self.vars, **dict(zip(self.dims, point))})


_texts: dict[tuple[type, Any], str] = {}


def _text(value: Any) -> str:
    """:func:`value_text`, remembered per value and type (0, 0.0 and False are one dict
    key, but "0", "0.0" and "false" as text)."""
    cls = value.__class__
    if cls is str:
        return value
    key = (cls, value)
    got = _texts.get(key)
    if got is None:
        got = value_text(value)
        if len(_texts) < 100_000:
            _texts[key] = got
    return got


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
    patterns: dict[str, int] = field(default_factory=dict)  # glob inputs as filled -> a task

    def digests_of(self, i: int) -> dict[str, str]:
        """Task ``i``'s input files (as filled) and their digests (``-`` where missing)."""
        return {p: self.memo.get(p) or "-" for p in input_paths(self, i)}


def expand_inputs(fs: FileSet, dims: Sequence[str], vars: dict[str, Any],
                  params: list[tuple[Any, ...]], digests: FileDigests,
                  label: Any, step: str = "") -> StepFiles:
    """Fill the input templates for every task, glob, and digest the files (each path
    once: a file many tasks read is looked at once)."""
    tpls = [(name, _Template(t, dims, vars, f"step '{step}', inputs=")) for name, t in fs.items]
    out = StepFiles(inputs=[], ident=[], named_inputs=fs.named, memo=digests.memo,
                    globs=[t.globbed for _, t in tpls])
    base = digests.base
    columns: list[list[list[str]]] = []  # per template: per task, its paths
    for name, t in tpls:
        filled = [t.fill(p) for p in params]
        if t.globbed:
            found = [sorted(glob.glob(f, root_dir=None if os.path.isabs(f) else base))
                     for f in filled]
            for i, f in enumerate(filled):
                out.patterns.setdefault(f, i)
            for i, (f, hits) in enumerate(zip(filled, found)):
                if not hits:
                    out.missing.setdefault(i, f"no file matches input {_named(name)}{f} "
                                              f"(for {label(i)})")
            columns.append(found)
        else:
            columns.append([[f] for f in filled])
    memo = digests.digest_all({f for col in columns for paths in col for f in paths})
    for (name, t), col in zip(tpls, columns):
        if t.globbed:
            continue
        for i, paths in enumerate(col):
            if memo[paths[0]] is None:
                out.missing.setdefault(i, f"input {_named(name)}{paths[0]} does not exist "
                                          f"(for {label(i)})")
    names = [name for name, _ in tpls]
    if len(tpls) == 1:
        name, col = names[0], columns[0]
        out.inputs = [[(name, paths)] for paths in col]
        out.ident = [";".join([f"{name}:{f}={memo[f]}" for f in paths]) for paths in col]
    else:
        rows = list(zip(*columns))
        out.inputs = [list(zip(names, row)) for row in rows]
        out.ident = [";".join([f"{n}:{f}={memo[f]}" for n, paths in zip(names, row)
                               for f in paths]) for row in rows]
    return out


def _named(name: str) -> str:
    return f"'{name}' " if name else ""


def expand_outputs(files: StepFiles, fs: FileSet, dims: Sequence[str], vars: dict[str, Any],
                   params: list[tuple[Any, ...]], base: str, step: str = "") -> None:
    """Fill the output templates for every task (absolute, normalised paths)."""
    tpls = [_Template(t, dims, vars, f"step '{step}', outputs=") for _, t in fs.items]
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
    for spot, what in protected.items():  # an input holding the run root changes each run
        if what != "the run root":
            continue
        for p, who in first_reader.items():
            if within(spot, p):
                raise SpecError(f"{who}: input {p} holds the run root ({spot}), so its "
                                "contents would change with every run and the task never be "
                                "done: name the data inside it, or move the run root (--root)")
    if not owned:
        return  # (no outputs: nothing else can clash)
    owned.update((p, "input", who) for p, who in first_reader.items())
    # by path components ("a/b" sorts before "a/b-x" and "a/b/c" right after "a/b")
    rows = sorted(owned, key=lambda r: (r[0].replace("/", "\0"), r[1], r[2]))
    stack: list[tuple[str, str, str]] = []
    for path, kind, who in rows:
        if kind == "output":
            for spot, what in protected.items():
                if within(spot, path):
                    raise SpecError(f"{who}: output {path} holds {what} ({spot}); shoal "
                                    "removes a task's outputs before it runs: name a path "
                                    "inside it")
                if what == "the run root" and within(path, spot):
                    raise SpecError(f"{who}: output {path} is inside the run root; files "
                                    "there belong in the task's folder ({out} / ctx.out)")
        while stack and not within(path, stack[-1][0]):
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


def within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")
