"""Every applicable fit for one tidy table, collected with the reasons for the ones refused, each fit's
verdict (``analysis.verdict``) and the sweep's seed-to-seed noise (``analysis.noise``). Used by the
``fit`` / ``report`` / ``allocate`` commands so they agree on what was fitted, how, and what it means."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis import fit as F
from analysis import verdict as V
from analysis.allocate import flops_per_param_unit
from analysis.envelope import Envelope, collapse_lr
from analysis.noise import seed_noise
from analysis.predict import DEFAULT_LOSS, DEFAULT_QUALITY, TwoStep, metric_bounds, two_step_from_table
from analysis.table import usable
from analysis.transfer import fit_efficiency, fit_transfer, split_pretrained

APPROACHES = ("1", "2", "3")


@dataclass
class Suite:
    metric: str
    table: pd.DataFrame  # the usable (finished, from-scratch) trials the main fits saw
    full_table: pd.DataFrame | None = None  # every finished trial, fine-tuned ones included
    fits: dict[str, F.FitResult] = field(default_factory=dict)
    per_group: dict[str, dict[Any, F.FitResult]] = field(default_factory=dict)  # "L(N)" / "L(D)" by level
    group_cols: dict[str, str] = field(default_factory=dict)
    two_step: TwoStep | None = None
    refused: dict[str, str] = field(default_factory=dict)
    refused_needs: dict[str, tuple[str, ...]] = field(default_factory=dict)  # FitRefused.needs per key
    notes: list[str] = field(default_factory=list)
    noise: dict[str, Any] = field(default_factory=dict)  # analysis.noise.seed_noise of the metrics
    envelope: Envelope | None = None  # the lr envelope the fits ran on (analysis.envelope)

    def results(self) -> dict[str, Any]:
        """Every fitted result by its display name: the fits, each per-group fit, the two-step chain."""
        out: dict[str, Any] = dict(self.fits)
        for fits in self.per_group.values():
            out.update({f.name: f for f in fits.values()})
        if self.two_step is not None:
            out["two_step"] = self.two_step
        return out

    def verdicts(self) -> dict[str, V.Verdict]:
        """The verdict of everything attempted: fitted results judged by their rules, refused fits
        undetermined with the refusal as the reason."""
        out = {k: r.assess() for k, r in self.results().items()}
        for k, why in self.refused.items():
            if k not in out:
                out[k] = V.refused_verdict(why, self.refused_needs.get(k, ()))
        return out

    def to_dict(self) -> dict[str, Any]:
        return V.clean(
            {
                "metric": self.metric,
                "n_trials": len(self.table),
                "fits": {k: v.to_dict() for k, v in self.fits.items()},
                "per_group": {
                    k: {f"{self.group_cols[k]}={lev:.6g}": f.to_dict() for lev, f in v.items()}
                    for k, v in self.per_group.items()
                },
                "two_step": self.two_step.to_dict() if self.two_step else None,
                "verdicts": {k: v.to_dict() for k, v in self.verdicts().items()},
                "refused": self.refused,
                "noise": self.noise,
                "notes": self.notes,
            }
            | ({"envelope": self.envelope.to_dict()} if self.envelope and self.envelope.collapsed else {})
        )


def data_level_column(table: pd.DataFrame) -> str:
    """The column that says which data size a trial belongs to: the data_hours axis, else data_hours,
    else D itself."""
    for c in ("axis.data_hours", "data_hours", "data.data_hours"):
        if c in table.columns and table[c].notna().all():
            return c
    return "D"


QUALITY_COLS = ("axis.data.min_quality", "axis.min_quality", "data.min_quality", "min_quality")  # axis first


def quality_levels(col: pd.Series) -> pd.Series:
    """Quality filter per trial as strings; no filter (null / NaN / "None" / "") is the level "none"."""

    def one(v):
        if (
            v is None
            or (isinstance(v, float) and np.isnan(v))
            or str(v).strip() in ("", "None", "nan", "null")
        ):
            return "none"
        return str(v)

    return col.map(one).astype(object)


def quality_level_column(table: pd.DataFrame) -> str | None:
    """The column holding the quality filter (``data.min_quality``) when it takes 2+ levels, else None."""
    for c in QUALITY_COLS:
        if c in table.columns and quality_levels(table[c]).nunique() > 1:
            return c
    return None


def size_level_column(table: pd.DataFrame) -> str:
    for c in ("axis.model_size", "axis.hidden_channels", "model.hidden_channels"):
        if c in table.columns and table[c].notna().all() and table.groupby(c)["N"].nunique().max() == 1:
            return c
    return "N"


def run_suite(
    table: pd.DataFrame,
    metric: str = DEFAULT_LOSS,
    *,
    approaches: tuple[str, ...] = APPROACHES,
    curves: pd.DataFrame | None = None,
    quality: str | None = DEFAULT_QUALITY,
    loss: str = DEFAULT_LOSS,
    singles: bool = True,
    n_boot: int = 200,
    seed: int = 0,
    workers: int = 1,
) -> Suite:
    t = usable(table)
    s = Suite(metric=metric, table=t)
    dropped = len(table) - len(t)
    if dropped:
        s.notes.append(
            f"{dropped} trials not finished (failed, diverged or running) are left out of every fit"
        )
    full = t
    if "pretrain_hours" in t.columns:
        pre = pd.to_numeric(t["pretrain_hours"], errors="coerce").fillna(0.0) > 0
        if pre.any():
            t = t[~pre].reset_index(drop=True)
            s.table = t
            s.notes.append(
                f"{int(pre.sum())} fine-tuned trials (pretrain_hours > 0) are left out of the from-scratch fits; "
                "they enter the transfer fit"
            )
    s.full_table = full
    t, s.envelope = collapse_lr(t, metric)  # one lr per point: the best (a no-op without an lr axis)
    s.table = t
    s.notes += s.envelope.notes
    if s.envelope.collapsed and curves is not None and "trial" in curves.columns:
        curves = curves[curves["trial"].isin(t["trial"])]
    if metric not in t.columns:
        s.refused["all"] = f"the table has no column {metric!r}; columns: {sorted(map(str, t.columns))[:40]}"
        return s
    labels = t["trial"] if "trial" in t else None

    s.noise = seed_noise(t, [metric, quality, loss])

    def attempt(key, fn):
        try:
            s.fits[key] = fn()
        except F.FitRefused as e:
            s.refused[key] = e.reason
            s.refused_needs[key] = e.needs
        except KeyError as e:
            s.refused[key] = f"the table has no column {e}"

    y = t[metric]
    if "3" in approaches:
        attempt(
            "approach3",
            lambda: F.fit_approach3(
                t["N"], t["D"], y, n_boot=n_boot, seed=seed, workers=workers, labels=labels
            ),
        )
    if "2" in approaches:
        budgets = None
        for c in ("axis.compute_budget", "train.compute_budget", "axis.budget"):
            if c in t.columns and t[c].notna().all():
                budgets = t[c].to_numpy()
                break
        attempt(
            "approach2",
            lambda: F.fit_approach2(
                t["N"], t["D"], t["C"], y, budgets=budgets, n_boot=n_boot, seed=seed, labels=labels
            ),
        )
    if "1" in approaches:
        cv = curves
        if cv is None or len(cv) == 0:
            cv = (
                t[["trial", "N", "C", "D", metric]].rename(columns={metric: "L"})
                if {"trial", "N", "C", "D"} <= set(t.columns)
                else None
            )
            if cv is not None:
                s.notes.append(
                    "approach1 used final points only (no metric histories): the envelope is the Pareto frontier of trials"
                )
        if cv is None:
            s.refused["approach1"] = "the table has no N, C, D columns for curves"
        else:
            attempt("approach1", lambda: F.fit_approach1(cv, n_boot=n_boot, seed=seed))
    if not singles:
        return s
    attempt("L(C) frontier", lambda: F.fit_frontier(t["C"], y, n_boot=n_boot, seed=seed, labels=labels))
    for key, x, gcol in (
        ("L(N)", "N", data_level_column(t) if "D" in t else None),
        ("L(D)", "D", size_level_column(t) if "N" in t else None),
    ):
        if gcol is None or x not in t.columns:
            s.refused[key] = f"the table has no {x!r} column"
            continue
        s.group_cols[key] = gcol
        s.per_group[key] = {}
        reasons, needs = [], set()
        for lev, g in t.groupby(gcol):
            try:
                s.per_group[key][lev] = F.fit_power_law(
                    g[x],
                    g[metric],
                    n_boot=n_boot,
                    seed=seed,
                    labels=g.get("trial"),
                    name=f"{key} @ {gcol}={lev:.4g}",
                    x_name=x,
                )
            except F.FitRefused as e:
                reasons.append(f"{gcol}={lev:.4g}: {e.reason}")
                needs.update(e.needs)
        if reasons:
            s.refused_needs[key] = tuple(sorted(needs))
            s.refused[key] = "; ".join(reasons[:6]) + (
                f" (+{len(reasons) - 6} more)" if len(reasons) > 6 else ""
            )
    if "data_hours" in t.columns and "D" in t.columns:
        attempt(
            "data_constrained",
            lambda: F.fit_data_constrained(
                t["N"],
                t["D"],
                t["data_hours"] * 3600.0,
                y,
                n_boot=max(n_boot // 2, 0),
                seed=seed,
                labels=labels,
            ),
        )
    qcol = quality_level_column(t)
    if qcol is not None:
        lev = quality_levels(t[qcol])
        ref = "none" if (lev == "none").any() else None
        attempt(
            "efficiency",
            lambda: fit_efficiency(
                t["N"],
                t["D"],
                y,
                lev.to_numpy(),
                reference=ref,
                n_boot=max(n_boot // 2, 0),
                seed=seed,
                labels=labels,
            ),
        )
    if "pretrain_hours" in full.columns:

        def transfer():
            src = full
            if "stage" in full.columns and (full["stage"] == "finetune").any():
                src = full[full["stage"] == "finetune"]  # pretrain-stage trials saw other data: not controls
            sc, ft = split_pretrained(src)
            return fit_transfer(
                sc[["N", "D", metric]].rename(columns={metric: "L"}),
                ft[["N", "D", metric]].rename(columns={metric: "L"}),
                n_boot=max(n_boot // 2, 0),
                seed=seed,
            )

        attempt("transfer", transfer)
    if quality and quality != metric:
        if quality in t.columns:
            attempt(
                f"{quality}(C) saturating",
                lambda: F.fit_saturating(
                    t["C"],
                    t[quality],
                    ceiling=metric_bounds(quality)[1],
                    n_boot=n_boot,
                    seed=seed,
                    labels=labels,
                    name=f"{quality}(C)",
                ),
            )
            if loss in t.columns:
                try:
                    s.two_step = two_step_from_table(t, metric=quality, loss=loss, n_boot=n_boot, seed=seed)
                except F.FitRefused as e:
                    s.refused["two_step"] = e.reason
                    s.refused_needs["two_step"] = e.needs
        else:
            s.refused[f"{quality}(C) saturating"] = f"the table has no column {quality!r}"
    return s


def k_of(table: pd.DataFrame) -> float:
    return flops_per_param_unit(table)[0]


def c_range(table: pd.DataFrame) -> tuple[float, float]:
    c = table["C"].to_numpy(float) if "C" in table else np.array([1.0, 10.0])
    c = c[np.isfinite(c) & (c > 0)]
    return (float(c.min()), float(c.max())) if len(c) else (1.0, 10.0)
