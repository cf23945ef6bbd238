"""The parameter space: named dimensions, their products, zips and filters.

``Grid(site=SITES, factor=[0, 1, 5], seed=range(30))`` is the product of its dimensions;
``shoal.zip(lr=[...], batch=[...])`` makes dimensions that vary together; ``where=`` keeps
only the points a predicate accepts. Values are JSON scalars: str, int, float, bool.
"""

from __future__ import annotations

import builtins
import itertools
import keyword
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shoal.errors import SpecError

Value = str | int | float | bool
Point = tuple[Value, ...]

#: Names that cannot be dimensions: they are step-function arguments or template fields.
RESERVED = frozenset({
    "ctx", "out", "runs", "threads", "device", "step", "root", "params", "gpus", "python",
})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def scalar(dim: str, value: Any) -> Value:
    """Return ``value`` as a plain JSON scalar, or raise a :class:`SpecError` naming ``dim``."""
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(
                f"grid dimension '{dim}': value {value!r} is not finite; "
                "use finite numbers or strings"
            )
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and type(value).__module__ == "numpy":
        try:
            return scalar(dim, item())
        except (TypeError, ValueError):
            pass
    raise SpecError(
        f"grid dimension '{dim}': value {value!r} ({type(value).__name__}) is not a scalar; "
        "grid values must be str, int, float or bool — give an id (e.g. a name or an index) "
        "and look the object up inside the step"
    )


def _check_name(dim: str) -> None:
    if not isinstance(dim, str) or not _NAME.match(dim) or keyword.iskeyword(dim):
        raise SpecError(
            f"grid dimension {dim!r} is not a valid name; use a Python identifier such as 'seed'"
        )
    if dim in RESERVED:
        raise SpecError(
            f"grid dimension '{dim}' clashes with a name shoal passes to steps "
            f"({', '.join(sorted(RESERVED))}); rename the dimension"
        )


def _values(dim: str, values: Any) -> list[Value]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise SpecError(
            f"grid dimension '{dim}': expected a list of values, got {values!r}; "
            f"write {dim}=[{values!r}] for a single value"
        )
    out = [scalar(dim, v) for v in values]
    if not out:
        raise SpecError(f"grid dimension '{dim}' has no values; give at least one value")
    if len(set(out)) != len(out):
        seen: dict[Value, Value] = {}
        for v in out:
            if v in seen:
                raise SpecError(
                    f"grid dimension '{dim}' lists {seen[v]!r} and {v!r}, which are the same "
                    "value; list each value once (and do not mix 1, 1.0 and True)"
                )
            seen[v] = v
    return out


class Zip:
    """Dimensions that vary together: ``shoal.zip(lr=[1e-3, 1e-2], batch=[32, 64])``."""

    def __init__(self, **dims: Iterable[Any]) -> None:
        if not dims:
            raise SpecError("shoal.zip() needs at least one dimension, e.g. zip(a=[1], b=[2])")
        cols = {}
        for dim, values in dims.items():
            _check_name(dim)
            cols[dim] = _values(dim, values)
        lengths = {d: len(v) for d, v in cols.items()}
        if len(set(lengths.values())) != 1:
            detail = ", ".join(f"{d}: {n}" for d, n in lengths.items())
            raise SpecError(
                f"shoal.zip(): dimensions must have the same number of values ({detail}); "
                "give each the same length, or use Grid(...) for a product"
            )
        self.dims: tuple[str, ...] = tuple(cols)
        rows = list(builtins.zip(*cols.values()))
        if len(set(rows)) != len(rows):
            raise SpecError(
                f"shoal.zip({', '.join(self.dims)}): a combination of values appears twice; "
                "list each combination once"
            )
        self.rows: list[Point] = rows


def zip(**dims: Iterable[Any]) -> Zip:
    """Dimensions that vary together (one point per position), for use inside :class:`Grid`."""
    return Zip(**dims)


class Grid:
    """The parameter space of an experiment.

    ``Grid(zip_a, zip_b, dim1=[...], dim2=[...], where=predicate)``: the product of all zips
    and keyword dimensions, in that order; ``where`` receives each point as a dict and keeps
    it when it returns true.
    """

    def __init__(
        self,
        *zips: Zip,
        where: Callable[[Mapping[str, Value]], bool] | None = None,
        **dims: Iterable[Any],
    ) -> None:
        factors: list[tuple[tuple[str, ...], list[Point]]] = []
        for z in zips:
            if not isinstance(z, Zip):
                raise SpecError(
                    f"Grid() positional arguments must be shoal.zip(...), got {z!r}; "
                    "give dimensions as keywords: Grid(seed=range(3))"
                )
            factors.append((z.dims, z.rows))
        for dim, values in dims.items():
            _check_name(dim)
            factors.append(((dim,), [(v,) for v in _values(dim, values)]))
        names = [d for f in factors for d in f[0]]
        if not names:
            raise SpecError("the grid is empty: give at least one dimension, e.g. Grid(seed=[0])")
        dup = {d for d in names if names.count(d) > 1}
        if dup:
            raise SpecError(f"grid dimension '{sorted(dup)[0]}' is given twice; give it once")
        self.dims: tuple[str, ...] = tuple(names)
        self._factors = factors
        self.where = where
        self._points: list[Point] | None = None

    @property
    def values(self) -> dict[str, list[Value]]:
        """Each dimension's distinct values, in order of first appearance."""
        out: dict[str, list[Value]] = {}
        for dims, rows in self._factors:
            for i, d in enumerate(dims):
                out[d] = list(dict.fromkeys(r[i] for r in rows))
        return out

    def points(self) -> list[Point]:
        """All points of the grid (after ``where``), as tuples in :attr:`dims` order."""
        if self._points is None:
            self._points = self._expand()
        return self._points

    def _expand(self) -> list[Point]:
        if all(len(d) == 1 for d, _ in self._factors):
            pts = list(itertools.product(*[[r[0] for r in rows] for _, rows in self._factors]))
        else:
            pts = [
                tuple(v for part in combo for v in part)
                for combo in itertools.product(*[rows for _, rows in self._factors])
            ]
        if self.where is not None:
            dims = self.dims
            pred = self.where
            try:
                pts = [p for p in pts if pred(dict(builtins.zip(dims, p)))]
            except Exception as exc:
                raise SpecError(
                    f"grid where= filter raised {type(exc).__name__}: {exc}; it receives each "
                    f"point as a dict with keys {', '.join(dims)}"
                ) from None
            if not pts:
                raise SpecError(
                    "the grid is empty: the where= filter rejects every point; loosen the filter"
                )
        return pts

    def __len__(self) -> int:
        return len(self.points())

    def __repr__(self) -> str:
        return f"Grid({', '.join(self.dims)}; {len(self)} points)"

