"""Property tests of the planner over random grids and step graphs."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from conftest import complete
from shoal.plan.build import CHANGED, DONE


@dataclass
class StepSpec:
    name: str
    per: tuple[str, ...]
    needs: tuple[int, ...]
    over: int | None  # gather over this earlier step


@st.composite
def experiments(draw: st.DrawFn) -> tuple[dict[str, list], list[StepSpec]]:
    ndims = draw(st.integers(1, 3))
    dims: dict[str, list] = {}
    for k in range(ndims):
        n = draw(st.integers(1, 3))
        dims[f"d{k}"] = (
            [f"v{i}" for i in range(n)] if draw(st.booleans()) else list(range(n))
        )
    names = list(dims)
    steps: list[StepSpec] = []
    for s in range(draw(st.integers(1, 5))):
        per = tuple(d for d in names if draw(st.booleans()))
        gather_from = [
            i for i, u in enumerate(steps) if set(per) <= set(u.per) and set(per) != set(u.per)
        ]
        if gather_from and draw(st.booleans()):
            steps.append(StepSpec(f"s{s}", per, (), draw(st.sampled_from(gather_from))))
            continue
        candidates = [i for i, u in enumerate(steps) if set(u.per) <= set(per)]
        needs = tuple(sorted(set(draw(st.lists(st.sampled_from(candidates), max_size=2)))))\
            if candidates else ()
        steps.append(StepSpec(f"s{s}", per, needs, None))
    return dims, steps


def make_fn(name: str, per: tuple[str, ...], gather: bool, body: int):
    args = ", ".join(["ctx", *per, *(["runs"] if gather else [])])
    ns: dict = {}
    exec(f"def {name}({args}):\n    return {{'value': {body}}}\n", ns)
    return ns[name]


def build(dims: dict[str, list], specs: list[StepSpec], root: Path, changed: str | None = None):
    exp = shoal.Experiment("prop", grid=shoal.Grid(**dims), root=root)
    objs = []
    for s in specs:
        fn = make_fn(s.name, s.per, s.over is not None, 2 if s.name == changed else 1)
        if s.over is not None:
            objs.append(exp.gather(fn, per=list(s.per), over=objs[s.over]))
        else:
            objs.append(exp.step(fn, per=list(s.per), needs=[objs[i] for i in s.needs]))
    return exp


def downstream(specs: list[StepSpec], name: str) -> set[str]:
    out = {name}
    for s in specs:  # specs are in topological order
        ups = {specs[i].name for i in s.needs} | (
            {specs[s.over].name} if s.over is not None else set()
        )
        if ups & out:
            out.add(s.name)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments())
def test_counts_and_edges(case) -> None:
    dims, specs = case
    with tempfile.TemporaryDirectory() as tmp:
        plan = build(dims, specs, Path(tmp)).plan()
    for s in specs:
        sp = plan.steps[s.name]
        assert sp.dims == tuple(d for d in dims if d in s.per)
        if s.over is None:
            assert len(sp) == math.prod(len(dims[d]) for d in s.per)
        else:
            up = plan.steps[specs[s.over].name]
            # every upstream task lands in exactly one gather task, which it projects onto
            seen = sorted(j for i in range(len(sp)) for _, j in sp.upstream(i))
            assert seen == list(range(len(up)))
            for i in range(len(sp)):
                for _, j in sp.upstream(i):
                    assert all(
                        up.param_dict(j)[d] == v for d, v in sp.param_dict(i).items()
                    )
        for i in range(len(sp)):
            mine = sp.param_dict(i)
            for up, j in sp.upstream(i):
                if s.over is None:
                    assert up.param_dict(j) == {d: mine[d] for d in up.dims}
        assert len(set(sp.keys)) == len(sp.keys)
        assert len(set(sp.fps)) == len(sp.fps)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments(), st.data())
def test_code_change_marks_exactly_the_step_and_its_downstream(case, data) -> None:
    dims, specs = case
    target = data.draw(st.sampled_from([s.name for s in specs]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        complete(build(dims, specs, root))
        assert build(dims, specs, root).plan().summary()["run"] == 0
        plan = build(dims, specs, root, changed=target).plan()
    affected = downstream(specs, target)
    for s in specs:
        states = set(plan.steps[s.name].state)
        assert states == ({CHANGED} if s.name in affected else {DONE}), (s.name, target)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 4), m=st.integers(1, 3), edited=st.sets(st.integers(0, 3)),
       shared=st.booleans(), touched=st.sets(st.integers(0, 3)))
def test_editing_inputs_reruns_exactly_their_readers_and_what_follows(
        n: int, m: int, edited: set[int], shared: bool, touched: set[int]) -> None:
    import os

    edited = {a for a in edited if a < n}
    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        (base / "data").mkdir()
        for a in range(n):
            (base / f"data/{a}.txt").write_text(f"input {a}")
        (base / "data/shared.txt").write_text("shared")
        exp = shoal.Experiment("files", grid=shoal.Grid(a=range(n), b=range(m)),
                               root=base / "runs")
        inputs = [f"{base}/data/{{a}}.txt"] + ([f"{base}/data/shared.txt"] if shared else [])
        read = exp.step(make_fn("read", ("a",), False, 1), per=["a"], inputs=inputs)
        train = exp.step(make_fn("train", ("a", "b"), False, 2), per=["a", "b"],
                         needs=[read])
        exp.gather(make_fn("combine", (), True, 3), over=train)
        complete(exp)
        assert exp.plan().summary()["run"] == 0
        for a in touched:  # a new timestamp, the same contents: nothing reruns for it
            if a < n:
                os.utime(base / f"data/{a}.txt")
        for a in edited:
            (base / f"data/{a}.txt").write_text(f"input {a}, edited")
        plan = exp.plan()
        ran = {(sp.name, sp.params[i]) for sp, i in plan.to_run()}
        expect = ({("read", (a,)) for a in edited}
                  | {("train", (a, b)) for a in edited for b in range(m)}
                  | ({("combine", ())} if edited else set()))
        assert ran == expect
        for sp, i in plan.to_run():
            if sp.name == "read":
                assert sp.detail[i] == f"input changed: {base}/data/{sp.params[i][0]}.txt"
