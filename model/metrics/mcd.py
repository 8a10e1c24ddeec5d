"""Mel-cepstral distortion between a reference and a test utterance, DTW-aligned (features.py defines the
mel-cepstrum): ``MCD = mean over aligned frame pairs of 10 / ln 10 * sqrt(2 * sum_{m=1..24} (c_m - c'_m)^2)``
in dB, c_0 excluded. Alignment: DTW on the same c_1..c_24 vectors.
"""

from __future__ import annotations

import numpy as np

from model.metrics.dtw import dtw_path
from model.metrics.features import Features, analyse

MCD_CONST = 10.0 / np.log(10.0) * np.sqrt(2.0)


def mcd_aligned(a: np.ndarray, b: np.ndarray, path: tuple[np.ndarray, np.ndarray]) -> float:
    """MCD (dB) of mel-cepstra ``a`` (n, 1+M), ``b`` (m, 1+M) along an alignment path (c_0 excluded)."""
    ia, ib = path
    diff = a[ia, 1:] - b[ib, 1:]
    return float(np.mean(MCD_CONST * np.sqrt(np.sum(diff * diff, axis=1))))


def align(ref: Features, test: Features) -> tuple[np.ndarray, np.ndarray]:
    """DTW path between two analysed utterances on their mel-cepstra (c_0 excluded)."""
    return dtw_path(ref.mcep[:, 1:], test.mcep[:, 1:])


def mcd(ref_wav, test_wav, sr: int, test_sr: int | None = None) -> float:
    """DTW-aligned mel-cepstral distortion (dB) of ``test_wav`` against ``ref_wav``."""
    a, b = analyse(ref_wav, sr), analyse(test_wav, test_sr or sr)
    return mcd_aligned(a.mcep, b.mcep, align(a, b))
