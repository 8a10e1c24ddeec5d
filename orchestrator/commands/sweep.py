"""CLI: ``sweep submit|status|resume|cancel``, ``best``, ``ui``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table

from analysis.mlflow_contract import SCALING_TARGET, StoreNotFound, default_tracking_uri, existing_store
from orchestrator.commands._common import clean_errors, console, err_console, print_json
from orchestrator.driver import cancel_sweep, check_trial_fn, resume_sweep, submit_sweep
from orchestrator.plan import SpecError, branch_flops, param_range, trained_flops
from orchestrator.plan.estimate import si
from orchestrator.runs import STATUS_METRICS, best, locate, sweep_status
from orchestrator.state import SweepNotFound
from orchestrator.tracking import Tracker, TrackingError, TrackingUnavailable, local_artifact_root
from orchestrator.trial import trial_fn_allowed

ALLOW_TRIAL_FN = typer.Option(
    False,
    "--allow-trial-fn",
    help="run the sweep's own `trial_fn` (code it names); without it such a sweep is refused "
    "(or set VITS_SCALING_ALLOW_TRIAL_FN=1). The dry run only checks that it resolves",
)

sweep_app = typer.Typer(help="Submit, watch, resume and cancel sweeps.", no_args_is_help=True)


def _errors():
    return clean_errors(
        SpecError, SweepNotFound, TrackingUnavailable, TrackingError, ValueError, FileNotFoundError
    )


def _dur(s) -> str:
    if s is None:
        return "-"
    s = float(s)
    return f"{s / 3600:.1f} h" if s >= 3600 else (f"{s / 60:.1f} min" if s >= 60 else f"{s:.0f} s")


def _axes(axes: dict) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in axes.items() if k != "seed" or len(axes) == 1)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict):
        return "/".join(str(x) for x in v.values())
    return str(v)


def plan_totals(plan) -> dict:
    """The estimate totals of a plan, as the table's last lines print them and ``--dry-run --json`` carries
    them: ``trials`` and ``skipped`` (counts), ``trial_seconds`` (summed estimated trial time, null when
    nothing was timed), ``max_concurrent``, ``wall_seconds`` (trial time / concurrency), ``device`` (``gpu``
    when a trial asks for a GPU, else ``cpu``) and ``device_hours`` (trial time x that device count per
    trial), ``total_flops`` (summed FLOPs the trials train, a cooldown branch counting only its own steps; null when
    none is known)."""
    timed = [tp.est_seconds for tp in plan.trials if tp.est_seconds]
    seconds = sum(timed) if timed else None
    conc = plan.spec.max_concurrent or 1
    res = plan.spec.resources
    device, per_trial = ("gpu", res.gpu) if res.gpu else ("cpu", res.cpu)
    flops = []  # what the trials train (planned steps); a trial not counted adds its budget, as its row says
    for tp in plan.trials:
        f = trained_flops(tp)
        f = tp.row()["total_flops"] if f is None else f
        if f:
            flops.append(f)
    return {
        "trials": len(plan.trials),
        "skipped": len(plan.skipped),
        "trial_seconds": seconds,
        "max_concurrent": conc,
        "wall_seconds": seconds / conc if seconds is not None else None,
        "device": device,
        "device_hours": seconds * per_trial / 3600 if seconds is not None else None,
        "total_flops": float(sum(flops)) if flops else None,
    }


def plan_summary(result) -> dict:
    """What ``--dry-run --json`` prints, the same as the table: the trial rows, the skipped points (with their
    reasons), the notes (each once), the generator-parameter range (``n_range``: min, max, ratio, sizes,
    warning), for WSD branches ``flops`` (independent runs against trunks + cooldowns, and the saving; these
    two are null when not counted) and ``estimate`` (``plan_totals``: counts, time, device-hours, FLOPs)."""
    return {
        "name": result.name,
        "trials": result.trials,
        "skipped": result.skipped,
        "notes": list(result.plan.notes),
        "n_range": param_range(result.plan),
        "flops": branch_flops(result.plan),
        "estimate": plan_totals(result.plan),
    }


def print_plan(result) -> None:
    plan = result.plan
    names = list(dict.fromkeys(k for tp in plan.trials for k in tp.axes))
    if len({tp.seed for tp in plan.trials}) == 1:
        names.remove("seed")
    branched = any(tp.branch_of is not None for tp in plan.trials)
    t = Table(title=f"sweep {plan.spec.name}: {len(plan.trials)} trials ({len(plan.skipped)} skipped)")
    t.add_column("trial", no_wrap=True)
    for n in names:
        t.add_column(n.split(".")[-1], justify="right")
    for col in ("h/i/f", "params G", "FLOPs/step", "steps", *(("from step",) if branched else ()), "est."):
        t.add_column(col, justify="right")
    for tp in plan.trials:
        m = tp.config.model
        t.add_row(
            tp.trial_id[:8],
            *[_short(tp.axes.get(n, "-")) for n in names],
            f"{m.hidden_channels}/{m.inter_channels}/{m.filter_channels}",
            si(tp.params_generator),
            si(tp.flops_per_step),
            str(tp.steps or "-"),
            *((str(tp.branch_step) if tp.branch_step is not None else "-",) if branched else ()),
            _dur(tp.est_seconds),
        )
    console.print(t)
    for s in plan.skipped:
        console.print(f"[yellow]skipped[/] {_axes(s.axes)}: {s.reason}")
    for n in plan.notes:
        console.print(f"[dim]note: {n}[/]")
    nr = param_range(plan)
    if nr is not None:
        console.print(
            f"N (generator parameters): {si(nr['min'])}-{si(nr['max'])}, {nr['ratio']:.2g}x over {nr['sizes']} sizes"
        )
        if nr["warning"]:
            console.print(f"[yellow]warning[/]: {nr['warning']}")
    fl = branch_flops(plan)
    if fl is not None:
        console.print(
            f"FLOPs: independent runs {si(fl['independent'])}, with WSD branches {si(fl['with_branches'])} "
            f"(saves {100 * fl['saving']:.0f}%)"
        )
    tot = plan_totals(plan)
    if tot["trial_seconds"]:
        console.print(
            f"estimated: {_dur(tot['trial_seconds'])} of trial time, ~{_dur(tot['wall_seconds'])} at "
            f"{tot['max_concurrent']} concurrent, {tot['device_hours']:.3g} {tot['device'].upper()}-hours"
            + (f", {si(tot['total_flops'])} FLOPs" if tot["total_flops"] else "")
            + " (FLOPs / achieved FLOP/s + overhead; a rough guide)"
        )


def _print_result(r) -> None:
    t = Table(title=f"sweep {r.name}: {r.n_finished} finished, {r.n_failed} failed in {_dur(r.wall_s)}")
    for col in ("trial", "name", "status", "val_mel_l1", "dnsmos_ovrl", "run id"):
        t.add_column(col)
    for row in r.trials:
        m = row["metrics"]
        t.add_row(
            row["trial_id"],
            row["name"],
            row["status"],
            f"{m['val_mel_l1']:.4g}" if "val_mel_l1" in m else "-",
            f"{m['dnsmos_ovrl']:.3g}" if "dnsmos_ovrl" in m else "-",
            row["run_id"] or "-",
        )
    console.print(t)
    for row in r.trials:
        if row["error"]:
            console.print(f"[red]{row['trial_id']}[/]: {row['error'].splitlines()[0][:300]}")
    if r.interrupted:
        console.print(f"[yellow]not finished[/]: continue with `vits-scaling sweep resume {r.name}`")
    console.print(
        f"MLflow: {r.tracking_uri} (experiment {r.experiment}, parent run {r.parent_run_id}); "
        f"`vits-scaling ui {r.name}` opens it"
    )


@sweep_app.command("submit")
def submit(
    file: Path = typer.Argument(..., help="sweep YAML"),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto or HOST:PORT (default: local Ray)"
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="validate and print the trial table; launch nothing"
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="print JSON (with --dry-run: trials, skipped points, notes, N range, FLOPs, estimate totals)",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="no per-trial progress lines"),
    allow_trial_fn: bool = ALLOW_TRIAL_FN,
    base_root: list[Path] = typer.Option(
        [],
        "--base-root",
        help="a directory tree (besides the sweep file's own) that the sweep's base file may be read from; "
        "repeatable",
    ),
) -> None:
    """Validate a sweep, print its trial table and run it (re-submitting a submitted sweep resumes it)."""
    with _errors():
        plan_only = submit_sweep(
            file, address=address, dry_run=True, allow_trial_fn=allow_trial_fn, base_roots=tuple(base_root)
        )
        if dry_run:
            if json_out:
                print_json(plan_summary(plan_only))
            else:
                print_plan(plan_only)
            return
        # refuse an unconsented trial_fn before the plan table, not after it (the table would read as a start)
        check_trial_fn(plan_only.plan.spec, allowed=trial_fn_allowed(allow_trial_fn), dry_run=False)
        if not json_out:
            print_plan(plan_only)
        result = submit_sweep(
            plan_only.plan.spec,
            address=address,
            progress=not (quiet or json_out),
            allow_trial_fn=allow_trial_fn,
        )
    if json_out:
        print_json(result.to_dict())
    else:
        _print_result(result)
    if result.n_failed or result.interrupted:
        raise typer.Exit(1)


@sweep_app.command("status")
def status(
    name: str = typer.Argument(..., help="sweep name, sweep directory or sweep YAML"),
    storage: str | None = typer.Option(None, "--storage", help="the sweep's storage_path"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Trial table with state, step and latest metrics."""
    with _errors():
        s = sweep_status(name, storage=storage)
    if json_out:
        print_json(s)
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(s["counts"].items()))
    t = Table(
        title=f"sweep {s['name']} ({s['state']}; driver {'running' if s['driver_alive'] else 'not running'}): {counts}"
    )
    for col in ("trial", "name", "status", "step", *STATUS_METRICS, "error"):
        t.add_column(col)
    for r in s["trials"]:
        t.add_row(
            r["trial_id"],
            r["name"],
            r["status"],
            str(r["step"] if r["step"] is not None else "-"),
            *[f"{r['metrics'][k]:.4g}" if k in r["metrics"] else "-" for k in STATUS_METRICS],
            (r["error"] or "")[:80],
        )
    console.print(t)
    if s["tracking_error"]:
        err_console.print(f"[yellow]tracking store unavailable[/]: {s['tracking_error']}")


