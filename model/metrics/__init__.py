"""Evaluation metrics: DNSMOS / UTMOS, log-F0 and V/UV, MCD (DTW-aligned), real-time factor.

``compare(ref, test, sr)`` gives MCD and the intonation metrics of one utterance against its reference;
``predict_mos(wav, sr, backend)`` the predicted MOS. The analysis definitions are in ``features.py``.
"""

from model.metrics.dtw import dtw_path
from model.metrics.f0 import F0Track, yin
from model.metrics.features import Features, analyse
from model.metrics.intonation import compare, intonation
from model.metrics.mcd import mcd
from model.metrics.mos import MOSBackendError, dnsmos, predict_mos, utmos
from model.metrics.rtf import SynthesisTimer, real_time_factor

__all__ = [
    "F0Track",
    "Features",
    "MOSBackendError",
    "SynthesisTimer",
    "analyse",
    "compare",
    "dnsmos",
    "dtw_path",
    "intonation",
    "mcd",
    "predict_mos",
    "real_time_factor",
    "utmos",
    "yin",
]
