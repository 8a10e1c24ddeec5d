"""A sweep file read and fully checked: YAML -> ``SweepSpec`` (``orchestrator.plan.schema``) -> the checks of
what its values mean (``orchestrator.plan.checks``). Every error is a ``SpecError`` naming the file and field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.plan.checks import check_semantics
from orchestrator.plan.schema import SpecError, SweepSpec, validate_spec


def parse_spec(raw: Any, source: str | Path | None = None) -> SweepSpec:
    """A sweep from its parsed mapping (``source``: the file it came from, for messages and relative paths)."""
    spec = validate_spec(raw, source)
    check_semantics(spec)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """A sweep from its YAML file."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: sweep file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise SpecError(f"{path}:{line} invalid YAML: {getattr(e, 'problem', e)}") from None
    return parse_spec(raw if raw is not None else {}, path)
