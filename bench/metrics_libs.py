"""Our YIN F0 tracker and numba DTW (model/metrics) against librosa.yin / librosa.pyin and
librosa.sequence.dtw, on the sanity signals of tests/test_metrics_signal.py.

Signals (16 kHz, the metrics' analysis rate, 5 ms hop): stationary sine and harmonic tones at 70-650 Hz,
a fast glide (330 Hz, +-6 semitones at 3 Hz), white noise and silence, and pyopenjtalk's synthetic
utterance with pitch-shifted copies (resampled 16 -> 17/18/20 kHz and played at 16 kHz) for MCD.

Printed: F0 error in cents against the known F0 (median / max, or median / p90 on the glide), voiced
share, ours-vs-librosa agreement on speech, MCD (dB) of each alignment, and milliseconds per call (median
of ``REPEAT`` runs after a warm-up; one thread).

Rule: switch to librosa only if its results equal ours (F0: within 1 cent median of ours on the known-F0
signals and the same voicing; MCD: within 0.01 dB) and it is no slower. Measured (2-core CPU VM, one
thread, librosa 0.11.0, numpy 2.4; librosa's frame_length 536 = our 16.8 ms window):

- F0: keep ours. ``librosa.yin`` is faster (1.9 vs 18.8 ms per second of audio on speech; 1.9 vs 21.5 ms
  per 1 s tone) but not equal: it makes no voicing decision (white noise and silence come out 100%
  voiced, ours 0%), it is biased on pure sines (median 28.5 / 10.8 / 6.8 / 2.6 cents at 70 / 145 / 220 /
  650 Hz against ours 0.01-0.7) and on the glide (median / p90 8.8 / 18.0 cents, ours 3.2 / 9.1). A
  longer window shrinks the sine bias (frame_length 2048: 5.2 cents at 70 Hz) and wrecks the glide
  (79.8 / 223.6 cents): no window matches ours. On speech it differs from ours by a median 14.2 cents,
  by more than 50 cents on 11.2% of the frames. ``librosa.pyin`` has voicing (noise and silence 0%
  voiced, like ours; V/UV differs from ours on 7.2% of speech frames) but is 12x slower than ours (230
  vs 18.8 ms per second of audio) and has the same biases (sines up to 33.1 cents median, glide 8.7 /
  17.8 cents).
- DTW (MCD): keep ours. ``librosa.sequence.dtw`` finds paths of the same total cost and the MCD along
  them equals ours to 0.001 dB on every pair (0.000, 2.443, 4.179, 5.516 dB for speech against itself
  and its 17/18/20 kHz shifts; 6.826 dB glide vs tone), but it is 3-4x slower: 4.8-7.1 ms vs 1.4-1.8 ms
  per speech pair (520 x 520-646 frames; two runs), 2.7 vs 0.8 ms for 400 x 400.

Rerun this script for current figures; nothing here is asserted in a test.
"""

from __future__ import annotations

import statistics
import time
import warnings

import librosa
import numpy as np
import pyopenjtalk
import torch
import torchaudio

from model.metrics import dtw_path, yin
from model.metrics.dtw import cost_matrix
from model.metrics.features import ANALYSIS_SR, F0_MAX, F0_MIN, HOP, analyse
from model.metrics.mcd import mcd_aligned

SR = ANALYSIS_SR
REPEAT = 5
TONES = (70.0, 145.3, 220.5, 410.0, 650.0)
# librosa's YIN integrates over frame_length // 2 samples and searches lags up to that: the same
# window as ours (sr / fmin samples) needs frame_length = 2 * ceil(sr / fmin) + 2
FRAME_LENGTH = 2 * int(np.ceil(SR / F0_MIN)) + 2


def harmonic(f0: np.ndarray, sr: int = SR, max_hz: float = 7000.0) -> np.ndarray:
    """Band-limited sawtooth-like tone following ``f0`` (Hz per sample), as in test_metrics_signal."""
    phase = 2 * np.pi * np.cumsum(f0) / sr
    return 0.2 * sum(np.sin(k * phase) / k * (k * f0 < max_hz) for k in range(1, 30))


def timed(fn, *args, **kwargs):
    out = fn(*args, **kwargs)  # warm-up: numba compile / cache load, librosa's lazy imports
    times = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return out, statistics.median(times) * 1e3


