"""The headline comparison (shoal.results.compare): block means, paired differences, paired t
and Wilcoxon tests, Holm — against hand-checked values and scipy on a small fixed table —
and `shoal results --baseline/--replicates/--headline`."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shoal.errors import SpecError
from shoal.results.compare import answer
from shoal.results.stats import holm, mean_ci, paired_tests
from shoal.spec.question import Question
from test_run import run

# 4 sites x 3 factors x 2 seeds; value = site base + factor effect + seed wiggle
BASE = {"a": 0.50, "b": 0.60, "c": 0.70, "d": 0.40}
EFFECT = {0: 0.0, 1: 0.02, 5: -0.01}
WIGGLE = {("a", 0): 0.001, ("a", 1): -0.003, ("b", 0): 0.004, ("b", 1): 0.0,
          ("c", 0): -0.002, ("c", 1): 0.002, ("d", 0): 0.003, ("d", 1): -0.005}
NOISE = {"a": 0.004, "b": -0.006, "c": 0.001, "d": 0.009}  # factor 1 only: not constant


def _value(site: str, factor: int, seed: int) -> float:
    return (BASE[site] + EFFECT[factor] + WIGGLE[site, seed] * (1 + factor)
            + (NOISE[site] if factor == 1 else 0.0))


def _frame() -> pd.DataFrame:
    rows = [{"site": s, "factor": f, "seed": k, "status": "done", "nse": _value(s, f, k)}
            for s in BASE for f in EFFECT for k in (0, 1)]
    return pd.DataFrame(rows)


def test_mean_ci_and_holm_against_hand_values() -> None:
    n, mean, lo, hi = mean_ci([1, 2, 3, 4])
    half = 3.182446305 * (math.sqrt(5 / 3) / 2)  # t(0.975, 3) x sd / sqrt(n)
    assert (n, mean) == (4, 2.5)
    assert lo == pytest.approx(2.5 - half) and hi == pytest.approx(2.5 + half)
    assert mean_ci([7.0])[1:] == (7.0, *(mean_ci([7.0])[2:]))  # one value: no interval
    assert math.isnan(mean_ci([7.0])[2])
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = holm([0.2, math.nan, 0.6])
    assert adjusted[0] == pytest.approx(0.4) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.6)
    assert all(math.isnan(p) for p in paired_tests([0.0, 0.0, 0.0]))


def test_paired_comparison_matches_a_hand_computation_and_scipy() -> None:
    q = Question("ev", "nse", "factor", ("seed",), ("site",), 0, None, True)
    a = answer(_frame(), q, order=[0, 1, 5])
    t = a.table.set_index("factor")
    # level summaries: each site's mean over its 2 seeds, then over the 4 sites
    for f in (0, 1, 5):
        per_site = [np.mean([_value(s, f, k) for k in (0, 1)]) for s in BASE]
        _, mean, lo, hi = mean_ci(per_site)
        assert t.loc[f, "n"] == 4 and t.loc[f, "mean"] == pytest.approx(mean)
        assert (t.loc[f, "ci_low"], t.loc[f, "ci_high"]) == pytest.approx((lo, hi))
    # paired: per site the mean over seeds of (factor f - factor 0), then the tests on them
    raw = {}
    for f in (1, 5):
        d = [np.mean([_value(s, f, k) - _value(s, 0, k) for k in (0, 1)]) for s in BASE]
        raw[f] = (stats.ttest_1samp(d, 0).pvalue, stats.wilcoxon(d).pvalue)
        assert t.loc[f, "diff"] == pytest.approx(np.mean(d))
        assert t.loc[f, "pairs"] == 4
        assert t.loc[f, "better"] == sum(v > 0 for v in d)
        assert t.loc[f, "p_t"] == pytest.approx(raw[f][0])
        # the paired t test of the site means is the one-sample t test of their differences
        site_means = {g: [np.mean([_value(s, g, k) for k in (0, 1)]) for s in BASE]
                      for g in (0, f)}
        assert t.loc[f, "p_t"] == pytest.approx(stats.ttest_rel(site_means[f],
                                                                site_means[0]).pvalue)
        assert t.loc[f, "p_wilcoxon"] == pytest.approx(raw[f][1])
    want = holm([raw[1][0], raw[5][0]])
    assert [t.loc[1, "p_t_holm"], t.loc[5, "p_t_holm"]] == pytest.approx(want)
    assert math.isnan(t.loc[0, "diff"])
    assert a.units == "sites (each the mean of 2 seeds)"
    assert "paired t test and Wilcoxon" in a.method and "Holm" in a.method
    assert a.sentences[0].startswith("factor 1 improves nse by 0.0")
    assert "over factor 0" in a.sentences[0] and "4 of 4 sites improve" in a.sentences[0]
    assert a.sentences[1].startswith("factor 5: no clear difference in nse from factor 0")


def test_lower_is_better_turns_the_words_and_the_counts() -> None:
    q = Question("ev", "nse", "factor", ("seed",), ("site",), 0, None, False)
    a = answer(_frame(), q, order=[0, 1, 5])
    assert a.sentences[0].startswith("factor 1 worsens nse")
    assert "0 of 4 sites improve" in a.sentences[0]


def test_a_question_pools_nothing_silently() -> None:
    values = {"site": list(BASE), "factor": [0, 1, 5], "seed": [0, 1], "lr": [1, 2]}
    dims = ("site", "factor", "seed", "lr")
    with pytest.raises(SpecError, match="'lr' is neither x, split, a replicate nor a block"):
        Question("ev", "nse", "factor", ("seed",), ("site",)).resolve(dims, values)
    with pytest.raises(SpecError, match="baseline=3 is not a value of 'factor'"):
        Question("ev", "nse", "factor", baseline=3).resolve(dims, values)
    with pytest.raises(SpecError, match="'seed' is both x and replicates"):
        Question("ev", "nse", "seed", ("seed",)).resolve(dims, values)
    got = Question("ev", "nse", "factor", ("seed",)).resolve(dims, values)
    assert got.blocks == ("site", "lr") and got.higher_is_better is True


EXP = """
exp = shoal.Experiment("cmp", grid=shoal.Grid(site=["a", "b", "c", "d"], factor=[0, 1, 5],
                                              seed=[0, 1]))
