"""Intonation against a reference recording, after DTW alignment on mel-cepstra (see ``features.py``).

Over the aligned frame pairs:

- ``logf0_rmse``: RMS of ``1200 * log2(f0_test / f0_ref)`` in cents, over pairs voiced in both;
- ``logf0_corr``: Pearson correlation of log F0 over the same pairs (NaN with fewer than 3 pairs or a
  flat contour);
- ``vuv_error``: fraction of pairs whose voiced/unvoiced decisions differ.

``compare`` computes these and the MCD with one analysis and one alignment per pair.
"""

from __future__ import annotations

import math

import numpy as np

from model.metrics.features import Features, analyse
from model.metrics.mcd import align, mcd_aligned


def intonation_aligned(
    ref: Features, test: Features, path: tuple[np.ndarray, np.ndarray]
) -> dict[str, float]:
    ia, ib = path
    va, vb = ref.voiced[ia], test.voiced[ib]
    both = va & vb
    out = {"vuv_error": float(np.mean(va != vb)), "logf0_rmse": math.nan, "logf0_corr": math.nan}
    if both.any():
        la, lb = np.log2(ref.f0[ia][both]), np.log2(test.f0[ib][both])
        out["logf0_rmse"] = float(1200.0 * np.sqrt(np.mean((lb - la) ** 2)))
        if both.sum() >= 3 and la.std() > 0 and lb.std() > 0:
            out["logf0_corr"] = float(np.corrcoef(la, lb)[0, 1])
    return out


def intonation(ref_wav, test_wav, sr: int, test_sr: int | None = None) -> dict[str, float]:
    """``{"logf0_rmse", "logf0_corr", "vuv_error"}`` of ``test_wav`` against ``ref_wav``."""
    a, b = analyse(ref_wav, sr), analyse(test_wav, test_sr or sr)
    return intonation_aligned(a, b, align(a, b))


def compare(ref_wav, test_wav, sr: int, test_sr: int | None = None) -> dict[str, float]:
    """MCD and intonation metrics of ``test_wav`` against ``ref_wav`` (one analysis, one alignment)."""
    a, b = analyse(ref_wav, sr), analyse(test_wav, test_sr or sr)
    path = align(a, b)
    return {"mcd": mcd_aligned(a.mcep, b.mcep, path), **intonation_aligned(a, b, path)}
