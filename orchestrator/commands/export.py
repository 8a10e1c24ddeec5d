"""CLI: ``vits-scaling export REF --format sbv2|onnx --out DIR`` (``orchestrator.export``)."""

from __future__ import annotations

from pathlib import Path

import typer

from orchestrator.commands._common import clean_errors, console, print_json


def export_command(
    ref: str = typer.Argument(
        ..., help="the trial: SWEEP:TRIAL, an MLflow run id (as `best` prints), or a checkpoint / trial dir"
    ),
    fmt: str = typer.Option("sbv2", "--format", "-f", help="sbv2 (model_assets/<name>/ files) | onnx"),
    out: Path = typer.Option(..., "--out", "-o", help="target directory (refused if not empty, see --force)"),
    name: str | None = typer.Option(None, "--name", help="model name / file stem (default: the trial id)"),
    force: bool = typer.Option(False, "--force", help="write into a non-empty --out, replacing its files"),
    storage: str | None = typer.Option(
        None, "--storage", help="sweep storage (default: as `status` finds it)"
    ),
    tracking_uri: str | None = typer.Option(None, "--tracking-uri", help="MLflow URI (for a run id)"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
) -> None:
    """Export a trained trial for Style-Bert-VITS2 (config.json, <name>.safetensors, style_vectors.npy)
    or as an ONNX graph (text -> audio) checked against PyTorch."""
    from model.train.checkpoint import CheckpointMismatch  # torch: only an export loads it
    from orchestrator.export import export_trial  # torch + onnx: only for `export`

    with clean_errors(ValueError, FileNotFoundError, CheckpointMismatch):
        result = export_trial(
            ref, fmt, out, name=name, force=force, storage=storage, tracking_uri=tracking_uri
        )
    if as_json:
        print_json(result)
        return
    console.print(f"exported {result['source']} as {result['format']} to {result['out']}:")
    for f, n in result["files"].items():
        console.print(f"  {f}  {n:,} bytes")
    for table, t in result.get("tables", {}).items():
        spare = f", {len(t['spare'])} spare ({', '.join(t['spare'])})" if t.get("spare") else ""
        console.print(
            f"  {table}: {t['rows']} SBV2 rows, {t['mapped']} mapped{spare}, {t['padded']} padded with zeros"
        )
    if "max_abs_diff" in result:
        console.print(
            f"ONNX vs PyTorch on the check input: max abs difference {result['max_abs_diff']:.3g} "
            f"(tolerance {result['tolerance']:g})"
        )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.command("export")(export_command)
