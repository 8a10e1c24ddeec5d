"""The ``vits-scaling`` command. Thin: each command parses, calls one package function, prints.

Each area registers its commands from ``orchestrator/commands/<area>.py`` so that the command groups stay
short and separately owned.
"""

from __future__ import annotations

import typer

from orchestrator.commands import analysis as analysis_cmds
from orchestrator.commands import data as data_cmds
from orchestrator.commands import export as export_cmds
from orchestrator.commands import model as model_cmds
from orchestrator.commands import sweep as sweep_cmds
from orchestrator.commands import train as train_cmds

app = typer.Typer(
    name="vits-scaling",
    help="Scaling-law sweeps for Japanese VITS TTS (Style-Bert-VITS2 JP-Extra): "
    "submit sweeps, track them in MLflow, fit scaling laws.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed vits-scaling version."""
    from importlib.metadata import version as _v

    typer.echo(_v("vits-scaling"))


for _module in (model_cmds, data_cmds, train_cmds, sweep_cmds, analysis_cmds, export_cmds):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
