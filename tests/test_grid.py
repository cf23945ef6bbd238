from __future__ import annotations

import pytest

import shoal
from shoal.errors import SpecError
from shoal.spec.paths import decode, encode, parse_key, part
from shoal.spec.resources import Resources, parse_duration, parse_mem, slurm_time


def test_product_in_keyword_order() -> None:
    g = shoal.Grid(site=["a", "b"], seed=range(3))
    assert g.dims == ("site", "seed")
    assert len(g) == 6
    assert g.points()[:3] == [("a", 0), ("a", 1), ("a", 2)]


def test_zip_varies_together_and_multiplies_with_keywords() -> None:
    g = shoal.Grid(shoal.zip(lr=[0.1, 0.01], batch=[32, 64]), seed=[0, 1])
    assert g.dims == ("lr", "batch", "seed")
    assert g.points() == [(0.1, 32, 0), (0.1, 32, 1), (0.01, 64, 0), (0.01, 64, 1)]


def test_where_filters_points() -> None:
    g = shoal.Grid(
        factor=[0, 1, 5], seed=range(4), where=lambda p: p["factor"] > 0 or p["seed"] < 2
    )
    assert len(g) == 2 + 4 + 4
    assert g.values["seed"] == [0, 1, 2, 3]


def test_numpy_scalars_become_python() -> None:
    np = pytest.importorskip("numpy")
    g = shoal.Grid(seed=np.arange(3), lr=np.array([0.5]))
    assert g.points()[0] == (0, 0.5)
    assert type(g.points()[0][0]) is int


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"seed": []}, "has no values"),
        ({"seed": [[1]]}, "not a scalar"),
        ({"seed": [None]}, "not a scalar"),
        ({"seed": [float("nan")]}, "not finite"),
        ({"seed": [1, 1]}, "same value"),
        ({"seed": [1, True]}, "same value"),
        ({"seed": 3}, "expected a list"),
        ({"out": [1]}, "clashes"),
        ({"class": [1]}, "not a valid name"),
    ],
)
def test_bad_grids_name_the_dimension(kwargs: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        shoal.Grid(**kwargs)
    assert needle in str(err.value)
    assert repr(next(iter(kwargs))) in str(err.value) or next(iter(kwargs)) in str(err.value)


def test_zip_length_mismatch() -> None:
    with pytest.raises(SpecError, match="same number of values"):
        shoal.zip(a=[1, 2], b=[1])


def test_where_rejecting_everything_is_an_empty_grid() -> None:
    with pytest.raises(SpecError, match="empty"):
        shoal.Grid(seed=[1, 2], where=lambda p: False).points()


def test_path_parts_are_sanitised_and_reversible() -> None:
    hostile = ["a 0", 'a"=0"', "a'; echo foo", "a\n0", "../x", ".", "..", "a/b", "x\x00y", "é"]
    for v in hostile:
        p = part("site", v)
        name, _, enc = p.partition("=")
        assert name == "site"
        assert "/" not in enc and "\x00" not in enc and not enc.startswith(".")
        assert decode(enc) == v
    assert part("lr", 0.001) == "lr=0.001"
    assert part("flag", True) == "flag=true"
    assert parse_key("site=a%2Fb/seed=1") == {"site": "a/b", "seed": "1"}
    assert encode("a b") == "a%20b"


def test_too_long_value_cannot_be_a_path_part() -> None:
    with pytest.raises(SpecError, match="too long"):
        part("site", "x" * 300, step="prep")


def test_resources_parse() -> None:
    assert parse_mem("s", "2G") == 2048
    assert parse_mem("s", "512M") == 512
    assert parse_mem("s", "1.5GB") == 1536
    assert parse_mem("s", 100) == 100
    assert parse_duration("s", "time", "20m") == 1200
    assert parse_duration("s", "time", "2h") == 7200
    assert parse_duration("s", "time", "1-02:00:00") == 93600
    assert parse_duration("s", "time", "10:00") == 600  # Slurm: minutes:seconds
    assert parse_duration("s", "time", "0-03:00") == 3 * 3600  # days-hours:minutes
    assert parse_duration("s", "time", "2-12") == 2 * 86400 + 12 * 3600  # days-hours
    assert parse_duration("s", "time", "1:02:03") == 3723
    assert parse_duration("s", "time", "20") == 1200  # Slurm: a bare number is minutes
    assert parse_duration("s", "time", 90) == 90
    assert slurm_time(1200) == "00:20:00"
    assert slurm_time(93600) == "1-02:00:00"
    assert slurm_time(61) == "00:02:00"
    r = Resources.parse("s", cpus=2, gpus=0.25, mem="1G", time="1h")
    assert (r.cpus, r.gpus, r.mem_mb, r.time_s) == (2, 0.25, 1024, 3600)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"cpus": 0}, "cpus"),
        ({"gpus": -1}, "gpus"),
        ({"gpus": 1.5}, "whole number"),
        ({"mem": "lots"}, "mem="),
        ({"time": "soon"}, "time="),
    ],
)
def test_bad_resources_name_the_step(kwargs: dict, needle: str) -> None:
    with pytest.raises(SpecError) as err:
        Resources.parse("train", **kwargs)
    assert "step 'train'" in str(err.value) and needle in str(err.value)
