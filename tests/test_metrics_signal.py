"""Metric sanity: F0 tracker accuracy on known signals, DTW, MCD / log-F0 against self and shifted copies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchaudio

from model.metrics import compare, dtw_path, yin

SR = 16000


def _harmonic(f0: np.ndarray, sr: int = SR, max_hz: float = 7000.0) -> np.ndarray:
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return 0.2 * sum(np.sin(k * phase) / k * (k * f0 < max_hz) for k in range(1, 30))


@pytest.mark.parametrize("f0", [70.0, 145.3, 220.5, 410.0, 650.0])
@pytest.mark.parametrize("kind", ["sine", "harmonic"])
def test_yin_stationary_tones(f0, kind):
    n = SR
    x = np.sin(2 * np.pi * f0 * np.arange(n) / SR) if kind == "sine" else _harmonic(np.full(n, f0))
    tr = yin(0.3 * x, SR, 80, fmin=60, fmax=700)
    assert tr.voiced[5:-5].all()
    cents = 1200 * np.abs(np.log2(tr.f0[5:-5] / f0))
    assert np.median(cents) < 2.0 and cents.max() < 15.0


def test_yin_follows_a_fast_glide():
    t = np.arange(2 * SR) / SR
    f = 330 * 2 ** (0.5 * np.sin(2 * np.pi * 3 * t))  # +-6 semitones at 3 Hz
    tr = yin(_harmonic(f), SR, 80, fmin=60, fmax=700)
    centres = np.arange(len(tr.f0)) * 80 + 40
    m = tr.voiced
    assert m.mean() > 0.95
    err = 1200 * np.abs(np.log2(tr.f0[m] / f[centres[m]]))
    assert np.median(err) < 10.0 and np.percentile(err, 90) < 25.0


def test_yin_noise_and_silence_are_unvoiced():
    noise = np.random.default_rng(0).standard_normal(SR) * 0.1
    assert yin(noise, SR, 80).voiced.mean() < 0.02
    assert not yin(np.zeros(SR), SR, 80).voiced.any()


def test_dtw_recovers_a_known_warp():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 5))
    ia, ib = dtw_path(a, a)
    assert (ia == ib).all() and len(ia) == 40
    idx = np.repeat(np.arange(40), [2 if i % 3 == 0 else 1 for i in range(40)])  # stretch every third frame
    ia, ib = dtw_path(a, a[idx])
    assert (ia == idx[ib]).all()
    with pytest.raises(ValueError, match="feature sizes"):
        dtw_path(a, a[:, :3])


@pytest.fixture(scope="module")
def speech():
    import pyopenjtalk

    x, fs = pyopenjtalk.tts("明日の会議は午後三時から始まります。")
    x = torch.tensor(x / 32768.0, dtype=torch.float32)
    return torchaudio.functional.resample(x, fs, SR).numpy(), x.numpy(), fs


def test_signal_against_itself_is_zero(speech):
    x16, x48, fs = speech
    r = compare(x16, x16, SR)
    assert r["mcd"] == 0.0 and r["logf0_rmse"] == 0.0 and r["vuv_error"] == 0.0
    assert r["logf0_corr"] == pytest.approx(1.0)
    # the same utterance at another sample rate is analysed identically after resampling to 16 kHz
    assert compare(x48, x16, fs, SR)["mcd"] == pytest.approx(0.0, abs=0.2)


def test_metrics_grow_with_pitch_shift(speech):
    x16, _, _ = speech
    results = []
    for k in (17, 18, 20):  # resample 16 -> k kHz, play at 16 kHz: F0 scaled by 16/k (and slowed down)
        y = torchaudio.functional.resample(torch.from_numpy(x16), 16, k).numpy()
        r = compare(x16, y, SR)
        nominal = 1200 * abs(math.log2(16 / k))
        assert 0.7 * nominal < r["logf0_rmse"] < 1.3 * nominal
        results.append(r)
    for a, b in zip(results, results[1:], strict=False):
        assert 0 < a["mcd"] < b["mcd"]
        assert 0 < a["logf0_rmse"] < b["logf0_rmse"]
