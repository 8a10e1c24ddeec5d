"""Small helpers shared by the command modules: JSON output and clean error exits."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any

from rich.console import Console

# On a terminal rich follows its width. In a log (CI, `| tee`, a file) it would wrap every message at 80
# columns and squeeze tables; there, lines are as long as they need to be (up to LOG_WIDTH) and machines
# that want structure use --json.
LOG_WIDTH = 240


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)


console = make_console()
err_console = make_console(stderr=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_default, ensure_ascii=False) + "\n")


def _default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


@contextmanager
def clean_errors(*kinds: type[BaseException]):
    """Turn expected user errors (bad config, missing file, refused fit) into one red line and exit 2."""
    import typer

    kinds = kinds or (ValueError, FileNotFoundError)
    try:
        yield
    except kinds as e:  # type: ignore[misc]
        err_console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
