"""One self-contained HTML report that leads with the answer: a paragraph generated from the verdicts (what
the sweep determines, what it does not and why, how the backtest did against the no-fit baselines, what to
run next in the sweep's own axes), then the determined fits, the undetermined ones under their own heading,
seed-to-seed noise, plots inlined as base64 PNG (SVGs written beside it), the backtest with its baselines,
an allocation example (only from a determined fit), the data table, and a plain section listing every fit
that was refused and why. No interval is printed as NaN. ``log_report_to_mlflow`` puts the folder (with
``fits.json``: every verdict) on the sweep's parent run so the MLflow UI shows it."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis import verdict as V
from analysis.allocate import allocate
from analysis.backtest import BASELINES, backtest
from analysis.envelope import envelope_html
from analysis.fit import FitRefused, FitResult
from analysis.predict import DEFAULT_LOSS, DEFAULT_QUALITY
from analysis.suite import c_range, k_of, run_suite
from analysis.table import log_artifacts

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.refused{background:#fff4e5;padding:.5em 1em;border-left:4px solid #f90}
.answer{background:#eef6ee;padding:.7em 1em;border-left:4px solid #2a2;font-size:15px;line-height:1.45}
.undetermined{background:#f6f6f6;padding:.3em 1em;border-left:4px solid #999;margin:.5em 0}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f3f3f3;padding:0 3px}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | float | np.floating | np.integer):
        v = float(v)
        if not np.isfinite(v):
            return "–"
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    b = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _fit_table(f: FitResult, title: str | None = None) -> str:
    """One fit: its parameters with their intervals (the level in the column heading; "undetermined" for an
    interval that is not finite) and at-bound shares, how many resamples converged, and, for an
    undetermined fit, its reasons above the numbers."""
    v = f.assess()
    lv = round(f.level * 100)
    rows = [
        [
            k,
            x,
            V.interval_text(*f.ci.get(k, (np.nan, np.nan))),
            "-" if v.at_bound_share.get(k) is None else f"{v.at_bound_share[k]:.0%}",
        ]
        for k, x in f.params.items()
    ]
    res = ", ".join(f"{k} {_fmt(x)}" for k, x in f.residuals.items())
    why = (
        '<div class="undetermined"><b>undetermined</b> because<ul>'
        + "".join(f"<li>{html.escape(r)}</li>" for r in v.texts)
        + "</ul></div>"
        if not v.determined
        else ""
    )
    return (
        f"<h3>{html.escape(title or f.name)}</h3>{why}<p>{f.n_points} points; {lv}% bootstrap intervals over "
        f"the {f.n_converged} of {f.n_boot} resamples that converged ({f.n_failed} failed); residuals: {res}</p>"
        + _table(["parameter", "value", f"{lv}% interval", "resamples at a bound"], rows)
    )


def _predictions_table(f: FitResult, two_step, k: float) -> str:
    """Extrapolations of a determined saturating fit to 2, 10 and 100x the largest compute, beside the
    two-step chain when that is determined too; 90% intervals."""
    xmax = f.meta["x_max"]
    xs = np.array([2.0, 10.0, 100.0]) * xmax
    lo, hi = f.interval(xs, level=0.9)
    rows = [
        [f"{m:g}x max compute ({x:.3g} FLOPs)", p, V.interval_text(a, b)]
        for m, x, p, a, b in zip((2, 10, 100), xs, f.predict(xs), lo, hi, strict=True)
    ]
    if two_step is not None and two_step.assess().determined:
        ch = two_step.predict_budget(xs, k=k, level=0.9)
        rows = [
            r + [m, V.interval_text(a, b)]
            for r, m, a, b in zip(rows, ch["metric"], ch["low"], ch["high"], strict=True)
        ]
        return (
            "<p>Direct saturating fit beside the two-step chain (compute-optimal N, D at each budget):</p>"
            + _table(["budget", "direct", "90% interval", "chained", "90% interval"], rows)
        )
    return _table(["budget", "predicted", "90% interval"], rows)


def _img(png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(Path(png).stem)}">'


def write_report(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    metric: str = DEFAULT_LOSS,
    quality: str | None = DEFAULT_QUALITY,
    curves: pd.DataFrame | None = None,
    n_boot: int = 200,
    holdout_top: int | None = None,
    holdout_above: float | None = None,
    holdout_n_above: float | None = None,
    seed: int = 0,
    title: str | None = None,
    exact_count: bool = True,
) -> Path:
    """Run every applicable fit, draw the plots, write ``out_dir/report.html`` (+ PNG/SVG, ``fits.json``,
    ``table.csv``). Returns the HTML path. The allocation's config is always sized with ``model.counting``;
    ``exact_count`` is accepted for existing callers and has no effect (see ``allocate.nearest_config``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = run_suite(table, metric, curves=curves, quality=quality, n_boot=n_boot, seed=seed)
    t = s.table
    parts: list[str] = []
    images: list[Path] = []
    refused = dict(s.refused)

    def plot(key: str, fn):
        try:
            images.append(fn())
        except Exception as e:  # a plot must never sink the report; say what failed
            refused[f"plot {key}"] = f"could not be drawn: {type(e).__name__}: {e}"

    src = table.attrs.get("source", "table")
    parts.append(f"<h1>{html.escape(title or 'Scaling report')}</h1>")
    parts.append(
        f"<p>Source: <code>{html.escape(str(src))}</code>. Metric: <code>{html.escape(metric)}</code>. "
        f"{len(t)} finished trials of {len(table)}. Generated {_dt.datetime.now().isoformat(timespec='seconds')}.</p>"
    )
    if s.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    parts.append(
        envelope_html(s.envelope)
    )  # the best lr per point, edge winners flagged ("" without lr axis)

    # fits: determined under one heading, undetermined under another, never in the same table
    answer_at = len(parts)  # the opening paragraph goes here once the backtest is known
    k = k_of(t) if len(t) else 6.0
    determined: list[str] = []
    undetermined: list[str] = []
    for key in (
        "approach3",
        "approach2",
        "approach1",
        "L(C) frontier",
        "data_constrained",
        "efficiency",
        "transfer",
    ):
        if key in s.fits:
            f = s.fits[key]
            (determined if f.assess().determined else undetermined).append(_fit_table(f))
    for fits in s.per_group.values():
        for f in fits.values():
            (determined if f.assess().determined else undetermined).append(_fit_table(f))
    sat_key = next((k for k in s.fits if k.endswith("saturating")), None)
    if sat_key:
        f = s.fits[sat_key]
        if f.assess().determined:
            determined.append(_fit_table(f) + _predictions_table(f, s.two_step, k))
        else:
            undetermined.append(_fit_table(f))
    if s.two_step is not None:
        ts = s.two_step
        head = f"Two-step: {ts.loss} &rarr; {ts.metric}"
        block = _fit_table(ts.step1, f"{head}, step 1: {ts.step1.name}") + _fit_table(
            ts.step2, f"{head}, step 2: {ts.step2.name}"
        )
        (determined if ts.assess().determined else undetermined).append(block)
    parts.append("<h2>Determined fits</h2>" + ("".join(determined) or "<p>None: see below.</p>"))
    if undetermined:
        parts.append(
            "<h2>Undetermined fits</h2><p>These fits ran, but the trials do not pin their numbers down; "
            "each says why. They are shown to diagnose the sweep, not as results.</p>" + "".join(undetermined)
        )
    parts.append(_noise_section(s.noise))

    # plots
    if "approach3" in s.fits:
        plot("pred_vs_obs", lambda: plots.predicted_vs_observed(t, metric, s.fits["approach3"], out))
    for key, name in (("L(N)", "loss_vs_N"), ("L(D)", "loss_vs_D")):
        if key in s.per_group:
            x = "N" if key == "L(N)" else "D"
            plot(
                name,
                lambda key=key, name=name, x=x: plots.loss_vs_x(
                    t, metric, x, s.group_cols[key], s.per_group[key], out, name
                ),
            )
    if "approach2" in s.fits:
        plot("isoflop", lambda: plots.isoflop(t, metric, s.fits["approach2"], out))
    alloc_fits = {kk: s.fits[kk] for kk in ("approach1", "approach2") if kk in s.fits}
    if alloc_fits or "approach3" in s.fits:
        plot("allocation", lambda: plots.allocation(alloc_fits, s.fits.get("approach3"), k, c_range(t), out))
    if "C" in t.columns and metric in t.columns and len(t):
        plot("frontier", lambda: plots.frontier(t, metric, s.fits.get("L(C) frontier"), out))
    ft = s.full_table if s.full_table is not None else t
    if "pretrain_hours" in ft.columns and metric in ft.columns:
        plot("pretrain_vs_scratch", lambda: plots.pretrain_vs_scratch(ft, metric, out))
    if sat_key:
        plot("quality_vs_compute", lambda: plots.quality_vs_compute(t, quality, s.fits[sat_key], out))

    # backtest
    bt = None
    try:
        bt = backtest(
            t,
            metric,
            holdout_top=holdout_top,
            holdout_above=holdout_above,
            holdout_n_above=holdout_n_above,
            n_boot=n_boot,
            seed=seed,
        )
        plot("backtest", lambda: plots.backtest_plot(bt, t, out))
    except FitRefused as e:
        refused["backtest"] = e.reason

    # allocation example at 10x the largest compute
    alloc = None
    if "approach3" in s.fits:
        try:
            alloc = allocate(
                s.fits["approach3"],
                budget=10 * c_range(t)[1],
                table=t,
                two_step=s.two_step,
                exact_count=exact_count,
            )
        except FitRefused as e:
            refused["allocation"] = e.reason
        except Exception as e:  # nearest-config counting builds nets; report, don't crash
            refused["allocation"] = f"{type(e).__name__}: {e}"

    parts.append("<h2>Plots</h2>" + "".join(_img(p) for p in images))
    if bt is not None:
        parts.append(_backtest_section(bt))
        for law, why in {**bt["refused"], **bt["baselines_refused"]}.items():
            refused[f"backtest {law}"] = why
    if alloc is not None:
        parts.append(_allocation_section(alloc))
    parts.insert(
        answer_at,
        '<h2>What this sweep determines</h2><p class="answer">'
        + html.escape(opening_paragraph(s, bt, alloc))
        + "</p>",
    )

    parts.append("<h2>Not enough data for</h2>")
    if refused:
        parts.append(
            '<div class="refused"><ul>'
            + "".join(
                f"<li><b>{html.escape(kk)}</b> because {html.escape(v)}</li>" for kk, v in refused.items()
            )
            + "</ul></div>"
        )
    else:
        parts.append("<p>Every fit ran.</p>")

    cols = [
        c
        for c in ("trial", "status", "N", "D", "C", "data_hours", metric, quality)
        if c and c in table.columns
    ]
    cols += [c for c in table.columns if str(c).startswith("axis.") and c not in cols]
    parts.append("<h2>Data</h2>" + _table(cols, table[cols].values.tolist()))

    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title or 'Scaling report')}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out / "report.html"
    path.write_text(doc, encoding="utf-8")
    summary = s.to_dict()
    summary["answer"] = opening_paragraph(s, bt, alloc)
    summary["refused"] = refused
    summary["backtest"] = bt
    summary["allocation"] = alloc
    (out / "fits.json").write_text(
        json.dumps(V.clean(summary), indent=2, default=_json_default, allow_nan=False), encoding="utf-8"
    )
    table.to_csv(out / "table.csv", index=False)
    return path


