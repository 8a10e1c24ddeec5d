"""Known degradations of the built-in corpus, so the data-quality axis has something to find offline.

``degrade_items(...)`` picks a seeded fraction of utterances and spoils each in one known way:

- ``noise``: white Gaussian noise at a stated SNR (``snr_db``, uniform in ``NOISE_SNR_DB``). The SNR is
  relative to the *active speech level*: the mean power of the 20 ms frames within 30 dB of the loudest
  frame (an ITU-T P.56-like level that ignores pauses and edge silence).
- ``reverb``: convolution with a synthetic room impulse response: a direct path (1.0) plus exponentially
  decaying Gaussian noise from 2.5 ms on, decaying by 60 dB in ``rt60_s`` (uniform in ``REVERB_RT60_S``),
  scaled to a direct-to-reverberant energy ratio ``drr_db``. The length is kept (the tail is faded out
  over the last 20 ms), so durations match the clean corpus.
- ``clip``: gain of ``gain_db`` (uniform in ``CLIP_GAIN_DB``), hard clipping at full scale, then
  peak-normalised back to the corpus level: the flat tops stay (like a clipped recording that was
  normalised afterwards), and the validator's full-scale clipping check does not drop it.
- ``wrong_transcript``: the listing gets the text of another sentence of the generator (``donor``) in
  place of the spoken one; the audio is untouched. A swap with a transcript of about the same length is
  invisible to any phone-count check (only a recogniser would catch it), so the donor is the first of up
  to 64 seeded draws whose phone count differs from the spoken one's by a factor of at least
  ``WRONG_MIN_RATIO`` (else the most different draw); the ratio is recorded.

Selection is stratified: utterances ``uttNNNNNN`` come in blocks of ``BLOCK`` consecutive numbers; in each
block a seeded permutation ranks them and those with ``rank + offset < fraction * BLOCK`` are degraded
(``offset`` a seeded uniform in [0, 1) per block), so every full block holds ``floor`` or ``ceil`` of
``fraction * BLOCK`` degraded items and the fraction is exact on average. The k-th degraded utterance in
id order gets kind ``KINDS[(k + seed) % 4]``, so the kinds are balanced. Everything depends only on the
ids and the seed: a larger corpus extends a smaller one's degradations. Noise and reverb draw their random
numbers from a generator seeded by (seed, id): the result is byte-identical for the same arguments.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

import numpy as np

from model.data.builtin.sentences import sentence
from model.text.g2p import count_phones

DEGRADE_VERSION = 1  # bump when the degradations of given (ids, seed, fraction) change
KINDS = ("noise", "reverb", "clip", "wrong_transcript")
NOISE_SNR_DB = (0.0, 10.0)
REVERB_RT60_S = (0.5, 1.0)
REVERB_DRR_DB = (-6.0, 0.0)
CLIP_GAIN_DB = (10.0, 20.0)
WRONG_MIN_RATIO = 1.5
BLOCK = 20
PEAK = 0.9  # same level as the clean built-in corpus


@dataclass
class Degradation:
    id: str
    kind: str
    parameter: str  # "name=value[;name=value]"
    text: str | None = None  # the (wrong) transcript written to the listing, for wrong_transcript
    path: str = ""  # audio path relative to the corpus directory (as written to esd.list)


def _unit(s: str) -> float:
    return int(hashlib.sha256(s.encode()).hexdigest()[:16], 16) / 2.0**64


def _rng_np(seed: int, uid: str) -> np.random.Generator:
    return np.random.default_rng(
        int(hashlib.sha256(f"degrade-np:{seed}:{uid}".encode()).hexdigest()[:16], 16)
    )


def _index(uid: str) -> int:
    m = re.fullmatch(r"[A-Za-z_]*(\d+)", uid)
    if m is None:
        raise ValueError(f"degradation needs built-in utterance ids like utt000123, got {uid!r}")
    return int(m.group(1))


def choose(ids: list[str], fraction: float, seed: int) -> dict[str, str]:
    """``{id: kind}`` of the utterances to degrade (see the module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"degrade fraction must be in [0, 1], got {fraction}")
    picked = []
    for uid in ids:
        i = _index(uid)
        block = i // BLOCK
        perm = list(range(BLOCK))
        random.Random(f"degrade-block:{seed}:{block}").shuffle(perm)
        offset = _unit(f"degrade-offset:{seed}:{block}")
        if perm[i % BLOCK] + offset < fraction * BLOCK:
            picked.append(uid)
    picked.sort()
    return {uid: KINDS[(k + seed) % len(KINDS)] for k, uid in enumerate(picked)}


