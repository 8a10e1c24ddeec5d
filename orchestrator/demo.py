"""``make demo`` and ``make ladder``: the whole tool, end to end, on a laptop (2 cores, no GPU, no internet).

1. builds the built-in offline corpus and its features once (re-runs reuse them),
2. submits the sweep (``sweeps/demo.yaml``; ``sweeps/cpu_ladder.yaml`` for the ladder) on a local Ray with
   MLflow in a local SQLite file (re-runs resume),
3. runs the commands a user would run next — ``best``, ``report``, ``allocate``, ``backtest`` — writing the
   report (HTML, plots, ``fits.json``, ``table.csv``) to ``--out`` and, beside it, each analysis command's
   ``--json`` answer (``allocate.json``, ``backtest_<metric>.json``) and ``run.json`` (the command line, the
   commit, the wall times), so a committed result says what produced it, and
4. ends by printing where the report is and the command that opens the MLflow UI.

Every step is a public function or command; the demo adds only the order and the narration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.panel import Panel

from analysis.mlflow_contract import default_tracking_uri
from orchestrator.commands._common import make_console
from orchestrator.driver import submit_sweep
from orchestrator.plan import base_config, load_spec

console = make_console()

DEFAULT_SPEC = Path("sweeps/demo.yaml")
ALLOCATE_BUDGET = 1e13  # FLOPs: ~30x the demo's largest trial, to show an extrapolated allocation
# backtest of the demo: hold out the largest budget (9.6e11) and the largest size (482k parameters)
HOLDOUT_ABOVE = 5e11
HOLDOUT_N_ABOVE = 3e5


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("vits-scaling")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.cli"]


def _run_cli(args: list[str], *, tracking_uri: str, check: bool = False, json_to: Path | None = None) -> int:
    """Run one ``vits-scaling`` command as a user would, echoing it first (on the sweep's MLflow store).
    With ``json_to``, the command runs a second time with ``--json`` and its answer is written there (the
    first run is for the reader; the analysis commands are seconds each)."""
    console.print(f"\n[bold cyan]$ vits-scaling {' '.join(args)}[/]")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}  # the child's, not this process's
    rc = subprocess.call(_cli() + args, env=env)
    if rc and check:
        raise SystemExit(f"demo: `vits-scaling {' '.join(args)}` failed with exit code {rc}")
    if rc:
        console.print(f"[yellow](exit code {rc}: the command explained why above; the demo goes on)[/]")
    if json_to is not None:
        done = subprocess.run(_cli() + args + ["--json"], env=env, capture_output=True, text=True)
        if done.stdout.strip():
            json_to.write_text(done.stdout, encoding="utf-8")
    return rc


def _commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when tracked files differ from it); None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_demo(
    spec_path: Path = DEFAULT_SPEC,
    *,
    budget: float = ALLOCATE_BUDGET,
    tracking_uri: str | None = None,
    holdout_above: float = HOLDOUT_ABOVE,
    holdout_n_above: float | None = None,
    out: Path | None = None,
    command: str | None = None,
):
    from model.data import prepare_data  # model.data loads torch: only once the demo runs

    t0 = time.time()
    spec = load_spec(spec_path)
    if tracking_uri:
        spec.tracking_uri = tracking_uri
    uri = spec.tracking_uri or default_tracking_uri()
    console.print(Panel.fit(f"vits-scaling demo: sweep [b]{spec.name}[/] from {spec_path}\nMLflow: {uri}"))

    console.rule("1. corpus and features (built once, shared by every trial)")
    t = time.time()
    base = base_config(spec)
    base.data.data_hours = None
    prepared = prepare_data(base, progress=True)
    s = prepared.summary()
    console.print(
        f"corpus {s.get('corpus')}: {prepared.available_hours:.3f} h available, "
        f"{len(prepared.train)} training / {len(prepared.val)} held-out utterances; "
        f"features {'computed' if prepared.stats.computed else 'reused from the cache'} "
        f"({time.time() - t:.0f} s)"
    )

    console.rule("2. the sweep (local Ray, one MLflow child run per trial)")
    result = submit_sweep(spec, progress=True)
    console.print(
        f"sweep {result.name}: {result.n_finished} finished, {result.n_failed} failed, "
        f"{len(result.skipped)} skipped, in {result.wall_s / 60:.1f} min"
    )
    if result.n_finished == 0:
        raise SystemExit("demo: no trial finished; see the errors above")

    console.rule("3. what the sweep says")
    t_analysis = time.time()
    name = result.name
    report_dir = out or Path("runs/reports") / name
    report_dir.mkdir(parents=True, exist_ok=True)
    hold = ["--holdout-above", f"{holdout_above:g}"]
    if holdout_n_above is not None:
        hold += ["--holdout-n-above", f"{holdout_n_above:g}"]
    for args, check, to in (
        (["best", name, "--metric", "val_nelbo", "--mode", "min", "--top", "5"], False, None),
        (["best", name, "--metric", "dnsmos_ovrl", "--mode", "max", "--top", "3"], False, None),
        (["report", name, "--out", str(report_dir), *hold], True, None),
        (["allocate", "--sweep", name, "--budget", f"{budget:g}"], False, "allocate.json"),
        (["backtest", name, "--metric", "val_nelbo", *hold], False, "backtest_val_nelbo.json"),
        (["backtest", name, "--metric", "dnsmos_ovrl", *hold], False, "backtest_dnsmos_ovrl.json"),
    ):
        _run_cli(args, tracking_uri=uri, check=check, json_to=report_dir / to if to else None)
    record = {
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": _commit(),
        "spec": str(spec_path),
        "sweep": name,
        "finished": result.n_finished,
        "failed": result.n_failed,
        "skipped": len(result.skipped),
        "sweep_wall_min": round(result.wall_s / 60, 1),
        "analysis_wall_min": round((time.time() - t_analysis) / 60, 1),
        "total_wall_min": round((time.time() - t0) / 60, 1),
        "holdout_above": holdout_above,
        "holdout_n_above": holdout_n_above,
        "allocate_budget": budget,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (report_dir / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    summary = write_summary(report_dir)
    console.print(f"summary: {summary}")

    console.rule("done")
    ui = "vits-scaling ui" + ("" if uri == default_tracking_uri() else f" --tracking-uri {uri}")
    console.print(
        Panel.fit(
            f"demo finished in {(time.time() - t0) / 60:.1f} min\n"
            f"report: {(report_dir / 'report.html').resolve()}\n"
            f"MLflow UI: {ui}   (then open http://127.0.0.1:5000)\n"
            f"re-running `make demo` reuses the corpus and features and resumes the sweep"
        )
    )
    return result


def _law_lines(fit: dict) -> list[str]:
    """One fit as Markdown bullets: verdict, then each parameter with its interval."""
    lv = round(100 * fit.get("level", 0.95))
    out = [f"- **{fit['name']}** ({fit['law']}): **{fit['verdict']}**, {fit['n_points']} points, "
           f"{fit['n_converged']}/{fit['n_boot']} resamples converged"]  # fmt: skip
    for k, v in fit["params"].items():
        lo, hi = fit["ci"].get(k, [None, None])
        iv = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "[undetermined]"
        out.append(f"  - {k} = {v:.4g} ({v:.3f} {iv} at {lv}%)")
    out += [f"  - not determined: {r}" for r in fit.get("reasons", [])]
    return out


def write_summary(report_dir: Path) -> Path:
    """``summary.md`` beside the report: the trial table, every fit with its interval and verdict, each
    backtest against its baselines, the allocation and how the run was made, from the files written above
    (so its numbers are theirs)."""
    import pandas as pd  # only once the analysis has run

    def load(name):
        p = report_dir / name
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    fits, run, alloc = load("fits.json") or {}, load("run.json") or {}, load("allocate.json")
    lines = [f"# {run.get('sweep', report_dir.name)}: measured result", ""]
    lines += [f"Produced by `{run.get('command')}` at commit `{run.get('commit')}` ({run.get('finished_at')}): "
              f"{run.get('finished')} trials finished, {run.get('failed')} failed; sweep "
              f"{run.get('sweep_wall_min')} min, whole run {run.get('total_wall_min')} min.", ""]  # fmt: skip
    if fits.get("answer"):
        lines += ["## What it determines", "", fits["answer"], ""]
    t = pd.read_csv(report_dir / "table.csv")
    cols = [c for c in ("axis.size", "axis.width", "axis.compute_budget", "axis.seed", "steps", "N", "D", "C",
                        "val_nelbo", "dnsmos_ovrl") if c in t.columns]  # fmt: skip
    t = t.sort_values([c for c in ("N", "C") if c in t.columns])[cols]
    lines += ["## Trials", "", "| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for _, r in t.iterrows():
        lines.append(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
        )
    lines += ["", "## Fits of " + str(fits.get("metric")), ""]
    for f in (fits.get("fits") or {}).values():
        lines += _law_lines(f)
    for k, why in (fits.get("refused") or {}).items():
        lines.append(f"- **{k}**: refused: {why}")
    for name in sorted(p.name for p in report_dir.glob("backtest_*.json")):
        bt = load(name)
        lines += ["", f"## Backtest of {bt['metric']}", "",
                  f"Fitted on {bt['n_train']} trials, {bt['n_test']} held out ({bt['held_out_by']}); "
                  f"{round(100 * bt['level'])}% prediction intervals.", "",
                  "| predictor | kind | mean abs rel error | coverage | n |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
        for law, r in bt["laws"].items():
            cov = "-" if r["coverage"] is None else f"{100 * r['coverage']:.0f}%"
            lines.append(
                f"| {law} | law ({r['verdict']}) | {100 * r['mean_abs_rel_error']:.1f}% | {cov} | {r['n']} |"
            )
        for b, r in bt["baselines"].items():
            lines.append(f"| {b} | no-fit baseline | {100 * r['mean_abs_rel_error']:.1f}% | - | {r['n']} |")
        for law, why in bt["refused"].items():
            lines.append(f"| {law} | refused: {why} | - | - | - |")
    lines += ["", "## Allocation", ""]
    lines.append("```json\n" + json.dumps(alloc, indent=1)[:3000] + "\n```" if alloc else
                 "No allocation: `allocate` gave none (see the report for why).")  # fmt: skip
    out = report_dir / "summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(
    spec: Path = typer.Option(DEFAULT_SPEC, "--spec", help="sweep YAML to run"),
    budget: float = typer.Option(ALLOCATE_BUDGET, "--budget", help="FLOPs budget for the allocation step"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store (default runs/mlflow.db)"),
    out: Path = typer.Option(None, "--out", help="results folder (default runs/reports/<sweep name>)"),
    holdout_above: float = typer.Option(
        HOLDOUT_ABOVE, "--holdout-above", help="backtest: hold out the trials with C above this"
    ),
    holdout_n_above: float = typer.Option(
        HOLDOUT_N_ABOVE, "--holdout-n-above", help="backtest: also hold out the trials with N above this"
    ),
) -> None:
    """Run a sweep end to end: corpus, sweep, report, allocation and backtests (the demo by default)."""
    if shutil.which("vits-scaling") is None and not Path(sys.executable).with_name("vits-scaling").exists():
        console.print("[yellow]vits-scaling is not on PATH; using python -m orchestrator.cli[/]")
    command = " ".join(["python -m orchestrator.demo", *sys.argv[1:]])
    run_demo(
        spec,
        budget=budget,
        tracking_uri=tracking_uri,
        holdout_above=holdout_above,
        holdout_n_above=holdout_n_above,
        out=out,
        command=command,
    )


if __name__ == "__main__":
    typer.run(main)