VALUES = {VALUES!r}

@exp.step(per=["site", "factor", "seed"])
def ev(ctx, site, factor, seed):
    return {{"nse": VALUES[f"{{site}},{{factor}},{{seed}}"], "n_days": 365}}

exp.question("ev", metric="nse", x="factor", replicates="seed", baseline=0)
exp.metric("nse", label="NSE of flow", higher_is_better=True)
"""


def _write(write_exp):
    values = {f"{s},{f},{k}": _value(s, f, k) for s in BASE for f in EFFECT for k in (0, 1)}
    return write_exp(EXP.format(VALUES=values))


def test_results_headline_and_baseline_flags_print_the_comparison(write_exp, cli) -> None:
    path = _write(write_exp)
    run(path, check=True)
    rc, out, err = cli("results", path, "--headline")
    assert rc == 0, err
    assert "n: sites (each the mean of 2 seeds)" in out
    assert "factor 1 improves NSE of flow by" in out and "4 of 4 sites improve" in out
    rc, out, err = cli("results", path, "--by", "factor", "--baseline", "factor=0",
                       "--replicates", "seed", "--metric", "nse", "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)[0]
    assert doc["blocks"] == ["site"] and doc["replicates"] == ["seed"]
    rows = {r["factor"]: r for r in doc["rows"]}
    d = [np.mean([_value(s, 1, k) - _value(s, 0, k) for k in (0, 1)]) for s in BASE]
    assert rows[1]["diff"] == pytest.approx(np.mean(d)) and rows[0]["diff"] is None
    # without --replicates the pairs are site x seed: n = 8, and the table says so
    rc, out, err = cli("results", path, "--baseline", "factor=0", "--metric", "nse",
                       "--format", "csv")
    assert rc == 0, err
    frame = pd.read_csv(__import__("io").StringIO(out))
    assert list(frame["pairs"].dropna()) == [8, 8]
    # a plain --by summary names what it pools
    rc, out, err = cli("results", path, "--by", "factor", "--metric", "nse", "--format", "csv")
    assert rc == 0 and "site × seed" in out


def test_comparison_flags_refuse_bad_input_with_the_fix(write_exp, cli) -> None:
    path = _write(write_exp)
    run(path, check=True)
    bad = {
        ("--baseline", "factor=2"): "'2' is not a value of dimension 'factor'",
        ("--baseline", "factr=0"): "give DIM=VALUE with a dimension of step 'ev'",
        ("--by", "site", "--baseline", "factor=0"): "give --baseline site=VALUE",
        ("--by", "factor", "seed", "--replicates", "site"): "a comparison has one x",
        ("--by", "factor", "--replicates", "seed", "--metric", "nope"): "no numeric metric",
        ("--by", "factor", "--replicates", "factor"): "'factor' is both x and replicates",
    }
    for flags, says in bad.items():
        rc, _, err = cli("results", path, *flags)
        assert rc == 2 and says in err, (flags, err)
        assert "Traceback" not in err


def test_split_compares_each_value_of_the_split_dimension_on_its_own() -> None:
    frame = _frame()
    both = pd.concat([frame.assign(loss="mse"),
                      frame.assign(loss="mae", nse=frame["nse"] * 2)], ignore_index=True)
    q = Question("ev", "nse", "factor", ("seed",), ("site",), 0, "loss", True)
    a = answer(both, q, order=[0, 1, 5])
    t = a.table.set_index(["loss", "factor"])
    alone = answer(frame, Question("ev", "nse", "factor", ("seed",), ("site",), 0, None, True),
                   order=[0, 1, 5]).table.set_index("factor")
    assert t.loc[("mse", 1), "diff"] == pytest.approx(alone.loc[1, "diff"])
    assert t.loc[("mae", 1), "diff"] == pytest.approx(2 * alone.loc[1, "diff"])
    assert t.loc[("mse", 1), "p_t_holm"] == pytest.approx(alone.loc[1, "p_t_holm"])
    assert any("(loss=mae)" in s for s in a.sentences)


def test_the_verdict_follows_the_holm_adjusted_test_not_the_raw_interval() -> None:
    """Review: an unadjusted CI that excluded 0 made "improves" beside a Holm p of 0.16."""
    from shoal.results.compare import Answer, sentence

    q = Question("ev", "m", "factor", ("seed",), ("site",), 0, None, True)
    a = Answer(q, "m", pd.DataFrame(), "sites", "")
    row = {"factor": 3, "diff": 0.21, "diff_low": 0.027, "diff_high": 0.39, "p_t_holm": 0.16,
           "p_wilcoxon_holm": 0.31, "better": 5, "pairs": 6}
    assert sentence(a, row).startswith("factor 3: no clear difference in m from factor 0")
    row["p_t_holm"] = 0.01
    assert sentence(a, row).startswith("factor 3 improves m by 0.21")


def test_what_is_left_out_of_an_answer_is_said_first() -> None:
    """Review: NaN metrics (a method that diverged on some seeds) were dropped silently."""
    frame = _frame()
    frame.loc[(frame.factor == 5) & (frame.seed == 1), "nse"] = float("nan")
    frame.loc[(frame.factor == 1) & (frame.site == "a") & (frame.seed == 0), "nse"] = math.inf
    frame.loc[(frame.factor == 0) & (frame.site == "b") & (frame.seed == 0), "status"] = "failed"
    q = Question("ev", "nse", "factor", ("seed",), ("site",), 0, None, True)
    a = answer(frame, q, order=[0, 1, 5])
    assert a.left_out == {"done without a finite value": 5, "failed": 1}
    assert a.sentences[0] == ("Left out of this answer: 5 done without a finite value; "
                              "1 failed (of 24 tasks of ev); it covers the rest only.")
    t = a.table.set_index("factor")
    assert t.loc[5, "n"] == 4  # (seed 0 only, per site)
    assert t.loc[5, "pairs"] == 3  # (site b: its factor-0 seed 0 failed, seed 1 is NaN)
