"""CLI: analysis commands (fit, report, allocate, backtest). Thin: parse, call ``analysis``, print.

SOURCE is a sweep name or a file: an existing path is read as CSV / Parquet; anything else is looked up
in MLflow (``--tracking-uri``, else $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db).

What is printed follows the verdicts (``analysis.verdict``): determined fits under one heading, undetermined
ones under another with their reasons, refused ones last; every interval with its level, "undetermined"
where it is not finite (never NaN; JSON has null). Exit codes: 0 when the command produced what it was asked
for (a fit whose verdict is undetermined is still a fit: its verdict says so); 2 when it produced nothing
(bad input, every fit refused, no law to backtest, or an allocation withheld because it is undetermined).
"""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.commands._common import clean_errors, console, print_json

METRIC_HELP = "metric column to fit (default val_nelbo: the held-out VITS NELBO, see README)"

# One way to name a table's columns, for every command that reads a table (README, "Tables"): a table needs N,
# D, C and the metric; these options say which of its columns hold N, D and C when they are named otherwise.
N_COL = typer.Option(None, "--n-col", help="column holding N (generator parameters; default N)")
D_COL = typer.Option(None, "--d-col", help="column holding D (audio seconds seen; default D)")
C_COL = typer.Option(None, "--c-col", help="column holding C (training FLOPs; default C)")


def _load(source: str, tracking_uri: str | None, n_col=None, d_col=None, c_col=None, *, need=()):
    """The table of SOURCE with N, D, C taken from the named columns; a column in ``need`` (the metric, or
    N/D/C for a command that cannot run without them) that the table lacks is refused here, naming the column,
    the option that renames it and the columns present, so every command fails the same way (exit 2)."""
    from analysis.table import TableError, load  # pandas: only loaded by the command using it

    table = load(source, tracking_uri_=tracking_uri, n_col=n_col, d_col=d_col, c_col=c_col)
    missing = [c for c in dict.fromkeys(need) if c and c not in table.columns]
    if missing:
        opt = {"N": "--n-col", "D": "--d-col", "C": "--c-col"}
        named = ", ".join(f"{c!r} (name it with {opt.get(c, '--metric')})" for c in missing)
        present = sorted(map(str, table.columns))
        raise TableError(f"{source}: no column {named}; columns present: {present[:40]}")
    return table


def _curves(source: str, table, metric: str, tracking_uri: str | None):
    from analysis.table import curves_from_file, curves_mlflow  # pandas: only loaded by the command using it

    if Path(source).exists():
        return curves_from_file(source, metric)
    return curves_mlflow(table, metric, tracking_uri)


def _flat(fit) -> dict:
    from analysis.verdict import clean  # scipy-free, but only the fit command needs it

    v = fit.assess()
    d = {k: float(x) for k, x in fit.params.items()}
    d["n_points"] = int(fit.n_points)
    d["ci"] = {k: [float(lo), float(hi)] for k, (lo, hi) in fit.ci.items()}
    d.update(v.to_dict())
    d.update(level=fit.level, n_boot=fit.n_boot, n_converged=fit.n_converged, n_failed=fit.n_failed)
    return clean(d)


def _fit_rich(fit) -> None:
    from rich.table import Table

    from analysis.verdict import interval_text  # only the fit command needs it

    v = fit.assess()
    lv = round(fit.level * 100)
    t = Table(
        title=f"{fit.name}  ({fit.n_points} points; {lv}% bootstrap intervals over the {fit.n_converged} of "
        f"{fit.n_boot} resamples that converged, {fit.n_failed} failed)"
    )
    for c in ("param", "value", f"{lv}% interval", "at a bound"):
        t.add_column(c, justify="right")
    for k, x in fit.params.items():
        share = v.at_bound_share.get(k)
        t.add_row(
            k,
            f"{x:.4g}",
            interval_text(*fit.ci.get(k, (None, None))),
            "-" if share is None else f"{share:.0%}",
        )
    console.print(t)
    for r in v.texts:
        console.print(f"  [yellow]undetermined:[/] {r}")


