"""A sweep file read and fully checked: YAML -> ``SweepSpec`` (``orchestrator.plan.schema``) -> the checks of
what its values mean (``orchestrator.plan.checks``). Every error is a ``SpecError`` naming the file and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.textfile import TextFileError, read_yaml
from orchestrator.plan.checks import check_semantics
from orchestrator.plan.schema import SpecError, SweepSpec, validate_spec


def parse_spec(raw: Any, source: str | Path | None = None, *, base_roots=(), check: bool = True) -> SweepSpec:
    """A sweep from its parsed mapping (``source``: the file it came from, for messages and relative paths;
    ``base_roots``: directories given on the command line that its base file may also be in; ``check=False``:
    the shape only, nothing it points to is read)."""
    spec = validate_spec(raw, source, base_roots)
    if check:
        check_semantics(spec)
    return spec


def load_spec(path: str | Path, *, base_roots=(), check: bool = True) -> SweepSpec:
    """A sweep from its YAML file (``base_roots``, ``check``: as ``parse_spec``)."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: sweep file not found")
    try:
        raw = read_yaml(path)  # a directory, non-UTF-8 bytes, bad YAML, a key given twice: named errors
    except TextFileError as e:
        raise SpecError(str(e)) from None
    return parse_spec(raw if raw is not None else {}, path, base_roots=base_roots, check=check)
