"""Shared fixtures for the data-quality and mixture tests (import the fixtures into a test module to use them).

``degraded_corpus``: a tiny built-in corpus (about 90 s at 16 kHz, 2 speakers, seed 0 like
``builtin_corpus``) with half its utterances degraded. ``degraded_scores``: its manifest and quality table
(signal + DNSMOS), computed once per session in a shared cache directory (``quality_cache``).
"""

from __future__ import annotations

import pytest
from fixtures_data import builtin_corpus, data_cfg  # noqa: F401 - fixture

DEGRADED_HOURS = 0.025
DEGRADE = 0.5
# the signal-only part of the default filter: cheap enough for the mixture tests
SIGNAL_FILTER = "snr_db >= 35 and clip_ratio <= 0.001 and transcript_absz <= 4"

_BUILT: dict = {}


@pytest.fixture(scope="session")
def quality_cache(tmp_path_factory):
    if "cache" not in _BUILT:
        _BUILT["cache"] = tmp_path_factory.mktemp("quality_cache")
    return _BUILT["cache"]


@pytest.fixture(scope="session")
def degraded_corpus(tmp_path_factory):
    from model.data.builtin import build_builtin_corpus

    if "degraded" not in _BUILT:
        out = tmp_path_factory.mktemp("degraded") / "corpus"
        _BUILT["degraded"] = build_builtin_corpus(
            out,
            DEGRADED_HOURS,
            seed=0,
            sample_rate=16000,
            speakers=2,
            workers=2,
            progress=False,
            degrade=DEGRADE,
            degrade_seed=0,
        )
    return _BUILT["degraded"]


@pytest.fixture(scope="session")
def degraded_scores(degraded_corpus, quality_cache):
    from model.data import load_validated_manifest
    from model.data.quality import score_corpus
    from model.data.quality_report import read_degradations

    if "scores" not in _BUILT:
        d = data_cfg(degraded_corpus.dir, quality_cache).data
        _, items, report, _ = load_validated_manifest(d)
        assert not report.dropped, report.counts()  # degraded audio still passes validation
        table = score_corpus(items, quality_cache, groups=("signal", "dnsmos"), workers=2)
        _BUILT["scores"] = (items, table, read_degradations(degraded_corpus.dir))
    return _BUILT["scores"]
