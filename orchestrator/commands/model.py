"""CLI: model commands (``vits-scaling model info``)."""

from __future__ import annotations

from pathlib import Path

import typer

from model.config import PRESETS, ConfigError, is_sbv2_config, load_config, load_sbv2_config, preset_config
from model.textfile import TextFileError, read_json
from orchestrator.commands._common import clean_errors, console, err_console, print_json

model_app = typer.Typer(
    help="Inspect model configurations: parameters and FLOPs per training step.", no_args_is_help=True
)


def load_any_config(path: Path | None, preset: str | None = None):
    """A Style-Bert-VITS2 ``config.json`` or this project's YAML/JSON, on top of ``preset`` (default:
    ``default``); returns (config, unknown keys)."""
    if path is None:
        return preset_config(preset or "default", where="--preset"), []
    if path.suffix == ".json" and _looks_sbv2(path):
        return load_sbv2_config(path, base=preset_config(preset, where="--preset") if preset else None)
    return load_config(path, preset=preset), []


def _looks_sbv2(path: Path) -> bool:
    try:
        raw = read_json(path)
    except TextFileError as e:
        raise ConfigError(str(e)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return is_sbv2_config(raw)


@model_app.command("info")
def info(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Style-Bert-VITS2 config.json or project YAML/JSON, applied on top of --preset",
    ),
    preset: str | None = typer.Option(
        None,
        "--preset",
        "-p",
        help=f"start from a preset: {' | '.join(PRESETS)} (default: default, the JP-Extra public config)",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", min=1, help="utterances per step (default: train.batch_size)"
    ),
    segment_size: int | None = typer.Option(
        None,
        "--segment-size",
        "-s",
        min=1,
        help="samples per decoder segment, a multiple of data.hop_length (default: train.segment_size)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Parameters per submodule and FLOPs per training step (generator + discriminators, fwd + bwd)."""
    from model.counting import DEFAULT_UTTERANCE_S, model_info, step_shape  # torch: only for `model info`

    with clean_errors(ConfigError, ValueError, FileNotFoundError):
        cfg, unknown = load_any_config(config, preset)
        for key in unknown:
            err_console.print(f"[yellow]warning:[/] unknown key {key} (ignored)")
        shape = step_shape(cfg, batch_size, segment_size)
        result = model_info(cfg, shape.batch_size, shape.segment_size)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    table = Table(title=f"{cfg.name}: parameters")
    table.add_column("part")
    table.add_column("submodule")
    table.add_column("parameters", justify="right")
    for part in ("generator", "discriminator"):
        counts = result[part]
        for name, n in counts.items():
            if name != "total":
                table.add_row(part, name, f"{n:,}")
        table.add_row(part, "[bold]total[/]", f"[bold]{counts['total']:,}[/]", end_section=True)
    console.print(table)
    sr, hop = cfg.data.sampling_rate, cfg.data.hop_length
    console.print(
        f"FLOPs per training step: [bold]{result['flops_per_step']:.4g}[/] "
        f"(batch {shape.batch_size}, segment {shape.segment_size} samples = {shape.segment_size / sr:.3g} s, "
        f"utterances of {DEFAULT_UTTERANCE_S:g} s = {shape.frames} frames at hop {hop} and {shape.phones} "
        "phone tokens; generator + discriminators, forward + backward; matmul/conv FLOPs, 2 per MAC)"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to the top-level app."""
    app.add_typer(model_app, name="model")
