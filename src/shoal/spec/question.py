"""What an experiment asks, so that its results answer it (``exp.question(...)``), and what
its metrics are (``exp.metric(...)``: labels, units, which way is better).

Seed 001 asks: does the validation NSE of flow change with the multi-task ``factor``, across
sites and seeds? That is::

    exp.question("evaluate", metric="val_nse_flow", x="factor", replicates="seed",
                 baseline=0)

- ``x``: the dimension on the x axis (the levels compared);
- ``replicates``: dimensions whose tasks repeat one measurement (random seeds): they are
  averaged within each block first;
- ``blocks``: the units the mean, its confidence interval and the tests are taken over
  (default: every other dimension of the step with more than one value, e.g. ``site``); n
  is their number (without blocks, the replicates are the units);
- ``baseline``: a level of ``x`` that every other level is compared with, paired on the
  blocks and replicates (the same site and seed under factor 0 and factor 1);
- ``split``: a further dimension drawn as separate lines (compared separately).

Nothing is pooled silently: a dimension of the step that is neither ``x``, ``split``, a
replicate nor a block is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shoal.errors import SpecError

SEED_NAMES = ("seed", "seeds", "replicate", "rep", "repeat", "run")


@dataclass(frozen=True)
class Question:
    """The experiment's headline question (see the module docstring)."""

    step: str
    metric: str
    x: str
    replicates: tuple[str, ...] = ()
    blocks: tuple[str, ...] | None = None  # None: every other dimension of the step
    baseline: Any = None
    split: str | None = None
    higher_is_better: bool | None = None  # None: the metric's, else higher

    def resolve(self, dims: Sequence[str], values: dict[str, list[Any]],
                better: bool | None = None) -> Question:
        """This question checked against the step's dimensions (``values``: each one's
        grid values), with its blocks and direction filled in; errors name the fix."""
        where = f"question on step '{self.step}'"
        named = [("x", self.x), *(("split", d) for d in [self.split] if d),
                 *(("replicates", d) for d in self.replicates),
                 *(("blocks", d) for d in self.blocks or ())]
        seen: dict[str, str] = {}
        for role, d in named:
            if d not in dims:
                raise SpecError(f"{where}: {role}={d!r} is not a dimension of the step "
                                f"(it has: {', '.join(dims) or 'none'})")
            if d in seen:
                raise SpecError(f"{where}: '{d}' is both {seen[d]} and {role}; give each "
                                "dimension one role")
            seen[d] = role
        # (a dimension of one value pools nothing: not a block)
        rest = tuple(d for d in dims if d not in seen and len(values.get(d, [0, 1])) > 1)
        if self.blocks is not None and rest:
            raise SpecError(
                f"{where}: dimension '{rest[0]}' is neither x, split, a replicate nor a "
                f"block; add it to replicates= (averaged) or blocks= (paired on)")
        if self.baseline is not None and match_level(values.get(self.x, []), self.baseline) is None:
            shown = ", ".join(map(str, values.get(self.x, [])[:10]))
            raise SpecError(f"{where}: baseline={self.baseline!r} is not a value of "
                            f"'{self.x}' ({shown}); give one of them")
        hib = self.higher_is_better
        if hib is None:
            hib = True if better is None else better
        return Question(self.step, self.metric, self.x, tuple(self.replicates),
                        self.blocks if self.blocks is not None else rest,
                        self.baseline, self.split, hib)


def match_level(values: Sequence[Any], value: Any) -> Any:
    """The one of ``values`` that ``value`` names (equal, or equal as text: ``0`` and
    ``"0"``), or None."""
    return next((v for v in values if v == value or str(v) == str(value)), None)


def make(step: Any, metric: str, x: str, replicates: str | Sequence[str] | None,
         blocks: str | Sequence[str] | None, baseline: Any, split: str | None,
         higher_is_better: bool | None) -> Question:
    """A :class:`Question` from ``exp.question(...)``'s arguments (names checked later,
    against the step's dimensions)."""
    name = getattr(step, "name", step)
    if not isinstance(name, str) or not isinstance(metric, str) or not isinstance(x, str):
        raise SpecError("exp.question(step, metric=..., x=...): give the step (or its "
                        "name), the metric's name and the x dimension's name")

    def names(v: str | Sequence[str] | None) -> tuple[str, ...] | None:
        return None if v is None else (v,) if isinstance(v, str) else tuple(v)

    return Question(name, metric, x, names(replicates) or (), names(blocks), baseline,
                    split, higher_is_better)


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is: its label and unit on the page, and which way is better."""

    label: str | None = None
    unit: str | None = None
    higher_is_better: bool | None = None

    def axis(self, name: str) -> str:
        """``label [unit]`` (or the name) for an axis."""
        text = self.label or name
        return f"{text} [{self.unit}]" if self.unit else text