@sweep_app.command("resume")
def resume(
    name: str = typer.Argument(..., help="sweep name, sweep directory or sweep YAML"),
    address: str | None = typer.Option(None, "--address"),
    storage: str | None = typer.Option(None, "--storage"),
    json_out: bool = typer.Option(False, "--json"),
    quiet: bool = typer.Option(False, "--quiet"),
    allow_trial_fn: bool = ALLOW_TRIAL_FN,
) -> None:
    """Continue a sweep: finished trials are kept, unfinished and failed ones continue from checkpoints."""
    with _errors():
        result = resume_sweep(
            name,
            address=address,
            storage=storage,
            progress=not (quiet or json_out),
            allow_trial_fn=allow_trial_fn,
        )
    if json_out:
        print_json(result.to_dict())
    else:
        _print_result(result)
    if result.n_failed or result.interrupted:
        raise typer.Exit(1)


@sweep_app.command("cancel")
def cancel(
    name: str = typer.Argument(..., help="sweep name, sweep directory or sweep YAML"),
    storage: str | None = typer.Option(None, "--storage"),
) -> None:
    """Stop a running sweep (Tune saves its state; `sweep resume` continues it)."""
    with _errors():
        r = cancel_sweep(name, storage=storage)
    if r["driver_signalled"]:
        console.print(
            f"asked the driver of {r['name']} to stop; `vits-scaling sweep resume {r['name']}` continues it"
        )
    else:
        console.print(
            f"{r['name']}: no running driver here; unfinished trials marked cancelled "
            f"(a driver on another host stops when it sees {r['sweep_dir']}/cancel.requested)"
        )


