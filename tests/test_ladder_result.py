"""The committed CPU ladder result (docs/ladder/, written by `make ladder`) is what its own table says.

`docs/ladder/table.csv` holds every finished trial of the run; `fits.json` beside it holds the fits the
report made from that run. Refitting the table with the same code, resamples and seed must give the same
numbers, and the README's ladder paragraph must state those numbers, so no figure in the docs can drift
from the run that produced it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LADDER = ROOT / "docs" / "ladder"
CHECKED = ("approach3", "L(C) frontier")


@pytest.fixture(scope="module")
def committed():
    fits = json.loads((LADDER / "fits.json").read_text(encoding="utf-8"))
    run = json.loads((LADDER / "run.json").read_text(encoding="utf-8"))
    return fits, run


def _close(a, b, rel=1e-6):
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=1e-12)


def test_the_table_refits_to_the_values_written_beside_it(committed):
    from analysis.suite import run_suite
    from analysis.table import load

    fits, _ = committed
    table = load(str(LADDER / "table.csv"))
    checked = [k for k in CHECKED if k in fits["fits"]]
    assert checked, f"fits.json has none of {CHECKED}: refused {fits['refused']}"
    n_boot = fits["fits"][checked[0]]["n_boot"]
    s = run_suite(table, fits["metric"], n_boot=n_boot, seed=0)
    assert len(s.table) == fits["n_trials"]
    for key in CHECKED:
        if key not in fits["fits"]:
            assert key in s.refused and key not in s.fits, key
            continue
        want, got = fits["fits"][key], s.fits[key].to_dict()
        assert got["verdict"] == want["verdict"], key
        for p, v in want["params"].items():
            assert _close(got["params"][p], v), (key, p, got["params"][p], v)
            assert all(_close(a, b) for a, b in zip(got["ci"][p], want["ci"][p], strict=True)), (key, p)


def _fmt_interval(fit: dict, p: str) -> str:
    lo, hi = fit["ci"][p]
    return f"{fit['params'][p]:.3f} [{lo:.3f}, {hi:.3f}]"


def test_the_readme_states_the_committed_law_and_backtest(committed):
    fits, run = committed
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## The CPU ladder") :]
    section = section[: section.index("\n## ", 4)]
    assert run["commit"] and run["commit"][:7] in section, "the README names the commit that produced it"
    a3 = fits["fits"].get("approach3")
    if a3 is not None:
        for p in ("alpha", "beta"):
            assert _fmt_interval(a3, p) in section, p
        assert a3["verdict"] in section
    bt = json.loads((LADDER / "backtest_val_nelbo.json").read_text(encoding="utf-8"))
    for law, r in bt["laws"].items():
        assert f"{100 * r['mean_abs_rel_error']:.1f}%" in section, law
    for name, b in bt["baselines"].items():
        assert f"{100 * b['mean_abs_rel_error']:.1f}%" in section, name
