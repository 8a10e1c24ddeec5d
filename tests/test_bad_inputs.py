"""Malformed inputs through the real CLI (a subprocess, as a user runs it): each must exit non-zero with no
traceback, and its message must name the file and the field or line.

The inputs live in ``tests/bad_inputs/``; each case says the command, the exit code and the fragments the
message must hold. One row per class of problem (see issue 19); the unit tests beside them check the
mechanism (``model.textfile``, ``orchestrator.expr``) directly.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from model.textfile import TextFileError, parse_json, parse_yaml
from orchestrator.expr import MAX_INT_BITS, Expr, ExprError
from tests.orch_helpers import ROOT, cli

BAD = ROOT / "tests" / "bad_inputs"

# (case id, args (BAD/<file> written as {bad}/<file>), exit code, regexes the combined output must match)
CASES = [
    (
        "sweep-is-a-directory",
        ["sweep", "submit", "{bad}", "--dry-run"],
        2,
        [r"bad_inputs", r"is a directory"],
    ),
    (
        "sweep-not-utf8",
        ["sweep", "submit", "{bad}/not_utf8.yaml", "--dry-run"],
        2,
        [r"not_utf8\.yaml", r"line 4, column \d+", r"not UTF-8"],
    ),
    (
        "sweep-duplicate-axis",
        ["sweep", "submit", "{bad}/duplicate_key.yaml", "--dry-run"],
        2,
        [r"duplicate_key\.yaml", r"'width' is given twice", r"lines 5 and 7"],
    ),
    (
        "sweep-duplicate-nested",
        ["sweep", "submit", "{bad}/duplicate_key_nested.yaml", "--dry-run"],
        2,
        [r"duplicate_key_nested\.yaml", r"'batch_size' is given twice", r"lines 5 and 6"],
    ),
    (
        "constraint-power-bomb",
        ["sweep", "submit", "{bad}/expr_power_bomb.yaml", "--dry-run"],
        2,
        [r"expr_power_bomb\.yaml", r"constraints\[0\]", r"9 \*\* 9", r"bound"],
    ),
    (
        "constraint-string-bomb",
        ["sweep", "submit", "{bad}/expr_string_bomb.yaml", "--dry-run"],
        2,
        [r"expr_string_bomb\.yaml", r"constraints\[1\]", r"bound"],
    ),
    (
        "config-duplicate-key",
        ["model", "info", "--config", "{bad}/config_duplicate_key.yaml"],
        2,
        [r"config_duplicate_key\.yaml", r"'hidden_channels' is given twice", r"lines 2 and 3"],
    ),
    (
        "config-is-a-directory",
        ["model", "info", "--config", "{bad}"],
        2,
        [r"bad_inputs", r"is a directory"],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_through_cli(case, tmp_path: Path):
    _, args, code, patterns = case
    args = [a.replace("{bad}", str(BAD)) for a in args]
    t0 = time.perf_counter()
    p = cli(*args, cwd=tmp_path, check=False, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == code, out
    assert "Traceback" not in out, out
    flat = " ".join(out.split())  # a message is judged as text, whatever the console's line width
    for pat in patterns:
        assert re.search(pat, flat), f"{pat!r} not in: {flat}"
    assert time.perf_counter() - t0 < 60  # an expression bomb is refused, not computed
    assert not (tmp_path / "runs").exists(), "a refused input must not create a store"


def test_duplicate_keys_unit():
    with pytest.raises(TextFileError, match=r"'a' is given twice \(lines 1 and 3\)"):
        parse_yaml("a: 1\nb: 2\na: 3\n", "x.yaml")
    assert parse_yaml("a: &d {x: 1}\nb:\n  <<: *d\n  x: 2\n", "x.yaml") == {"a": {"x": 1}, "b": {"x": 2}}
    with pytest.raises(TextFileError, match=r"x.json: key 'a' is given twice"):
        parse_json('{"a": 1, "a": 2}', "x.json")
    assert parse_json('{"a": {"a": 1}}', "x.json") == {"a": {"a": 1}}  # the same key in two objects is fine


def test_expression_bounds_unit():
    for text in ("9 ** 9 ** 9 ** 9", "2 ** 5000", "(-3) ** 100000", "'a' * 10 ** 9", "'%999999999d' % 1"):
        t0 = time.perf_counter()
        with pytest.raises(ExprError, match="bound|not allowed"):
            Expr(text)({})
        assert time.perf_counter() - t0 < 1.0, text
    with pytest.raises(ExprError, match="characters"):
        Expr("x + " * 1000 + "x")
    # ordinary arithmetic is untouched
    assert Expr("2 ** 10 == 1024")({})
    assert Expr("width * 2 ** 3 == 256")({"width": 32})
    assert Expr("2 ** 0.5 > 1.41")({})
    assert Expr(f"2 ** {MAX_INT_BITS - 1} > 0")({})
