"""The CPU-sized quality-vs-quantity sweep (issue 10): plan, run on local Ray + SQLite MLflow, analysis.

``tests/sweeps/quality_vs_quantity_cpu.yaml``: a 0.06 h built-in corpus with 30% of its utterances degraded,
quality levels ``null`` (no filter, the reference) and ``"default"``, nested data hours, two widths.
Building and scoring the corpus (DNSMOS) takes about a minute on 2 cores; it is done once per module in a
shared tmp directory. The plan test needs only that; the sweep test (slow) runs the ten trials and the fits.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import yaml
from orch_helpers import SWEEPS

pytestmark = pytest.mark.integration

SPEC = SWEEPS / "quality_vs_quantity_cpu.yaml"
AXIS = "data.min_quality"


@pytest.fixture(scope="module")
def spec_raw(tmp_path_factory) -> tuple[Path, dict]:
    """The CPU sweep with storage, tracking, corpus and cache pointed into one tmp directory."""
    tmp = tmp_path_factory.mktemp("quality_sweep")
    raw = yaml.safe_load(SPEC.read_text())
    raw["storage_path"] = str(tmp / "sweeps")
    raw["tracking_uri"] = f"sqlite:///{tmp / 'mlflow.db'}"
    raw["base"]["data"]["corpus_dir"] = str(tmp / "corpus")
    raw["base"]["data"]["cache_dir"] = str(tmp / "cache")
    (tmp / "quality_vs_quantity_cpu.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp, raw


@pytest.fixture(scope="module")
def plan(spec_raw):
    from orchestrator.plan import parse_spec, resolve

    tmp, raw = spec_raw
    return resolve(parse_spec(raw, tmp / "quality_vs_quantity_cpu.yaml"), count=False)


def test_plan_has_every_level_and_skips_hours_beyond_the_filtered_pool(plan, spec_raw):
    _, raw = spec_raw
    hours = sorted(p["data_hours"] for p in raw["points"])
    widths = raw["axes"]["width"]
    levels = raw["axes"][AXIS]
    assert levels == [None, "default"]
    got = {(t.axes[AXIS], t.axes["data_hours"], t.axes["width"]) for t in plan.trials}
    # the unfiltered level runs every point; the default filter everything but the largest amount
    want = {(None, h, w) for h in hours for w in widths} | {
        ("default", h, w) for h in hours[:-1] for w in widths
    }
    assert got == want
    assert len(plan.trials) == len(want) == 10
    for t in plan.trials:  # the level reaches the trial's config, not only its axes
        assert t.config.data.min_quality == t.axes[AXIS]
        assert t.config.data.builtin_degrade == pytest.approx(0.3)
    assert len(plan.skipped) == len(widths)
    for s in plan.skipped:
        assert (s.axes[AXIS], s.axes["data_hours"]) == ("default", hours[-1])
        assert "min_quality 'default'" in s.reason and "holds" in s.reason, s.reason
        avail = float(s.reason.split("holds (")[1].split(" h")[0])
        assert hours[-2] < avail < hours[-1]


def _selection(cfg):
    from model.data.select import select

    return select(cfg.data)


def test_nested_subsets_per_level_exclude_degraded_items_when_filtered(plan, spec_raw):
    """What each trial trains on, from the same selection the trials prepare (cached scores)."""
    from model.data.quality_report import read_degradations

    tmp, _ = spec_raw
    by_level: dict = {}
    for t in plan.trials:
        sel = _selection(t.config)
        by_level.setdefault(t.axes[AXIS], {})[t.axes["data_hours"]] = {i.id for i in sel.train}
        held = {i.id for i in sel.heldout}
        assert held and not held & {i.id for i in sel.train}
    corpus = next(p for p in (tmp / "corpus").iterdir() if p.is_dir())
    degraded = set(read_degradations(corpus))
    assert degraded
    for level, subsets in by_level.items():
        hs = sorted(subsets)
        for a, b in zip(hs, hs[1:], strict=False):
            assert subsets[a] < subsets[b], (level, a, b)  # nested, strictly growing
    filtered = set().union(*by_level["default"].values())
    unfiltered = set().union(*by_level[None].values())
    # the filter drops most degraded utterances; the unfiltered pool keeps its share of them
    assert len(filtered & degraded) <= 0.25 * len(filtered)
    assert len(unfiltered & degraded) >= 0.15 * len(unfiltered)


@pytest.mark.slow
def test_sweep_runs_and_the_efficiency_fit_answers_or_refuses(spec_raw, plan):
    from analysis.fit import FitRefused
    from analysis.suite import quality_level_column, quality_levels, run_suite
    from analysis.table import load
    from analysis.transfer import fit_efficiency
    from orchestrator.driver import submit_sweep

    tmp, raw = spec_raw
    old = Path.cwd()
    os.chdir(tmp)
    try:
        result = submit_sweep(tmp / "quality_vs_quantity_cpu.yaml", progress=False)
    finally:
        os.chdir(old)
    assert result.n_finished == len(plan.trials) == 10, result.trials
    assert len(result.skipped) == 2

    table = load(raw["name"], tracking_uri_=raw["tracking_uri"])
    col = f"axis.{AXIS}"
    assert col in table.columns
    assert (table["status"] == "finished").all()
    assert quality_level_column(table) == col
    levels = quality_levels(table[col])
    assert sorted(levels.unique()) == ["default", "none"]
    assert (levels == "none").sum() == 6 and (levels == "default").sum() == 4
    for key in ("val_nelbo", "dnsmos_ovrl", "N", "D", "data_hours"):
        assert table[key].notna().all(), key
    # unique training hours follow the axis (nested prefixes overshoot by at most one utterance)
    assert (table["data_hours"] >= table["axis.data_hours"] * 0.999).all()

    cols = [col, "axis.data_hours", "axis.width", "N", "D", "data_hours", "val_nelbo", "dnsmos_ovrl"]
    print("\n" + table.sort_values(cols[:3], key=lambda c: c.astype(str))[cols].to_string(index=False))

    suite = run_suite(table, n_boot=20)
    print("efficiency:", suite.fits["efficiency"].to_dict() if "efficiency" in suite.fits else suite.refused)
    if "efficiency" in suite.fits:
        f = suite.fits["efficiency"]
        assert f.meta["reference"] == "none"
        m = f.params["m[default]"]
        lo, hi = f.ci["m[default]"]
        assert m > 0 and math.isfinite(m) and lo <= hi
    else:
        assert "efficiency" in suite.refused, (suite.refused, suite.notes)
        assert isinstance(suite.refused["efficiency"], str) and suite.refused["efficiency"]
    # called directly, the fit either answers or raises FitRefused (never another error)
    try:
        fit_efficiency(
            table["N"], table["D"], table["val_nelbo"], levels.to_numpy(), reference="none", n_boot=10
        )
    except FitRefused as e:
        assert e.reason