def _print_suite(s) -> None:
    """Determined fits, then undetermined ones (own heading, with reasons), then refused ones, then the
    seed-to-seed noise."""
    results = {k: r for k, r in s.results().items() if k != "two_step"}
    good = [r for r in results.values() if r.assess().determined]
    bad = [r for r in results.values() if not r.assess().determined]
    console.rule("[bold green]determined fits[/]")
    for f in good:
        _fit_rich(f)
    if not good:
        console.print("none")
    if bad:
        console.rule("[bold yellow]undetermined fits: the trials do not pin these numbers down[/]")
        for f in bad:
            _fit_rich(f)
    if s.refused:
        console.rule("[bold]not fitted[/]")
        for k, why in s.refused.items():
            console.print(f"[yellow]not fitted[/] {k}: {why}")
    n = s.noise or {}
    if n.get("reason"):
        console.print(f"seed-to-seed noise: not measured ({n['reason']})")
    for m, r in (n.get("metrics") or {}).items():
        if "rel_std" in r:
            console.print(
                f"seed-to-seed noise of {m}: {100 * r['rel_std']:.2f}% relative std, pooled over "
                f"{r['n_points']} points ({r['n_trials']} trials)"
            )
        else:
            console.print(f"seed-to-seed noise of {m}: not measured ({r['reason']})")


