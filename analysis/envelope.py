"""The learning-rate envelope: a sweep with an ``lr`` axis trains each (size, budget, data) point at several
learning rates; a scaling law is a law of the *best* run at each point, so the fits see only that one.

``collapse_lr(table, metric)`` groups the trials that differ only in the learning rate (and seed): by every
``axis.*`` column except the lr, ``seed`` and ``branch`` axes, or, for a table without axis columns, by
``N`` + the budget column + the data column. In each group it keeps the trials of the lr whose mean
``metric`` over seeds is lowest (seeds are repeats of one lr, so a lucky seed does not pick the lr; ties go
to the smaller lr, so the result never depends on row order; an lr whose metric is missing ranks last). It
returns the collapsed table and an ``Envelope`` report: the winning lr per point (which lr won per size and
budget) and whether that winner sits at the edge of the lr values tried at that point (the smallest or the
largest): an edge winner means the envelope is not bracketed and a wider lr grid could still lower the
loss there, so the fit on it is biased (too high) at that point. A table with one lr per point comes back
unchanged (``Envelope.collapsed`` False).

Used by ``analysis.suite.run_suite`` (so ``fit``, ``allocate`` and ``report`` fit the collapsed table), the
``backtest`` command, and the report (``envelope_html``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# the lr of a trial, in the order looked for: the lr axis, a train.learning_rate axis, the config param
LR_COLUMNS = ("axis.lr", "axis.train.learning_rate", "train.learning_rate", "lr", "learning_rate")
NOT_POINT_AXES = ("axis.seed", "axis.branch")  # repeats and WSD phases are not part of a point
BUDGET_COLUMNS = ("axis.compute_budget", "train.compute_budget", "compute_budget")
DATA_COLUMNS = ("axis.data_hours", "data_hours", "data.data_hours")


@dataclass
class Envelope:
    """What ``collapse_lr`` did: per point the lr values tried, the winner and its metric, edge flags."""

    metric: str
    lr_col: str | None
    point_cols: list[str]
    collapsed: bool
    points: pd.DataFrame  # one row per point: point cols, N, lr, metric, n_lr, lr_min, lr_max, edge
    n_before: int
    n_after: int
    notes: list[str] = field(default_factory=list)

    @property
    def edge_points(self) -> pd.DataFrame:
        """The points whose best lr is the smallest or largest tried there (not bracketed)."""
        if not self.collapsed:
            return self.points.iloc[0:0]
        return self.points[self.points["edge"].notna()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "lr_col": self.lr_col,
            "point_cols": self.point_cols,
            "collapsed": self.collapsed,
            "n_before": self.n_before,
            "n_after": self.n_after,
            "points": self.points.replace({np.nan: None}).to_dict(orient="records"),
            "notes": self.notes,
        }


def lr_column(table: pd.DataFrame) -> str | None:
    """The column holding each trial's learning rate (the first of ``LR_COLUMNS`` present), or None."""
    return next((c for c in LR_COLUMNS if c in table.columns), None)


def point_columns(table: pd.DataFrame, lr_col: str) -> list[str]:
    """The columns that say which (size, budget, data, ...) point a trial is, its lr left out."""
    axes = [c for c in table.columns if c.startswith("axis.") and c != lr_col and c not in NOT_POINT_AXES]
    axes = [c for c in axes if not (lr_col == "train.learning_rate" and c == "axis.train.learning_rate")]
    if axes:
        return axes
    cols = ["N"] if "N" in table.columns else []
    for group in (BUDGET_COLUMNS, DATA_COLUMNS):
        c = next((c for c in group if c in table.columns), None)
        if c is not None:
            cols.append(c)
    return cols


