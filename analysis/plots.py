"""Scaling plots (matplotlib, Agg backend). Every function writes ``<out>/<name>.png`` and ``.svg`` and
returns the PNG path; inputs are the tidy table and ``FitResult`` objects from ``analysis.fit``. A fit whose
verdict is undetermined is drawn dashed and labelled "(undetermined)" in the legend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis import laws  # noqa: E402
from analysis.fit import FitResult  # noqa: E402


def _save(fig, out: str | Path, name: str) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out / f"{name}.svg")
    plt.close(fig)
    return png


def _grid(x, lo_mult=1.0, hi_mult=1.0, n=100):
    x = np.asarray(x, float)
    return np.geomspace(x.min() * lo_mult, x.max() * hi_mult, n)


def _tag(fit) -> str:
    """ " (undetermined)" for a fit whose verdict is undetermined, else ""."""
    return "" if fit.assess().determined else " (undetermined)"


def _ls(fit, solid: str = "-") -> str:
    return solid if fit.assess().determined else "--"


def _band(ax, fit: FitResult, xs, *args, color=None, level=0.9):
    if fit.samples:
        lo, hi = fit.interval(*args, level=level)
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)


def loss_vs_x(
    table: pd.DataFrame, metric: str, x: str, group: str, fits: dict[Any, FitResult], out, name: str
) -> Path:
    """Loss against N (per data size) or against D (per model size), with each group's fitted law."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    levels = sorted(table[group].dropna().unique())
    cmap = plt.get_cmap("viridis", max(len(levels), 2))
    for j, lev in enumerate(levels):
        g = table[table[group] == lev]
        c = cmap(j)
        f = fits.get(lev)
        ax.scatter(g[x], g[metric], color=c, s=18, label=f"{group}={lev:.3g}" + (_tag(f) if f else ""))
        if f is not None:
            xs = _grid(g[x], 0.8, 1.25)
            ax.plot(xs, f.predict(xs), color=c, lw=1.2, ls=_ls(f))
            _band(ax, f, xs, xs, color=c)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {x} per {group}")
    ax.legend(fontsize=7)
    return _save(fig, out, name)