# ---------------------------------------------------------------------------------------------------- F0
# Each tracker is (f0 Hz per frame, voiced per frame, frame centres in samples).


def ours(x):
    tr = yin(x, SR, HOP, fmin=F0_MIN, fmax=F0_MAX)
    return tr.f0, tr.voiced, np.arange(len(tr.f0)) * HOP + HOP // 2


def lr_yin(x):
    f0 = librosa.yin(x, fmin=F0_MIN, fmax=F0_MAX, sr=SR, frame_length=FRAME_LENGTH, hop_length=HOP)
    return f0, np.ones(len(f0), dtype=bool), np.arange(len(f0)) * HOP  # no voicing decision


def lr_pyin(x):
    f0, voiced, _ = librosa.pyin(
        x, fmin=F0_MIN, fmax=F0_MAX, sr=SR, frame_length=FRAME_LENGTH, hop_length=HOP, fill_na=0.0
    )
    return f0, voiced, np.arange(len(f0)) * HOP


TRACKERS = {"ours": ours, "librosa.yin": lr_yin, "librosa.pyin": lr_pyin}


def cents(f, ref):
    return 1200 * np.abs(np.log2(np.maximum(f, 1e-9) / ref))


def f0_table(speech: np.ndarray) -> None:
    print(f"F0 at {SR} Hz, hop {HOP}, {F0_MIN:.0f}-{F0_MAX:.0f} Hz; cents against the known F0")
    print(f"{'signal':<22} {'tracker':<13} {'voiced':>7} {'med c':>7} {'max/p90':>8} {'ms':>8}")
    t = np.arange(SR) / SR
    signals = []
    for kind in ("sine", "harmonic"):
        for f0 in TONES:
            x = 0.3 * (np.sin(2 * np.pi * f0 * t) if kind == "sine" else harmonic(np.full(SR, f0)))
            signals.append((f"{kind} {f0:g} Hz", x, lambda c, f0=f0: np.full(len(c), f0), "max"))
    tg = np.arange(2 * SR) / SR
    glide = 330 * 2 ** (0.5 * np.sin(2 * np.pi * 3 * tg))
    signals.append(
        ("glide 330 Hz +-6 st", harmonic(glide), lambda c: glide[np.minimum(c, len(glide) - 1)], "p90")
    )
    signals.append(("white noise", np.random.default_rng(0).standard_normal(SR) * 0.1, None, None))
    signals.append(("silence", np.zeros(SR), None, None))
    worst = dict.fromkeys(TRACKERS, 0.0)
    for label, x, truth, stat in signals:
        x = x.astype(np.float32)
        for name, fn in TRACKERS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # librosa warns on silence
                (f, v, c), ms = timed(fn, x)
            share = float(np.mean(v))
            if truth is None:
                print(f"{label:<22} {name:<13} {share:>7.3f} {'':>7} {'':>8} {ms:>8.1f}")
                continue
            inner = slice(5, -5)
            err = cents(f[inner], truth(c[inner]))
            err = err[np.isfinite(err)]
            med = float(np.median(err))
            tail = float(err.max() if stat == "max" else np.percentile(err, 90))
            worst[name] = max(worst[name], med)
            print(f"{label:<22} {name:<13} {share:>7.3f} {med:>7.2f} {tail:>8.2f} {ms:>8.1f}")
    print("worst median cents over tones and glide:", {k: round(v, 2) for k, v in worst.items()})

    # speech: agreement with ours on frames both call voiced (librosa frame i ~ ours frame i, 2.5 ms apart)
    f_o, v_o, _ = ours(speech)
    for name in ("librosa.yin", "librosa.pyin"):
        f_l, v_l, _ = TRACKERS[name](speech)
        n = min(len(f_o), len(f_l))
        both = v_o[:n] & v_l[:n] & (f_l[:n] > 0)
        d = cents(f_l[:n][both], f_o[:n][both])
        print(
            f"speech: {name} vs ours on {both.sum()} frames both voiced: median {np.median(d):.2f} c, "
            f"> 50 c on {np.mean(d > 50):.1%}; V/UV disagreement {np.mean(v_o[:n] != v_l[:n]):.1%}"
        )
    secs = len(speech) / SR
    for name, fn in TRACKERS.items():
        _, ms = timed(fn, speech)
        print(f"speech ({secs:.2f} s): {name:<13} {ms:8.1f} ms ({ms / secs:.1f} ms per second of audio)")


