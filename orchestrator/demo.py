"""``make demo``: the whole tool, end to end, on a laptop (2 cores, no GPU, no internet).

1. builds the built-in offline corpus and its features once (re-runs reuse them),
2. submits ``sweeps/demo.yaml`` on a local Ray with MLflow in a local SQLite file (re-runs resume),
3. runs the commands a user would run next — ``best``, ``report``, ``allocate``, ``backtest`` — and
4. ends by printing where the report is and the command that opens the MLflow UI.

Every step is a public function or command; the demo adds only the order and the narration.
"""

from __future__ import annotations

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
HOLDOUT_ABOVE = 2e11  # backtest: fit on the two smaller budgets, predict every trial of the largest


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("vits-scaling")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "orchestrator.cli"]


def _run_cli(args: list[str], *, tracking_uri: str, check: bool = False) -> int:
    """Run one ``vits-scaling`` command as a user would, echoing it first (on the sweep's MLflow store)."""
    console.print(f"\n[bold cyan]$ vits-scaling {' '.join(args)}[/]")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}  # the child's, not this process's
    rc = subprocess.call(_cli() + args, env=env)
    if rc and check:
        raise SystemExit(f"demo: `vits-scaling {' '.join(args)}` failed with exit code {rc}")
    if rc:
        console.print(f"[yellow](exit code {rc}: the command explained why above; the demo goes on)[/]")
    return rc


def run_demo(
    spec_path: Path = DEFAULT_SPEC,
    *,
    budget: float = ALLOCATE_BUDGET,
    tracking_uri: str | None = None,
    holdout_above: float = HOLDOUT_ABOVE,
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
    name = result.name
    report_dir = Path("runs/reports") / name
    for args, check in (
        (["best", name, "--metric", "val_nelbo", "--mode", "min", "--top", "5"], False),
        (["best", name, "--metric", "dnsmos_ovrl", "--mode", "max", "--top", "3"], False),
        (["report", name, "--out", str(report_dir), "--holdout-above", f"{holdout_above:g}"], True),
        (["allocate", "--sweep", name, "--budget", f"{budget:g}"], False),
        (["backtest", name, "--metric", "val_nelbo", "--holdout-above", f"{holdout_above:g}"], False),
        (["backtest", name, "--metric", "dnsmos_ovrl", "--holdout-above", f"{holdout_above:g}"], False),
    ):
        _run_cli(args, tracking_uri=uri, check=check)

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


def main(
    spec: Path = typer.Option(DEFAULT_SPEC, "--spec", help="sweep YAML to run"),
    budget: float = typer.Option(ALLOCATE_BUDGET, "--budget", help="FLOPs budget for the allocation step"),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="MLflow store (default runs/mlflow.db)"),
) -> None:
    """Run the built-in demo sweep end to end."""
    if shutil.which("vits-scaling") is None and not Path(sys.executable).with_name("vits-scaling").exists():
        console.print("[yellow]vits-scaling is not on PATH; using python -m orchestrator.cli[/]")
    run_demo(spec, budget=budget, tracking_uri=tracking_uri)


if __name__ == "__main__":
    typer.run(main)