def best_cmd(
    sweep: str = typer.Argument(..., help="sweep name (or directory / YAML)"),
    metric: str = typer.Option(
        SCALING_TARGET, "--metric", help="metric to rank by (default: the scaling target)"
    ),
    mode: str = typer.Option("min", "--mode", help="min or max"),
    top: int = typer.Option(5, "--top"),
    where: str | None = typer.Option(None, "--where", help='filter, e.g. "n_layers>=12 and data_hours<1"'),
    storage: str | None = typer.Option(None, "--storage"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri"),
    experiment: str | None = typer.Option(None, "--experiment"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """The best finished trials of a sweep by a metric."""
    with _errors():
        rows = best(
            sweep, metric, mode, top, where, storage=storage, tracking_uri=tracking_uri, experiment=experiment
        )
    if json_out:
        print_json(rows)
        return
    t = Table(title=f"{sweep}: top {len(rows)} by {metric} ({mode})")
    for col in ("trial", "axes", "params G", "FLOPs", metric, "val_mel_l1", "dnsmos_ovrl", "run id"):
        t.add_column(col)
    for r in rows:
        m = r["metrics"]
        t.add_row(
            r["trial"],
            _axes(r["axes"]),
            si(r["N"]),
            si(r["C"]),
            f"{r['value']:.4g}",
            f"{m['val_mel_l1']:.4g}" if "val_mel_l1" in m else "-",
            f"{m['dnsmos_ovrl']:.3g}" if "dnsmos_ovrl" in m else "-",
            r["run_id"],
        )
    console.print(t)


def ui_cmd(
    sweep: str | None = typer.Argument(
        None, help="sweep name: use its tracking store (default: runs/mlflow.db)"
    ),
    port: int = typer.Option(5000, "--port"),
    storage: str | None = typer.Option(None, "--storage"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri"),
) -> None:
    """Start the MLflow UI on 127.0.0.1 for a sweep's tracking store."""
    with _errors():
        uri, exp, sweep_dir = (
            locate(sweep, storage=storage) if sweep else (default_tracking_uri(), None, None)
        )
        uri = tracking_uri or uri
        if not uri.startswith(("http://", "https://")):
            try:
                existing_store(uri)  # the UI only reads: an empty database would be created for nothing
            except StoreNotFound as e:
                raise SweepNotFound(f"sweep {sweep!r} not found: {e}" if sweep else str(e)) from None
        if sweep and sweep_dir is None and Tracker(uri).sweep_run(exp, sweep, create=False) is None:
            raise SweepNotFound(f"sweep {sweep!r} not found: no saved state, and no sweep run in {uri}")
    if uri.startswith(("http://", "https://")):
        console.print(f"the sweep tracks to an MLflow server: open {uri}")
        return
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    art = local_artifact_root(uri)
    if art:
        cmd += ["--default-artifact-root", art]
    console.print(f"MLflow UI: http://127.0.0.1:{port}  (store {uri}; Ctrl+C stops it)")
    try:
        subprocess.run(cmd, check=False, env=dict(os.environ))
    except KeyboardInterrupt:
        pass


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(sweep_app, name="sweep")
    app.command("best")(best_cmd)
    app.command("ui")(ui_cmd)
