"""Corpora (readers, validation, the built-in offline corpus), nested data-hours subsets, feature cache, batches.

The trainer needs one call: ``prepare_data(cfg) -> PreparedData`` (``prepare.py``).
"""

from model.data.builtin import build_builtin_corpus
from model.data.prepare import PreparedData, available_hours, prepare_data
from model.data.quality import DEFAULT_MIN_QUALITY, score_corpus
from model.data.select import check_selection, parse_quality
from model.data.sources import load_validated_manifest

__all__ = [
    "DEFAULT_MIN_QUALITY",
    "PreparedData",
    "available_hours",
    "build_builtin_corpus",
    "check_selection",
    "load_validated_manifest",
    "parse_quality",
    "prepare_data",
    "score_corpus",
]
