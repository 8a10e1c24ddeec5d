"""MOS predictors: DNSMOS ranks clean synthetic speech above the same speech with heavy noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import MOSBackendError, dnsmos, predict_mos
from model.metrics import mos as mos_module


def test_dnsmos_clean_beats_noisy():
    import pyopenjtalk

    x, fs = pyopenjtalk.tts("今日はとても良い天気ですね。")
    x = x / 32768.0
    noisy = np.clip(x + np.random.default_rng(0).standard_normal(len(x)) * np.sqrt(np.mean(x**2)), -1, 1)
    clean_s, noisy_s = dnsmos(x, fs), dnsmos(noisy, fs)
    assert set(clean_s) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 for v in clean_s.values())
    assert clean_s["ovrl"] > noisy_s["ovrl"] + 0.5
    assert clean_s["bak"] > noisy_s["bak"] + 1.0
    assert predict_mos(x, fs)["dnsmos_ovrl"] == pytest.approx(clean_s["ovrl"])


def test_dnsmos_of_silence_is_nan():
    assert all(math.isnan(v) for v in dnsmos(np.zeros(8000), 16000).values())


def test_utmos_failure_is_a_clear_error(monkeypatch):
    def broken(*a, **k):
        raise OSError("no network")

    monkeypatch.setattr(mos_module, "_utmos", None)
    monkeypatch.setattr(mos_module.torch.hub, "load", broken)
    with pytest.raises(MOSBackendError, match="UTMOS backend unavailable.*dnsmos"):
        predict_mos(np.zeros(16000), 16000, backend="utmos")
    with pytest.raises(ValueError, match="eval.mos_backend"):
        predict_mos(np.zeros(16000), 16000, backend="pesq")