def _key(v: Any) -> Any:
    """A hashable group key of one cell (NaN as None, mappings and lists as text)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, dict | list):
        return repr(v)
    return v


def collapse_lr(
    table: pd.DataFrame, metric: str, *, lr_col: str | None = None, point_cols: list[str] | None = None
) -> tuple[pd.DataFrame, Envelope]:
    """The table with, per point, only the trials of its best lr (lowest mean ``metric``), and the report."""
    lr_col = lr_col or lr_column(table)
    empty = pd.DataFrame(columns=["lr", metric, "n_lr", "lr_min", "lr_max", "edge"])
    if lr_col is None or metric not in table.columns or table.empty:
        return table, Envelope(metric, lr_col, [], False, empty, len(table), len(table))
    cols = point_columns(table, lr_col) if point_cols is None else list(point_cols)
    lr = pd.to_numeric(table[lr_col], errors="coerce")
    y = pd.to_numeric(table[metric], errors="coerce")
    keys = [tuple(_key(table[c].iloc[i]) for c in cols) for i in range(len(table))]
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    keep: list[int] = []
    rows = []
    for k, idx in groups.items():
        keep += [i for i in idx if np.isnan(lr.iloc[i])]  # no lr recorded: not part of any envelope
        idx = [i for i in idx if not np.isnan(lr.iloc[i])]
        if not idx:
            continue
        lrs = lr.iloc[idx]
        per_lr = y.iloc[idx].groupby(lrs.to_numpy()).mean()  # mean over seeds of each lr
        tried = sorted(per_lr.index)
        ranked = sorted(tried, key=lambda v: (np.isnan(per_lr[v]), per_lr[v], v))
        best = ranked[0]
        keep += [i for i in idx if lr.iloc[i] == best]
        edge = None
        if len(tried) == 1:
            edge = "only lr"
        elif best == tried[0]:
            edge = "smallest"
        elif best == tried[-1]:
            edge = "largest"
        n = table["N"].iloc[idx[0]] if "N" in table.columns else np.nan
        rows.append(
            {
                **dict(zip(cols, k, strict=True)),
                "N": n,
                "lr": best,
                metric: per_lr[best],
                "n_lr": len(tried),
                "lr_min": tried[0],
                "lr_max": tried[-1],
                "edge": edge,
            }
        )
    points = pd.DataFrame(rows) if rows else empty
    collapsed = bool((points["n_lr"] > 1).any())
    if not collapsed:
        return table, Envelope(metric, lr_col, cols, False, points, len(table), len(table))
    out = table.iloc[sorted(keep)].reset_index(drop=True)
    out.attrs = dict(table.attrs)
    env = Envelope(metric, lr_col, cols, True, points, len(table), len(out))
    env.notes.append(
        f"lr envelope: {len(points)} points over {lr_col}; the best lr per point by mean {metric} "
        f"keeps {len(out)} of {len(table)} trials"
    )
    edges = env.edge_points
    if len(edges):
        shown = "; ".join(
            _point_text(r, cols) + f": lr {r['lr']:.3g} ({r['edge']})" for _, r in edges.head(6).iterrows()
        )
        more = f" (+{len(edges) - 6} more)" if len(edges) > 6 else ""
        env.notes.append(
            f"lr envelope not bracketed at {len(edges)} of {len(points)} points (the best lr is at the edge of "
            f"the lr values tried there; widen the lr grid): {shown}{more}"
        )
    return out, env


def _point_text(row: pd.Series, cols: list[str]) -> str:
    return " ".join(f"{c.removeprefix('axis.')}={_fmt(row[c])}" for c in cols)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def envelope_html(env: Envelope | None) -> str:
    """The report's section on the lr envelope: the winner per point, edge winners marked; "" if none."""
    if env is None or not env.collapsed:
        return ""
    cols = [
        *env.point_cols,
        *(["N"] if "N" not in env.point_cols else []),
        "lr",
        env.metric,
        "lrs tried",
        "edge",
    ]
    head = "".join(f"<th>{html.escape(c.removeprefix('axis.'))}</th>" for c in cols)
    body = []
    for _, r in env.points.iterrows():
        cells = [html.escape(_fmt(r[c])) for c in env.point_cols]
        if "N" not in env.point_cols:
            cells.append(html.escape(_fmt(r["N"])))
        cells += [
            f"{r['lr']:.3g}",
            html.escape(_fmt(r[env.metric])),
            f"{r['n_lr']} ({r['lr_min']:.3g}-{r['lr_max']:.3g})",
            f"<b>edge: {html.escape(r['edge'])}</b>" if isinstance(r["edge"], str) else "",
        ]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in env.notes)
    return (
        "<h2>Learning-rate envelope</h2><p>Each point's fits use only its best lr (lowest mean "
        f"<code>{html.escape(env.metric)}</code> over seeds). An edge winner is the smallest or largest lr tried "
        "at that point: the envelope is not bracketed there.</p>"
        f"<ul>{notes}</ul><table><tr>{head}</tr>{''.join(body)}</table>"
    )