def yin_window_sweep() -> None:
    """librosa.yin's tone bias shrinks with a longer window, and its glide error grows: no window matches ours."""
    print("\nlibrosa.yin by frame_length: median cents on sines 70/145.3/220.5/650 Hz; glide median / p90")
    t, tg = np.arange(SR) / SR, np.arange(2 * SR) / SR
    glide = 330 * 2 ** (0.5 * np.sin(2 * np.pi * 3 * tg))
    xg = harmonic(glide).astype(np.float32)
    for fl in (FRAME_LENGTH, 1024, 2048):
        tones = []
        for f0 in (70.0, 145.3, 220.5, 650.0):
            x = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
            f = librosa.yin(x, fmin=F0_MIN, fmax=F0_MAX, sr=SR, frame_length=fl, hop_length=HOP)
            tones.append(float(np.median(cents(f[5:-5], f0))))
        f = librosa.yin(xg, fmin=F0_MIN, fmax=F0_MAX, sr=SR, frame_length=fl, hop_length=HOP)
        e = cents(f[5:-5], glide[np.minimum(np.arange(len(f)) * HOP, len(glide) - 1)][5:-5])
        print(
            f"  frame_length {fl:>5} ({fl / 2 / SR * 1e3:4.1f} ms window): tones "
            + " / ".join(f"{v:.2f}" for v in tones)
            + f"; glide {np.median(e):.2f} / {np.percentile(e, 90):.2f}"
        )


# ---------------------------------------------------------------------------------------------------- DTW


def lr_dtw_path(a: np.ndarray, b: np.ndarray):
    _, wp = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    return wp[::-1, 0].copy(), wp[::-1, 1].copy()


def dtw_table(speech: np.ndarray) -> None:
    print(f"\nMCD (dB) along each DTW path; ms per dtw call (cost matrix included), median of {REPEAT}")
    print(
        f"{'pair':<26} {'frames':>9} {'MCD ours':>9} {'MCD lr':>9} {'cost ours':>10} {'cost lr':>10} "
        f"{'ms ours':>8} {'ms lr':>8}"
    )
    ref = analyse(speech, SR)
    pairs = [("speech vs itself", speech)]
    for k in (17, 18, 20):
        y = torchaudio.functional.resample(torch.from_numpy(speech), 16, k).numpy()
        pairs.append((f"speech vs 16->{k} kHz", y))
    t = np.arange(2 * SR) / SR
    pairs.append(("glide vs 330 Hz tone", None))
    for label, y in pairs:
        if y is None:
            a = analyse(harmonic(330 * 2 ** (0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), SR)
            b = analyse(harmonic(np.full(2 * SR, 330.0)).astype(np.float32), SR)
        else:
            a, b = ref, analyse(y, SR)
        xa, xb = a.mcep[:, 1:], b.mcep[:, 1:]
        (pa, ms_o) = timed(dtw_path, xa, xb)
        (pb, ms_l) = timed(lr_dtw_path, xa, xb)
        cm = cost_matrix(xa, xb)
        c_o, c_l = float(cm[pa].sum()), float(cm[pb].sum())
        m_o, m_l = mcd_aligned(a.mcep, b.mcep, pa), mcd_aligned(a.mcep, b.mcep, pb)
        print(
            f"{label:<26} {len(xa):>4}x{len(xb):<4} {m_o:>9.3f} {m_l:>9.3f} {c_o:>10.2f} {c_l:>10.2f} "
            f"{ms_o:>8.2f} {ms_l:>8.2f}"
        )


def main() -> None:
    torch.set_num_threads(1)
    x, fs = pyopenjtalk.tts("明日の会議は午後三時から始まります。")
    speech = torchaudio.functional.resample(torch.tensor(x / 32768.0, dtype=torch.float32), fs, SR).numpy()
    print(f"librosa {librosa.__version__}, numpy {np.__version__}, frame_length {FRAME_LENGTH} for librosa\n")
    f0_table(speech)
    yin_window_sweep()
    dtw_table(speech)


if __name__ == "__main__":
    main()