def active_level(x: np.ndarray, sr: int, floor_db: float = 30.0) -> float:
    """Mean power of the 20 ms frames within ``floor_db`` of the loudest frame."""
    n = max(1, int(0.02 * sr))
    frames = x[: len(x) // n * n].reshape(-1, n) if len(x) >= n else x.reshape(1, -1)
    p = np.mean(frames.astype(np.float64) ** 2, axis=1)
    if not np.any(p > 0):
        return 0.0
    return float(np.mean(p[p >= p.max() * 10 ** (-floor_db / 10)]))


def _peak(x: np.ndarray) -> np.ndarray:
    m = float(np.max(np.abs(x)))
    return x * (PEAK / m) if m > 0 else x


def add_noise(x: np.ndarray, sr: int, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(len(x))
    level = active_level(x, sr)
    noise *= np.sqrt(level / 10 ** (snr_db / 10))
    return _peak(x + noise)


def synthetic_rir(sr: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    n = int(rt60 * sr)
    start = int(0.0025 * sr)
    t = np.arange(n - start) / sr
    tail = rng.standard_normal(n - start) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))  # direct energy is 1
    h = np.zeros(n)
    h[0] = 1.0
    h[start:] = tail
    return h


def add_reverb(x: np.ndarray, sr: int, rt60: float, drr_db: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    y = fftconvolve(x, synthetic_rir(sr, rt60, drr_db, rng))[: len(x)]
    fade = min(len(y), int(0.02 * sr))
    y[len(y) - fade :] *= np.linspace(1.0, 0.0, fade)
    return _peak(y)


def add_clipping(x: np.ndarray, gain_db: float) -> np.ndarray:
    return _peak(np.clip(x * 10 ** (gain_db / 20), -1.0, 1.0))


def degrade_audio(x: np.ndarray, sr: int, kind: str, seed: int, uid: str) -> tuple[np.ndarray, str]:
    """Degraded float audio and the parameter string (audio kinds only)."""
    rng = random.Random(f"degrade-param:{seed}:{uid}")
    if kind == "noise":
        snr = round(rng.uniform(*NOISE_SNR_DB), 1)
        return add_noise(x, sr, snr, _rng_np(seed, uid)), f"snr_db={snr:.1f}"
    if kind == "reverb":
        rt60 = round(rng.uniform(*REVERB_RT60_S), 2)
        drr = round(rng.uniform(*REVERB_DRR_DB), 1)
        return add_reverb(x, sr, rt60, drr, _rng_np(seed, uid)), f"rt60_s={rt60:.2f};drr_db={drr:.1f}"
    if kind == "clip":
        gain = round(rng.uniform(*CLIP_GAIN_DB), 1)
        return add_clipping(x, gain), f"gain_db={gain:.1f}"
    raise ValueError(f"not an audio degradation: {kind!r}")


def wrong_transcript(text: str, corpus_seed: int, seed: int, uid: str) -> tuple[str, str]:
    """(donor text, parameter) for a wrong-transcript degradation of ``text``."""

    rng = random.Random(f"degrade-donor:{seed}:{uid}")
    own = max(1, count_phones(text))
    best: tuple[float, int, str] | None = None
    for _ in range(64):
        j = rng.randrange(10**6)
        donor = sentence(corpus_seed, j)
        ratio = max(1, count_phones(donor)) / own
        score = abs(np.log(ratio))
        if best is None or score > best[0]:
            best = (score, j, donor)
        if donor != text and score >= np.log(WRONG_MIN_RATIO):
            break
    _, j, donor = best
    ratio = max(1, count_phones(donor)) / own
    return donor, f"donor_sentence={j};phone_ratio={ratio:.2f}"


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