def isoflop(table: pd.DataFrame, metric: str, fit: FitResult, out, name: str = "isoflop") -> Path:
    """IsoFLOP profiles: loss against N per compute budget, the fitted parabolas and their minima."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = np.asarray(fit.meta["groups"])
    levels = np.unique(groups)
    cmap = plt.get_cmap("plasma", max(len(levels) + 1, 2))
    C_opt = fit.meta["C_opt"]
    for j, g in enumerate(levels):
        sub = table[groups == g]
        c = cmap(j)
        Cg = float(np.median(sub["C"]))
        ax.scatter(sub["N"], sub[metric], color=c, s=18, label=f"C={Cg:.2g}")
        k = int(np.argmin(np.abs(np.log(np.asarray(C_opt)) - np.log(Cg)))) if C_opt else -1
        if k >= 0 and abs(np.log(C_opt[k] / Cg)) < 0.3:
            p = fit.meta["parabolas"][k]
            xs = _grid(sub["N"], 0.9, 1.1)
            ax.plot(xs, np.polyval(p, np.log(xs)), color=c, lw=1)
            ax.scatter(
                [fit.meta["N_opt"][k]], [fit.meta["L_min"][k]], color=c, marker="*", s=120, edgecolor="k"
            )
    ax.set_xscale("log")
    ax.set_xlabel("N (generator parameters)")
    ax.set_ylabel(metric)
    ax.set_title("IsoFLOP profiles (stars: fitted minima)")
    ax.legend(fontsize=7)
    return _save(fig, out, name)


def allocation(
    fits: dict[str, FitResult], a3: FitResult | None, k: float, C_range, out, name: str = "allocation"
) -> Path:
    """N_opt(C) and D_opt(C) from Approaches 1 and 2 (points and fitted lines with bands) and Approach 3."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    Cs = np.geomspace(C_range[0] / 3, C_range[1] * 30, 80)
    colors = {"approach1": "tab:blue", "approach2": "tab:orange"}
    for nm, f in fits.items():
        c = colors.get(nm, "tab:gray")
        Np, Dp = f.predict(Cs)
        mC = f.meta.get("C_opt") or f.meta.get("C_env") or []
        mN = f.meta.get("N_opt") or f.meta.get("N_env") or []
        mD = f.meta.get("D_opt") or f.meta.get("D_env") or []
        axes[0].scatter(mC, mN, color=c, s=14)
        axes[1].scatter(mC, mD, color=c, s=14)
        axes[0].plot(Cs, Np, color=c, ls=_ls(f), label=f"{nm}: a={f.params['a']:.2f}{_tag(f)}")
        axes[1].plot(Cs, Dp, color=c, ls=_ls(f), label=f"{nm}: b={f.params['b']:.2f}{_tag(f)}")
        if f.samples:
            draws = [
                f.predict(Cs, params={kk: f.samples[kk][i] for kk in f.samples})
                for i in range(len(f.samples["a"]))
            ]
            for ax, j in ((axes[0], 0), (axes[1], 1)):
                arr = np.stack([d[j] for d in draws])
                ax.fill_between(
                    Cs, np.quantile(arr, 0.05, 0), np.quantile(arr, 0.95, 0), color=c, alpha=0.15, lw=0
                )
    if a3 is not None:
        p = a3.params
        Np, Dp = laws.compute_optimal(Cs, p["A"], p["B"], p["alpha"], p["beta"], k)
        ls = "--" if a3.assess().determined else ":"
        for ax, y, e in ((axes[0], Np, "a"), (axes[1], Dp, "b")):
            ax.plot(Cs, y, "k", ls=ls, label=f"approach3: {e}={p[e]:.2f}{_tag(a3)}")
        if a3.samples:
            s = a3.samples
            NN, DD = laws.compute_optimal(
                Cs[None], s["A"][:, None], s["B"][:, None], s["alpha"][:, None], s["beta"][:, None], k
            )
            axes[0].fill_between(
                Cs, np.quantile(NN, 0.05, 0), np.quantile(NN, 0.95, 0), color="k", alpha=0.08, lw=0
            )
            axes[1].fill_between(
                Cs, np.quantile(DD, 0.05, 0), np.quantile(DD, 0.95, 0), color="k", alpha=0.08, lw=0
            )
    for ax, lab in ((axes[0], "N_opt (parameters)"), (axes[1], "D_opt (audio seconds)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("C (training FLOPs)")
        ax.set_ylabel(lab)
        ax.legend(fontsize=7)
    fig.suptitle("Compute-optimal allocation (bands: 90% bootstrap)")
    return _save(fig, out, name)


def frontier(table: pd.DataFrame, metric: str, fit: FitResult | None, out, name: str = "frontier") -> Path:
    """Loss against compute for every trial, the Pareto frontier and its fitted law."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    sc = ax.scatter(table["C"], table[metric], c=np.log10(table["N"]), cmap="viridis", s=18)
    fig.colorbar(sc, ax=ax, label="log10 N")
    if fit is not None:
        idx = fit.meta.get("frontier_index", [])
        ax.scatter(
            table["C"].to_numpy()[idx],
            table[metric].to_numpy()[idx],
            facecolor="none",
            edgecolor="r",
            s=60,
            label="frontier",
        )
        xs = _grid(table["C"], 0.8, 10)
        ax.plot(
            xs, fit.predict(xs), "r", ls=_ls(fit), label=f"E+A C^-a, a={fit.params['alpha']:.3f}{_tag(fit)}"
        )
        _band(ax, fit, xs, xs, color="r")
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("C (training FLOPs)")
    ax.set_ylabel(metric)
    ax.set_title("Compute frontier")
    return _save(fig, out, name)


def predicted_vs_observed(
    table: pd.DataFrame, metric: str, fit: FitResult, out, name: str = "pred_vs_obs"
) -> Path:
    """Approach 3 predictions against observations, and log residuals against compute."""
    pred = fit.predict(table["N"].to_numpy(float), table["D"].to_numpy(float))
    obs = table[metric].to_numpy(float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    axes[0].scatter(obs, pred, s=16)
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=1)
    axes[0].set_xlabel(f"observed {metric}")
    axes[0].set_ylabel("predicted (approach 3)")
    axes[1].scatter(table["C"], np.log(obs) - np.log(pred), s=16)
    axes[1].axhline(0, color="k", lw=1)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("C (training FLOPs)")
    axes[1].set_ylabel("log residual (obs - pred)")
    return _save(fig, out, name)


def quality_vs_compute(
    table: pd.DataFrame,
    metric: str,
    fit: FitResult,
    out,
    name: str = "quality_vs_compute",
    extrapolate: float = 100.0,
) -> Path:
    """A bounded quality metric against compute, the saturating fit and its extrapolation band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(table["C"], table[metric], s=18, label="trials")
    xmax = float(table["C"].max())
    xs = np.geomspace(float(table["C"].min()) * 0.8, xmax * extrapolate, 120)
    ax.plot(
        xs,
        fit.predict(xs),
        "C1",
        ls=_ls(fit),
        label=f"M - A C^-a: M={fit.params['M']:.2f}, a={fit.params['alpha']:.2f}{_tag(fit)}",
    )
    _band(ax, fit, xs, xs, color="C1")
    ax.axvline(xmax, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("C (training FLOPs)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs compute (shaded: 90% band; right of dotted line: extrapolation)")
    ax.legend(fontsize=7)
    return _save(fig, out, name)


def backtest_plot(result: dict[str, Any], table: pd.DataFrame, out, name: str = "backtest") -> Path:
    """Predicted against observed for the held-out trials, one marker per law, with intervals."""
    metric = result["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = "osD^v"
    allv = []
    for j, (law, r) in enumerate(result["laws"].items()):
        o = np.array([p["observed"] for p in r["points"]])
        p_ = np.array([p["predicted"] for p in r["points"]])
        lo = np.array([p["low"] for p in r["points"]])
        hi = np.array([p["high"] for p in r["points"]])
        ax.errorbar(
            o,
            p_,
            yerr=[p_ - lo, hi - p_],
            fmt=markers[j % 5],
            ms=5,
            capsize=2,
            label=f"{law}: MARE {r['mean_abs_rel_error']:.3f}, cov {r['coverage']:.2f}",
        )
        allv += list(o) + list(lo) + list(hi)
    if allv:
        lo, hi = min(allv), max(allv)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"observed {metric} (held out)")
    ax.set_ylabel("predicted")
    ax.set_title(f"Backtest: {result['n_test']} held-out trials ({result['held_out_by']})")
    ax.legend(fontsize=7)
    return _save(fig, out, name)


def pretrain_vs_scratch(table: pd.DataFrame, metric: str, out, name: str = "pretrain_vs_scratch") -> Path:
    """Fine-tune loss against fine-tune hours, pretrained (filled) vs from scratch (open), per model size."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pre = pd.to_numeric(table["pretrain_hours"], errors="coerce").fillna(0) > 0
    hours = table["data_hours"] if "data_hours" in table.columns else table["D"] / 3600.0
    sizes = sorted(table["N"].unique())
    cmap = plt.get_cmap("viridis", max(len(sizes), 2))
    for j, n in enumerate(sizes):
        for flag, style in ((False, dict(facecolor="none", ls="--")), (True, dict(ls="-"))):
            m = (table["N"] == n) & (pre == flag)
            if not m.any():
                continue
            o = np.argsort(hours[m].to_numpy())
            hx, ly = hours[m].to_numpy()[o], table.loc[m, metric].to_numpy()[o]
            ax.plot(hx, ly, color=cmap(j), ls=style["ls"], lw=1)
            ax.scatter(
                hx,
                ly,
                color=cmap(j),
                facecolor=style.get("facecolor", cmap(j)),
                s=20,
                label=f"N={n:.2g} {'pretrained' if flag else 'scratch'}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fine-tune hours")
    ax.set_ylabel(metric)
    ax.set_title("Pretrained (solid) vs from scratch (dashed)")
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out, name)