def fit(
    source: str = typer.Argument(..., help="sweep name or CSV/Parquet file"),
    metric: str = typer.Option("val_nelbo", "--metric", help=METRIC_HELP),
    approach: str = typer.Option("all", "--approach", help="1, 2, 3 or all"),
    n_col: str = N_COL,
    d_col: str = D_COL,
    c_col: str = C_COL,
    out: Path = typer.Option(None, "--out", help="write fits.json and plots here"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    n_boot: int = typer.Option(200, "--n-boot", help="bootstrap resamples per fit"),
    workers: int = typer.Option(1, "--workers", help="processes for the Approach 3 bootstrap"),
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
) -> None:
    """Fit scaling laws (Chinchilla Approaches 1-3) to a sweep or a table."""
    from analysis.fit import FitRefused  # scipy: only loaded by the command using it
    from analysis.suite import run_suite  # scipy: only loaded by the command using it

    if approach not in ("1", "2", "3", "all"):
        raise typer.BadParameter("--approach must be 1, 2, 3 or all")
    with clean_errors(ValueError, FileNotFoundError):
        table = _load(source, tracking_uri, n_col, d_col, c_col, need=(metric,))
        approaches = ("1", "2", "3") if approach == "all" else (approach,)
        curves = _curves(source, table, metric, tracking_uri) if "1" in approaches else None
        s = run_suite(
            table,
            metric,
            approaches=approaches,
            curves=curves,
            singles=approach == "all",
            quality=None,
            n_boot=n_boot,
            workers=workers,
        )
        if approach != "all":
            key = f"approach{approach}"
            if key not in s.fits:
                raise FitRefused(key, s.refused.get(key) or s.refused.get("all", "not fitted"))
        if out is not None:
            import json

            out.mkdir(parents=True, exist_ok=True)
            (out / "fits.json").write_text(json.dumps(s.to_dict(), indent=2, default=float))
            _plots(s, out)
    nothing = not s.results()
    if as_json:
        print_json(_flat(s.fits[f"approach{approach}"]) if approach != "all" else s.to_dict())
    else:
        for n in s.envelope.notes if s.envelope else ():  # which lr won, and edge winners
            console.print(f"[yellow]{n}[/]" if "not bracketed" in n else n)
        _print_suite(s)
    if nothing:
        raise typer.Exit(2)  # every fit refused: nothing of what was asked was produced


def report(
    source: str = typer.Argument(..., help="sweep name or CSV/Parquet file"),
    out: Path = typer.Option(None, "--out", help="report folder (default runs/reports/<name>)"),
    metric: str = typer.Option("val_nelbo", "--metric", help=METRIC_HELP),
    quality: str = typer.Option("dnsmos_ovrl", "--quality", help="bounded quality metric (MOS)"),
    n_boot: int = typer.Option(200, "--n-boot"),
    holdout_top: int = typer.Option(
        None, "--holdout-top", help="backtest: hold out the K largest-compute trials"
    ),
    holdout_above: float = typer.Option(
        None, "--holdout-above", help="backtest: hold out the trials with C above this"
    ),
    holdout_n_above: float = typer.Option(
        None,
        "--holdout-n-above",
        help="backtest: also hold out the trials with more than this many parameters N",
    ),
    n_col: str = N_COL,
    d_col: str = D_COL,
    c_col: str = C_COL,
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
) -> None:
    """Write the HTML scaling report (and log it to the sweep's MLflow parent run)."""
    from analysis.report import (
        log_report_to_mlflow,
        write_report,
    )  # matplotlib: only loaded by the command using it

    with clean_errors(ValueError, FileNotFoundError):
        table = _load(source, tracking_uri, n_col, d_col, c_col, need=(metric,))
        curves = _curves(source, table, metric, tracking_uri)
        out = out or Path("runs/reports") / Path(source).stem
        path = write_report(
            table,
            out,
            metric=metric,
            quality=quality,
            curves=curves,
            n_boot=n_boot,
            holdout_top=holdout_top,
            holdout_above=holdout_above,
            holdout_n_above=holdout_n_above,
            title=f"Scaling report: {source}",
        )
        parent = table.attrs.get("parent_run_id")
        if parent:
            log_report_to_mlflow(parent, out, tracking_uri)
            console.print(f"logged to MLflow run {parent} (artifacts/report)")
    _print_answer(out)
    console.print(f"report: {path}")


def _print_answer(out: Path) -> None:
    """The report's opening paragraph (from its fits.json), so the terminal leads with the answer too."""
    import json

    answer = json.loads((out / "fits.json").read_text(encoding="utf-8")).get("answer")
    if answer:
        console.rule("what this sweep determines")
        console.print(answer)


def allocate(
    budget: float = typer.Option(None, "--budget", help="training FLOPs"),
    gpu_hours: float = typer.Option(None, "--gpu-hours", help="GPU-hours on --gpu, turned into FLOPs"),
    gpu: str = typer.Option(
        "h100",
        "--gpu",
        help="accelerator of --gpu-hours: one of analysis/throughput.py (h100, h200, a100, l4, ...)",
    ),
    sweep: str = typer.Option(None, "--sweep", help="sweep whose trials give the law"),
    file: Path = typer.Option(None, "--file", help="CSV/Parquet table giving the law"),
    metric: str = typer.Option("val_nelbo", "--metric", help=METRIC_HELP),
    quality: str = typer.Option("dnsmos_ovrl", "--quality", help="metric predicted by the two-step chain"),
    mfu: float = typer.Option(
        None,
        "--mfu",
        help="utilisation assumed when the GPU has no measured trials (default: analysis/throughput.py)",
    ),
    n_boot: int = typer.Option(200, "--n-boot"),
    as_json: bool = typer.Option(False, "--json"),
    n_col: str = N_COL,
    d_col: str = D_COL,
    c_col: str = C_COL,
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
) -> None:
    """Compute-optimal N and D for a budget, predicted loss and MOS, and the nearest model config."""
    from analysis.allocate import allocate as _allocate  # scipy: only loaded by the command using it
    from analysis.allocate import gpu_throughput as _gpu_throughput  # scipy: only loaded by this command
    from analysis.fit import FitRefused  # scipy: only loaded by the command using it
    from analysis.suite import run_suite  # scipy: only loaded by the command using it

    with clean_errors(ValueError, FileNotFoundError):
        if (budget is None) == (gpu_hours is None):
            raise FitRefused("allocate", "give exactly one of --budget FLOPS or --gpu-hours H")
        if (sweep is None) == (file is None):
            raise FitRefused("allocate", "the law comes from your trials: give --sweep NAME or --file TABLE")
        table = _load(
            str(file) if file else sweep, tracking_uri, n_col, d_col, c_col, need=(metric, "N", "D")
        )
        if gpu_hours is not None:  # an unknown GPU is refused before the fit, unless the table measured it
            _gpu_throughput(gpu, table, mfu)
        s = run_suite(table, metric, approaches=("3",), singles=False, quality=None, n_boot=n_boot)
        if "approach3" not in s.fits:
            raise FitRefused("allocate", s.refused.get("approach3") or s.refused.get("all", "no fit"))
        ts = None
        determined = s.fits["approach3"].assess().determined  # else no allocation: no chain to fit
        if determined and quality and quality in s.table.columns and metric in s.table.columns:
            from analysis.predict import (
                two_step_from_table,
            )  # scipy: only loaded by the command using it

            try:
                ts = two_step_from_table(s.table, metric=quality, loss=metric, n_boot=n_boot)
            except FitRefused as e:
                console.print(f"[yellow]no {quality} prediction:[/] {e.reason}")
        res = _allocate(
            s.fits["approach3"],
            budget=budget,
            gpu_hours=gpu_hours,
            gpu=gpu,
            table=s.table,
            two_step=ts,
            mfu=mfu,
        )
    if as_json:
        print_json(res)
    elif res["verdict"] != "determined":
        console.print(
            f"[bold yellow]no allocation[/] for {res['budget_flops']:.4g} FLOPs: it would rest on an "
            "undetermined fit, so no number is given. Why:"
        )
        for r in res["reasons"]:
            console.print(f"  - {r}")
    else:
        _print_allocation(res, metric)
    if res["verdict"] != "determined":
        raise typer.Exit(2)


# What each allocation field is called in the printed table (``--json`` keeps the field names); a field not
# listed is printed under its own name, ``None`` is not printed (shown elsewhere, or provenance for machines).
ALLOCATION_LABELS = {
    "gpu": "accelerator",
    "gpu_hours": "GPU-hours",
    "flops_per_s": "FLOP/s per GPU",
    "throughput_source": "FLOP/s from",
    "budget_flops": "budget (training FLOPs)",
    "k": "k: FLOPs per parameter per audio second (C = k N D)",
    "k_source": "k from",
    "level": None,
    "N_opt": "N: generator parameters",
    "D_opt": "D: audio seconds seen",
    "D_opt_hours": "D in hours",
    "loss": "predicted {metric}",
    "a": "a (N grows as C^a)",
    "b": "b (D grows as C^b)",
    "metric_name": None,
    "metric": "predicted {metric_name}",
    "metric_note": "note",
}
CONFIG_LABELS = {
    "width": "nearest config: width (hidden channels)",
    "depth": "nearest config: depth (encoder and flow layers)",
    "heads": "nearest config: attention heads",
    "filter_channels": "nearest config: filter channels",
    "upsample_initial_channel": "nearest config: decoder channels",
    "N": "nearest config: generator parameters",
    "N_target": None,
    "rel_error": "nearest config: off N by",
}


def _print_allocation(res: dict, metric: str) -> None:
    """The allocation as a two-column table with words for labels, intervals beside their values."""
    from rich.table import Table

    from analysis.verdict import interval_text  # only the allocate command needs it

    lv = round(res["level"] * 100)
    names = {"metric": metric, "metric_name": res.get("metric_name", "")}
    t = Table(title="compute-optimal allocation (determined)")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    rows = [
        (ALLOCATION_LABELS.get(k, k), k, v)
        for k, v in res.items()
        if k not in ("config", "reasons", "verdict")
    ]
    rows += [(CONFIG_LABELS.get(k, f"nearest config: {k}"), k, v) for k, v in res["config"].items()]
    for label, k, v in rows:
        if label is None:
            continue
        label = label.format(**names)
        if k.endswith("_ci"):
            base = ALLOCATION_LABELS.get(k[:-3], k[:-3]).format(**names)
            t.add_row(f"{base}: {lv}% interval", interval_text(*(v or (None, None))))
        elif k == "rel_error":
            t.add_row(label, f"{v:+.1%}")
        else:
            t.add_row(label, f"{v:.4g}" if isinstance(v, float) else str(v))
    console.print(t)


def backtest(
    source: str = typer.Argument(..., help="sweep name or CSV/Parquet file"),
    metric: str = typer.Option("val_nelbo", "--metric", help=METRIC_HELP),
    holdout_top: int = typer.Option(None, "--holdout-top", help="hold out the K largest-compute trials"),
    holdout_above: float = typer.Option(None, "--holdout-above", help="hold out trials with C above this"),
    holdout_n_above: float = typer.Option(
        None,
        "--holdout-n-above",
        help="also hold out the trials with more than this many parameters N (with --holdout-above or "
        "--holdout-top: the union; alone: only these)",
    ),
    loss: str = typer.Option("val_nelbo", "--loss", help="loss of the two-step chain's first step"),
    n_boot: int = typer.Option(200, "--n-boot"),
    as_json: bool = typer.Option(False, "--json"),
    n_col: str = N_COL,
    d_col: str = D_COL,
    c_col: str = C_COL,
    tracking_uri: str = typer.Option(None, "--tracking-uri"),
) -> None:
    """Fit on the smaller-compute trials, predict the held-out largest ones, score every law."""
    from analysis.backtest import backtest as _backtest  # scipy: only loaded by the command using it
    from analysis.envelope import collapse_lr  # pandas: only loaded by the command using it
    from analysis.table import usable  # pandas: only loaded by the command using it

    with clean_errors(ValueError, FileNotFoundError):
        table, env = collapse_lr(
            usable(_load(source, tracking_uri, n_col, d_col, c_col, need=(metric, "C"))), metric
        )  # the best lr per point
        res = _backtest(
            table,
            metric,
            holdout_top=holdout_top,
            holdout_above=holdout_above,
            holdout_n_above=holdout_n_above,
            loss=loss,
            n_boot=n_boot,
        )
    if as_json:
        print_json(res)
    else:
        for n in env.notes:  # which lr won, and edge winners
            console.print(n)
        _print_backtest(res)
    if not res["laws"]:
        raise typer.Exit(2)  # no law could be fitted: the backtest asked for was not produced


def _num(v, spec: str = ".4g") -> str:
    """A number as text; "-" for a missing one (JSON null), never "nan"."""
    return "-" if v is None else format(v, spec)


def _print_backtest(res: dict) -> None:
    """Every law beside the no-fit baselines (error, coverage, n, the law's verdict), then each prediction."""
    from rich.table import Table

    from analysis.verdict import interval_text  # only the backtest command needs it

    lv = round(res["level"] * 100)
    head = (
        f"backtest of {res['metric']}: fit on {res['n_train']} trials (C <= {res['threshold_C']:.3g}, "
        f"N <= {res['threshold_N']:.3g}), {res['n_test']} held out ({res['held_out_by']})"
    )
    t = Table(title=head + ": laws against no-fit baselines")
    for c in ("predictor", "kind", "mean abs rel err", f"coverage of {lv}% intervals", "n"):
        t.add_column(c, justify="right")
    for law, r in res["laws"].items():
        err, cov = _num(r["mean_abs_rel_error"], ".3f"), _num(r["coverage"], ".2f")
        t.add_row(law, f"law ({r['verdict']} fit)", err, cov, str(r["n"]))
    for name, b in res["baselines"].items():
        t.add_row(name, "no-fit baseline", _num(b["mean_abs_rel_error"], ".3f"), "-", str(b["n"]))
    console.print(t)
    t = Table(title=head + f", {lv}% intervals")
    for c in ("predictor", "trial", "observed", "predicted", f"{lv}% interval", "rel err", "covered"):
        t.add_column(c, justify="right")
    rows = [
        (law, p, interval_text(p["low"], p["high"]), "yes" if p["covered"] else "no")
        for law, r in res["laws"].items()
        for p in r["points"]
    ] + [(name, p, f"- ({p['how']})", "-") for name, b in res["baselines"].items() for p in b["points"]]
    for name, p, interval, covered in rows:
        t.add_row(
            name,
            p["trial"],
            _num(p["observed"]),
            _num(p["predicted"]),
            interval,
            _num(p["rel_error"], ".3f"),
            covered,
        )
    console.print(t)
    for law, r in res["laws"].items():
        for why in r["reasons"]:
            console.print(f"[yellow]{law} is undetermined:[/] {why}")
    for law, why in {**res["refused"], **res["baselines_refused"]}.items():
        console.print(f"[yellow]not fitted[/] {law}: {why}")


def _plots(s, out: Path) -> None:
    from analysis import plots  # matplotlib: only loaded by the command using it
    from analysis.suite import c_range, k_of  # scipy: only loaded by the command using it

    t = s.table
    if "approach3" in s.fits:
        plots.predicted_vs_observed(t, s.metric, s.fits["approach3"], out)
    if "approach2" in s.fits:
        plots.isoflop(t, s.metric, s.fits["approach2"], out)
    alloc = {k: s.fits[k] for k in ("approach1", "approach2") if k in s.fits}
    if alloc or "approach3" in s.fits:
        plots.allocation(alloc, s.fits.get("approach3"), k_of(t), c_range(t), out)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command()(fit)
    app.command()(report)
    app.command()(allocate)
    app.command()(backtest)
