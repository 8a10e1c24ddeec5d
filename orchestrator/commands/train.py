"""CLI: ``vits-scaling train CONFIG.yaml`` runs one trial with a progress bar.

Tracking: the orchestrator's MLflow sink (``orchestrator.tracking``) through ``orchestrator.trial.run_tracked``
(params, status, buffered metric batches, artifacts), at ``--tracking-uri``, else ``tracking.uri`` of the
config, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///runs/mlflow.db``. ``--no-tracking`` keeps
everything local (``<output_dir>/metrics.json``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import typer

from model.config import ConfigError
from model.sink import MemorySink
from orchestrator.commands._common import clean_errors, console, err_console, print_json
from orchestrator.commands.model import load_any_config
from orchestrator.trial import run_tracked

SHOWN = ("loss_mel", "loss_kl", "loss_g_total", "val_nelbo", "val_mel_l1")


class _Bar:
    """A rich progress bar fed by ``run_trial``'s progress events."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            transient=False,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        self.task = self.progress.add_task("preparing data", total=None, info="")
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, ev: dict) -> None:
        kind, step, total = ev["kind"], ev.get("step", 0), ev.get("total") or None
        m = ev.get("metrics") or {}
        info = "  ".join(
            f"{k} {m[k]:.4g}" for k in SHOWN if isinstance(m.get(k), float) and math.isfinite(m[k])
        )
        desc = {
            "prepare": "preparing data",
            "start": "training",
            "train": "training",
            "eval": "evaluating" if not ev.get("final") else "evaluated",
            "done": ev.get("status", "done"),
        }.get(kind, kind)
        kw = {"description": desc, "total": total, "completed": step}
        if info:
            kw["info"] = info
        self.progress.update(self.task, **kw)


def train_command(
    config: Path = typer.Argument(
        ..., help="trial config (project YAML/JSON or a Style-Bert-VITS2 config.json)"
    ),
    steps: int | None = typer.Option(None, "--steps", help="train exactly N steps (overrides the budget)"),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow tracking URI"),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="default: the config's output_dir"
    ),
    no_resume: bool = typer.Option(
        False, "--no-resume", help="start over: new output dir (suffixed with the time) and a new MLflow run"
    ),
    no_tracking: bool = typer.Option(
        False, "--no-tracking", help="no MLflow: metrics to <output_dir>/metrics.json"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Train and evaluate one trial (compute budget or steps), with checkpoints and MLflow logging."""
    from model.train.checkpoint import CheckpointMismatch  # model.train loads torch: only for `train`

    with clean_errors(ConfigError, CheckpointMismatch, FileNotFoundError, ValueError):
        cfg, unknown = load_any_config(config)
        for k in unknown:
            err_console.print(f"[yellow]warning:[/] {k}: unknown key, ignored")
        if steps is not None:
            if steps < 1:
                raise ConfigError(f"--steps must be >= 1, got {steps}")
            cfg.train.steps, cfg.train.compute_budget = steps, None
        if tracking_uri:
            cfg.tracking.uri = tracking_uri
        if output_dir is not None:
            cfg.output_dir = str(output_dir)
        if no_resume:  # a new run id and a new directory: nothing of an earlier run is reused
            stamp = time.strftime("%Y%m%d-%H%M%S")
            cfg.trial_id = f"{cfg.trial_id}-{stamp}"
            cfg.output_dir = f"{cfg.output_dir.rstrip('/')}-{stamp}"
        result = run_from_cli(
            cfg, resume=not no_resume, tracking=not no_tracking, console=err_console if as_json else console
        )
    payload = {
        "status": result.status,
        "steps": result.steps,
        "checkpoint": result.checkpoint,
        "output_dir": result.output_dir,
        "message": result.message,
        "metrics": result.metrics,
    }
    if as_json:
        print_json(payload)
    else:
        _print_table(console, payload)
    if result.status == "failed":
        raise typer.Exit(1)


def run_from_cli(cfg, *, resume: bool, tracking: bool, console):
    """Run ``cfg`` with a progress bar; MLflow through the orchestrator when ``tracking``."""
    from functools import partial

    from model.train import TrialResult, run_trial  # torch, as in train_command

    out = Path(cfg.output_dir)
    with _Bar(console) as bar:
        if not tracking:
            sink = MemorySink()
            result = run_trial(cfg, sink, resume=resume, progress=bar)
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(
                json.dumps(
                    {"status": sink.status, "params": sink.params, "metrics": sink.metrics}, default=str
                )
            )
            return result
        holder: dict = {}

        def trial_fn(c, sink, resume=True):
            holder["result"] = partial(run_trial, progress=bar)(c, sink, resume=resume)
            return holder["result"]

        done = run_tracked(cfg, trial_fn)
    if done.skipped:
        console.print(
            "[yellow]this trial already finished in MLflow; nothing to do (use --no-resume for a new run)"
        )
        from model.train.checkpoint import checkpoint_dir, latest_checkpoint  # torch, as above

        last = latest_checkpoint(checkpoint_dir(cfg))
        steps = int(done.metrics.get("steps", 0))
        return TrialResult("finished", steps, done.metrics, last and str(last), str(out))
    return holder["result"]


def _print_table(console, payload: dict) -> None:
    from rich.table import Table

    t = Table(title=f"trial: {payload['status']} after {payload['steps']} steps", show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in sorted(payload["metrics"]):
        v = payload["metrics"][k]
        t.add_row(k, f"{v:.5g}" if isinstance(v, float) else str(v))
    console.print(t)
    if payload["checkpoint"]:
        console.print(f"checkpoint: {payload['checkpoint']}")
    if payload["message"]:
        console.print(payload["message"])


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("train")(train_command)