def _pct(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def _backtest_section(bt: dict[str, Any]) -> str:
    """The laws beside the no-fit baselines (mean absolute relative error, coverage of the prediction
    intervals, n), then every held-out prediction."""
    lv = round(bt["level"] * 100)
    head = (
        f"<h2>Backtest</h2><p>{html.escape(bt['metric'])}: fitted on {bt['n_train']} trials with C &le; "
        f"{bt['threshold_C']:.3g} and N &le; {bt['threshold_N']:.3g}; {bt['n_test']} held out "
        f"({html.escape(bt['held_out_by'])}); {lv}% prediction intervals. Baselines use no fit: "
        + "; ".join(f"<b>{k}</b>: {html.escape(d)}" for k, d in BASELINES.items())
        + ".</p>"
    )
    rows = [
        [law, f"law ({r['verdict']} fit)", _pct(r["mean_abs_rel_error"]), _pct(r["coverage"]), r["n"]]
        for law, r in bt["laws"].items()
    ] + [
        [name, "no-fit baseline", _pct(b["mean_abs_rel_error"]), "-", b["n"]]
        for name, b in bt["baselines"].items()
    ]
    summary = _table(["predictor", "kind", "mean abs rel error", f"coverage of {lv}% intervals", "n"], rows)
    pts = [
        [
            law,
            p["trial"],
            p["observed"],
            p["predicted"],
            V.interval_text(p["low"], p["high"]),
            _pct(p["rel_error"]),
            p["covered"],
        ]
        for law, r in bt["laws"].items()
        for p in r["points"]
    ] + [
        [name, p["trial"], p["observed"], p["predicted"], f"- ({p['how']})", _pct(p["rel_error"]), "-"]
        for name, b in bt["baselines"].items()
        for p in b["points"]
    ]
    detail = _table(
        ["predictor", "trial", "observed", "predicted", f"{lv}% interval", "rel error", "covered"], pts
    )
    return head + summary + detail


def _allocation_section(alloc: dict[str, Any]) -> str:
    """The allocation table when it is determined; otherwise no numbers, only why."""
    h = "<h2>Allocation at 10x the largest trial's compute</h2>"
    if alloc.get("verdict") != "determined":
        return (
            h
            + f'<div class="undetermined"><b>No allocation</b> for {alloc["budget_flops"]:.3g} FLOPs: it is '
            "undetermined because<ul>"
            + "".join(f"<li>{html.escape(r)}</li>" for r in alloc.get("reasons", []))
            + "</ul></div>"
        )
    lv = round(alloc["level"] * 100)
    rows = [
        [
            kk + (f" ({lv}% interval)" if kk.endswith("_ci") else ""),
            V.interval_text(*v) if kk.endswith("_ci") else v,
        ]
        for kk, v in alloc.items()
        if kk not in ("config", "reasons")
    ]
    rows += [[f"config.{kk}", v] for kk, v in alloc["config"].items()]
    return h + _table(["quantity", "value"], rows)


def _noise_section(noise: dict[str, Any]) -> str:
    """Seed-to-seed noise per metric, or why it is not measured."""
    h = "<h2>Seed-to-seed noise</h2>"
    if noise.get("reason"):
        return h + f"<p>Not measured: {html.escape(noise['reason'])}.</p>"
    if not noise.get("seed_column"):  # the suite stopped before it (nothing could be fitted)
        return h + "<p>Not measured: the analysis stopped before grouping seed repeats.</p>"
    rows = [
        [m, _pct(r.get("rel_std")), r.get("n_points", "-"), r.get("n_trials", "-"), r.get("reason", "")]
        for m, r in noise.get("metrics", {}).items()
    ]
    return (
        h
        + f"<p>Trials that differ only in <code>{html.escape(str(noise['seed_column']))}</code>, grouped by "
        + html.escape(", ".join(noise.get("keys", [])))
        + "; relative standard deviation across seeds, pooled over the points with repeats.</p>"
        + _table(["metric", "seed-to-seed rel. std", "points", "trials", "note"], rows)
    )


def _briefs(vs, n: int = 3) -> str:
    """The distinct short reasons of verdicts ``vs``, at most ``n``, and how many more."""
    seen = list(dict.fromkeys(b for v in vs for b in v.briefs))
    return ", ".join(seen[:n]) + (f" and {len(seen) - n} more" if len(seen) > n else "")


def _exponents(f) -> str:
    keys = V.EXPONENTS.get(f.law) or list(f.params)[:2]
    return ", ".join(f"{k} = {f.params[k]:.3g} {V.interval_text(*f.ci[k])}" for k in keys)


def _summary_items(s) -> tuple[list[str], list[str], set[str]]:
    """(determined phrases, undetermined phrases, needs) over everything the suite attempted; the per-group
    laws (L(N) per data size, L(D) per size) as one phrase per family."""
    good, bad, needs = [], [], set()
    members = {f.name for fits in s.per_group.values() for f in fits.values()}
    for key, v in s.verdicts().items():
        if key in members or key in s.per_group:
            continue
        needs |= v.needs
        r = s.results().get(key)
        if v.determined:
            lv = f" at {round(r.level * 100)}%" if hasattr(r, "level") else ""
            if hasattr(r, "step1"):  # the two-step chain: its loss law's exponents
                lv = f" at {round(r.step1.level * 100)}%"
                good.append(f"{key} {r.loss} -> {r.metric} ({_exponents(r.step1)}{lv})")
            else:
                good.append(f"{key} ({_exponents(r)}{lv})")
        else:
            bad.append(f"{key} ({_briefs([v])})")
    for fam, fits in s.per_group.items():
        col = s.group_cols.get(fam, "")
        vs = [f.assess() for f in fits.values()]
        ok = [f for f, v in zip(fits.values(), vs, strict=True) if v.determined]
        no = [v for v in vs if not v.determined]
        refused = s.refused.get(fam)
        n_ref = len(refused.split("; ")) if refused else 0
        total = len(fits) + n_ref
        for v in no:
            needs |= v.needs
        needs |= set(s.refused_needs.get(fam, ()))
        if ok:
            al = [f.params["alpha"] for f in ok]
            lv = round(ok[0].level * 100)
            rng = f"{al[0]:.3g}" if len(al) == 1 else f"{min(al):.3g} to {max(al):.3g}"
            good.append(
                f"{fam} at {len(ok)} of {total} levels of {col} (alpha {rng}, each with a {lv}% interval no "
                f"wider than {V.EXPONENT_WIDTH_MAX:g})"
            )
        if no or refused:
            why = _briefs(no) if no else ""
            if refused:
                why = (
                    (why + "; " if why else "")
                    + f"refused at {n_ref}: "
                    + V.refused_verdict(refused).briefs[0]
                )
            bad.append(f"{fam} at {len(no) + n_ref} of {total} levels of {col} ({why})")
    return good, bad, needs


def opening_paragraph(s, bt: dict[str, Any] | None, alloc: dict[str, Any] | None) -> str:
    """The report's first paragraph, generated from the verdicts: which laws are determined (exponents with
    their intervals and level), which are not and why, how the backtest did against the no-fit baselines,
    the seed-to-seed noise, and what to run next in the sweep's own axes. Plain text."""
    good, bad, needs = _summary_items(s)
    out = [
        ("Determined: " + "; ".join(good) + ".")
        if good
        else f"No law is determined by these {len(s.table)} trials."
    ]
    if bad:
        out.append("Not determined: " + "; ".join(bad) + ".")
    if bt is not None:
        out.append(_backtest_sentence(bt))
    noise = s.noise or {}
    if noise.get("reason"):
        out.append(f"Seed-to-seed noise is not measured ({noise['reason']}).")
        needs.add("seeds")
    elif noise.get("metrics"):
        out.append(
            "Seed-to-seed noise: "
            + "; ".join(
                f"{m} {_pct(r['rel_std'])} (pooled over {r['n_points']} points)"
                for m, r in noise["metrics"].items()
                if "rel_std" in r
            )
            + "."
        )
    if alloc is not None and alloc.get("verdict") != "determined":
        out.append(
            f"No allocation is given for {alloc['budget_flops']:.3g} FLOPs: Approach 3 is undetermined."
        )
    todo = V.next_runs(needs, s.table)
    if todo:
        out.append("To determine what is missing, add " + "; ".join(todo) + ".")
    return " ".join(out)


def _backtest_sentence(bt: dict[str, Any]) -> str:
    """How the laws did against the baselines on the held-out trials, each on the trials both predicted."""
    lv = round(bt["level"] * 100)
    head = (
        f"Backtest of {bt['metric']} on the {bt['n_test']} held-out trials ({bt['held_out_by']}; "
        f"fitted on {bt['n_train']}): "
    )
    base = bt["baselines"]
    if not bt["laws"]:
        bl = ", ".join(f"{k} {_pct(b['mean_abs_rel_error'])}" for k, b in base.items())
        why = "; ".join(f"{k}: {V.refused_verdict(r).briefs[0]}" for k, r in bt["refused"].items())
        return (
            head
            + f"no law could be fitted ({why})"
            + (f"; the no-fit baselines' mean absolute errors are {bl}" if bl else "")
            + "."
        )
    parts = []
    for law, r in bt["laws"].items():
        err = {p["trial"]: p["rel_error"] for p in r["points"]}
        cmp = []
        for name, b in base.items():
            common = [p for p in b["points"] if p["trial"] in err and p["rel_error"] is not None]
            if common:
                law_e = float(np.mean([err[p["trial"]] for p in common]))
                b_e = float(np.mean([p["rel_error"] for p in common]))
                word = "beats" if law_e < b_e else "does not beat"
                cmp.append(f"{word} {name} ({_pct(b_e)} on {len(common)})")
        cov = "" if r["coverage"] is None else f", {_pct(r['coverage'])} inside its {lv}% intervals"
        parts.append(
            f"{law} ({r['verdict']} fit) {_pct(r['mean_abs_rel_error'])} mean absolute error{cov}"
            + (" and " + ", ".join(cmp) if cmp else "")
        )
    return head + "; ".join(parts) + "."


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def log_report_to_mlflow(parent_run_id: str, report_dir: str | Path, tracking_uri: str | None = None) -> None:
    """Upload the report folder as artifacts ``report/`` of the sweep's parent run."""
    log_artifacts(parent_run_id, report_dir, tracking_uri, artifact_path="report")
