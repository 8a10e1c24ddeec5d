"""Quality-threshold and mixture axes are validated before launch (issue 10): nothing is launched."""

from __future__ import annotations

import pytest

from orchestrator.plan import SpecError, parse_spec, resolve


def _spec(axes: dict) -> dict:
    return {
        "name": "sel",
        "base": {"preset": "tiny", "data": {"corpora": {"a": "builtin"}}},
        "axes": axes,
        "estimate": {"count": False},
    }


def test_threshold_on_unknown_score_fails_before_launch():
    spec = parse_spec(_spec({"data.min_quality": ["loudness_db >= 3"], "steps": [5]}), "sel.yaml")
    with pytest.raises(SpecError, match="loudness_db"):
        resolve(spec, count=False)


def test_mixture_naming_unknown_corpus_fails_before_launch():
    spec = parse_spec(_spec({"data.sources": [{"a": 0.5, "nope": 0.5}], "steps": [5]}), "sel.yaml")
    with pytest.raises(SpecError, match="nope"):
        resolve(spec, count=False)
