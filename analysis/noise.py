"""Seed-to-seed noise: trials that differ only in their seed, grouped, and the spread of each metric
across seeds, pooled over the points that have repeats.

A *point* is one setting of every other coordinate: the ``axis.*`` columns except the seed (a sweep's own
axes), or, for a table without axis columns, the columns N, D, C, data_hours that it has. Per metric and
point with n >= 2 finite values: the relative standard deviation s / |mean| (s with n - 1 in the
denominator). Pooled over points, weighting each by its degrees of freedom:

    rel_std = sqrt( sum_i (n_i - 1) (s_i / |m_i|)^2 / sum_i (n_i - 1) )

Public practice puts seed-to-seed noise of language-model losses near 3.5 % (Choshen et al. 2024, "A
Hitchhiker's Guide to Scaling Law Estimation"): a law's held-out error below this cannot be told from
noise. Noise is only reported from repeats at ``MIN_POINTS`` points or more; one point's spread says how
that point varies, not the sweep, so repeats at a single point give a reason instead of a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SEED_COLUMNS = ("axis.seed", "seed", "train.seed")  # the sweep's seed axis first
FALLBACK_KEYS = ("N", "D", "C", "data_hours")  # a point, when the table has no axis columns
MIN_POINTS = 2  # points with seed repeats needed before a pooled noise figure is reported


def seed_column(table: pd.DataFrame) -> str | None:
    """The column holding each trial's seed, or None."""
    return next((c for c in SEED_COLUMNS if c in table.columns), None)


def _names(table: pd.DataFrame, mask) -> str:
    idx = np.flatnonzero(np.asarray(mask))
    names = [str(table["trial"].iloc[i]) if "trial" in table else f"row {i}" for i in idx[:5]]
    return ", ".join(names) + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")


def _check_seeds(table: pd.DataFrame, col: str) -> str | None:
    """A sentence saying what is wrong with the seed column, or None: every value an integer."""
    raw = table[col]
    missing = raw.isna()
    if missing.any():
        return f"the seed column {col!r} is empty for {_names(table, missing)}"
    num = pd.to_numeric(raw, errors="coerce")
    bad = num.isna()
    if bad.any():
        vals = ", ".join(repr(v) for v in raw[bad].unique()[:3])
        return (
            f"the seed column {col!r} mixes integer seeds with other values: {vals} for {_names(table, bad)}"
        )
    frac = num != np.round(num)
    if frac.any():
        return f"the seed column {col!r} has non-integer seeds for {_names(table, frac)}"
    return None


def point_keys(table: pd.DataFrame, seed_col: str | None) -> list[str]:
    """The columns that identify a point: every ``axis.*`` column but the seed, else ``FALLBACK_KEYS``."""
    axes = [c for c in table.columns if str(c).startswith("axis.") and c != seed_col]
    return axes or [c for c in FALLBACK_KEYS if c in table.columns]


def seed_noise(table: pd.DataFrame, metrics) -> dict[str, Any]:
    """Seed-to-seed noise per metric. Returns ``{"seed_column", "keys", "n_points_with_repeats", "metrics":
    {metric: {"rel_std", "n_points", "n_trials", "dof", "points": [{"point", "n", "mean", "rel_std"}]}},
    "reason"}``: ``reason`` (a sentence) instead of numbers when noise cannot be estimated (no seed
    column, a seed column that is not all integers, no point or one point with repeats); a metric whose
    values cannot give it carries its own ``reason``. Never NaN."""
    metrics = [m for m in dict.fromkeys(metrics) if m]
    out: dict[str, Any] = {"seed_column": None, "keys": [], "n_points_with_repeats": 0, "metrics": {}}
    col = seed_column(table)
    if col is None:
        out["reason"] = "the table has no seed column (axis.seed): no trial is a seed repeat of another"
        return out
    out["seed_column"] = col
    bad = _check_seeds(table, col)
    if bad:
        out["reason"] = bad + "; seed noise is not estimated"
        return out
    keys = point_keys(table, col)
    out["keys"] = keys
    if not keys:
        out["reason"] = "the table has no axis columns to tell points apart"
        return out
    t = table.assign(**{col: pd.to_numeric(table[col]).astype(int)})
    groups = [(pt, g) for pt, g in t.groupby(keys, dropna=False, sort=True) if g[col].nunique() >= 2]
    out["n_points_with_repeats"] = len(groups)
    if len(groups) < MIN_POINTS:
        where = (
            "no point"
            if not groups
            else "only one point (" + _point_text(keys, groups[0][0]) + f", {len(groups[0][1])} trials)"
        )
        out["reason"] = (
            f"seeds are repeated at {where}; seed-to-seed noise needs repeats at {MIN_POINTS} or more points"
        )
        return out
    for m in metrics:
        out["metrics"][m] = (
            _pooled(groups, keys, m, col) if m in t.columns else {"reason": f"no column {m!r}"}
        )
    out["reason"] = None
    return out


def _point_text(keys, pt) -> str:
    pt = pt if isinstance(pt, tuple) else (pt,)
    return ", ".join(f"{k.removeprefix('axis.')}={_v(v)}" for k, v in zip(keys, pt, strict=True))


def _v(v) -> str:
    return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)


def _pooled(groups, keys, metric: str, col: str) -> dict[str, Any]:
    num, dof, n_trials, points = 0.0, 0, 0, []
    for pt, g in groups:
        y = pd.to_numeric(g[metric], errors="coerce").to_numpy(float)
        y = y[np.isfinite(y)]
        if len(y) < 2 or np.mean(y) == 0:
            continue
        r = float(np.std(y, ddof=1) / abs(np.mean(y)))
        num += (len(y) - 1) * r * r
        dof += len(y) - 1
        n_trials += len(y)
        points.append({"point": _point_text(keys, pt), "n": len(y), "mean": float(np.mean(y)), "rel_std": r})
    if len(points) < MIN_POINTS:
        return {
            "reason": f"{metric!r} has finite values for 2 or more seeds at {len(points)} point(s) "
            f"(needs {MIN_POINTS})"
        }
    return {
        "rel_std": float(np.sqrt(num / dof)),
        "n_points": len(points),
        "n_trials": n_trials,
        "dof": dof,
        "points": points,
    }
