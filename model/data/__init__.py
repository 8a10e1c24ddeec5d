"""Corpora (readers, validation, the built-in offline corpus), nested data-hours subsets, feature cache, batches.

The trainer needs one call: ``prepare_data(cfg) -> PreparedData`` (``prepare.py``).
"""

from model.data.builtin import build_builtin_corpus
from model.data.prepare import PreparedData, available_hours, load_validated_manifest, prepare_data

__all__ = [
    "PreparedData",
    "available_hours",
    "build_builtin_corpus",
    "load_validated_manifest",
    "prepare_data",
]
