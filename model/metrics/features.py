"""The analysis front end shared by MCD and the intonation metrics.

Every signal is resampled to 16 kHz (so values compare across trials with different model sample rates)
and analysed at a 5 ms hop:

- mel-cepstrum: the log-mel spectrum of ``model.audio.mel_spectrogram`` (512-point FFT, 25 ms Hann
  window, 80 Slaney mel bands over 0-8 kHz, natural log of magnitude) turned into cepstral coefficients
  by a DCT-II, ``c_m = (1/K) * sum_k log|M_k| * cos(pi * m * (k + 1/2) / K)`` for ``m = 0..24``: the
  coefficients of ``log|M| ~ c_0 + 2 * sum_m c_m cos(...)``, the convention under which the usual MCD
  constant ``10 / ln 10 * sqrt(2 * sum_m (c_m - c'_m)^2)`` is in dB. (Not SPTK's all-pass mel-cepstrum;
  values are comparable within this project, and of the same order as SPTK-based MCD.)
- F0: ``model.metrics.f0.yin`` on the same frames (60-700 Hz).

Leading and trailing silence (frames more than ``SILENCE_DB`` below the loudest frame) is trimmed before
alignment so that padding does not count as distortion; pauses inside an utterance are kept.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from model.audio import mel_spectrogram
from model.metrics.f0 import yin

ANALYSIS_SR = 16000
HOP = 80  # 5 ms
N_FFT = 512
WIN = 400  # 25 ms
N_MELS = 80
N_CEPS = 24  # c_1..c_24 enter the MCD; c_0 (energy) is excluded
SILENCE_DB = 40.0
F0_MIN = 60.0
F0_MAX = 700.0


@dataclass
class Features:
    mcep: np.ndarray  # (frames, N_CEPS + 1), c_0 first
    f0: np.ndarray  # (frames,) Hz, 0 where unvoiced
    voiced: np.ndarray  # (frames,) bool


def to_analysis_rate(wav, sr: int) -> np.ndarray:
    """Mono float signal at ``sr`` -> float32 numpy at 16 kHz (tensor or array, any leading dims of 1)."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32) if not torch.is_tensor(wav) else wav)
    x = x.detach().float().cpu().reshape(-1)
    if sr != ANALYSIS_SR:
        x = torchaudio.functional.resample(x, sr, ANALYSIS_SR)
    return x.numpy()


@functools.lru_cache(maxsize=4)
def _dct_matrix(k: int, m: int) -> np.ndarray:
    n = np.arange(k)
    return np.cos(np.pi * np.arange(m)[:, None] * (n[None, :] + 0.5) / k) / k  # (m, k)


def mel_cepstrum(wav16: np.ndarray) -> np.ndarray:
    """16 kHz signal -> mel-cepstrum (frames, N_CEPS + 1) as defined in the module docstring."""
    x = torch.from_numpy(np.ascontiguousarray(wav16, dtype=np.float32))[None]
    logmel = mel_spectrogram(x, ANALYSIS_SR, N_FFT, N_MELS, HOP, WIN, 0.0, ANALYSIS_SR / 2)[0]  # (mels, T)
    return logmel.double().numpy().T @ _dct_matrix(N_MELS, N_CEPS + 1).T


def _speech_span(wav16: np.ndarray, n: int) -> tuple[int, int]:
    frames = wav16[: n * HOP].reshape(n, HOP).astype(np.float64)
    e = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    keep = np.where(e > e.max() - SILENCE_DB)[0]
    if len(keep) == 0:
        return 0, n
    return int(keep[0]), int(keep[-1]) + 1


def analyse(wav, sr: int, trim: bool = True) -> Features:
    """Mel-cepstrum and F0 of one utterance at the analysis settings."""
    x = to_analysis_rate(wav, sr)
    n = len(x) // HOP
    if n < 2:
        raise ValueError(f"analyse: signal too short ({len(x)} samples at {ANALYSIS_SR} Hz)")
    mcep = mel_cepstrum(x)[:n]
    track = yin(x, ANALYSIS_SR, HOP, fmin=F0_MIN, fmax=F0_MAX)
    lo, hi = _speech_span(x, n) if trim else (0, n)
    return Features(mcep[lo:hi], track.f0[lo:hi], track.voiced[lo:hi])
