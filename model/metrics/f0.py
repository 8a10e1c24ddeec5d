"""F0 tracking: YIN (de Cheveigné & Kawahara, 2002), vectorised over frames in numpy.

One frame per ``hop`` samples, centred like ``model.audio.spectrogram`` (frame ``i`` is centred on sample
``i * hop + hop / 2``; ``len(wav) // hop`` frames), so F0 and spectral features of the same signal line up
frame by frame.

Per frame: the difference function d(tau) over an integration window of ``W = sr / fmin`` samples (lagged
products by cumulative sums, windows centred on the frame for every lag), its cumulative-mean-normalised form d'(tau), then the first
local minimum of d' below ``threshold`` in ``[sr / fmax, sr / fmin]`` (the global minimum when none is),
refined by parabolic interpolation. Voicing: the chosen d' is below ``voicing_threshold`` (aperiodicity)
and the frame's energy is within ``silence_db`` of the loudest frame. Unvoiced frames get F0 = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class F0Track:
    f0: np.ndarray  # (frames,) Hz, 0 where unvoiced
    voiced: np.ndarray  # (frames,) bool
    aperiodicity: np.ndarray  # (frames,) the chosen d' value (0 = perfectly periodic)
    hop: int
    sr: int


def _difference(x: np.ndarray, n: int, hop: int, w: int, tau_max: int) -> tuple[np.ndarray, np.ndarray]:
    """YIN difference function d(tau) (n, tau_max + 1) and window energies (n, 1), lag-centred.

    For lag tau the two compared windows ``x[s : s + w]`` and ``x[s + tau : s + tau + w]`` are placed
    symmetrically about the frame centre (``s = c - w // 2 - tau // 2``), so a gliding pitch is measured
    at the frame centre for every lag (an uncentred window biases F0 by tens of cents on speech-like
    glides). Lagged products are summed with cumulative sums, one lag at a time: O(tau_max * samples).
    """
    pad = w + tau_max + hop
    xp = np.pad(x, (pad, pad))
    centres = pad + hop * np.arange(n) + hop // 2
    c2 = np.concatenate([[0.0], np.cumsum(xp * xp)])
    d = np.empty((n, tau_max + 1))
    e_0 = None
    for tau in range(tau_max + 1):
        s = centres - w // 2 - tau // 2
        prod = np.concatenate([[0.0], np.cumsum(xp[: len(xp) - tau] * xp[tau:])])
        r = prod[s + w] - prod[s]
        e1 = c2[s + w] - c2[s]
        e2 = c2[s + tau + w] - c2[s + tau]
        d[:, tau] = np.maximum(e1 + e2 - 2.0 * r, 0.0)
        if tau == 0:
            e_0 = e1[:, None]
    return d, e_0


def yin(
    wav: np.ndarray,
    sr: int,
    hop: int,
    fmin: float = 60.0,
    fmax: float = 500.0,
    threshold: float = 0.15,
    voicing_threshold: float = 0.25,
    silence_db: float = 45.0,
) -> F0Track:
    """Track F0 of a mono signal ``wav`` (samples,) at ``sr`` Hz with one frame per ``hop`` samples."""
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if not 0 < fmin < fmax < sr / 2:
        raise ValueError(f"yin: need 0 < fmin < fmax < sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    n = len(x) // hop
    if n == 0:
        empty = np.zeros(0)
        return F0Track(empty, empty.astype(bool), empty, hop, sr)
    tau_max = int(np.ceil(sr / fmin))
    tau_min = max(2, int(np.floor(sr / fmax)))
    w = tau_max  # integration window
    d, e_0 = _difference(x - x.mean(), n, hop, w, tau_max)

    # cumulative mean normalised difference
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, tau_max + 1)[None, :]
    dn = np.ones_like(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        dn[:, 1:] = np.where(cum > 1e-12, d[:, 1:] / cum, 1.0)

    # first local minimum below threshold within [tau_min, tau_max - 1]
    seg = dn[:, tau_min - 1 : tau_max + 1]  # includes one neighbour on each side
    centre = seg[:, 1:-1]
    is_min = (centre <= seg[:, :-2]) & (centre < seg[:, 2:])
    cand = is_min & (centre < threshold)
    has = cand.any(axis=1)
    first = np.where(has, cand.argmax(axis=1), centre.argmin(axis=1))
    tau = first + tau_min
    rows = np.arange(n)

    # parabolic interpolation of d' around the chosen lag
    a, b, c = dn[rows, tau - 1], dn[rows, tau], dn[rows, np.minimum(tau + 1, tau_max)]
    denom = a - 2.0 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / denom, 0.0)
    shift = np.clip(shift, -0.5, 0.5)
    f0 = sr / (tau + shift)
    aper = b

    energy = e_0[:, 0] / w
    peak = energy.max()
    loud = energy > peak * 10.0 ** (-silence_db / 10.0) if peak > 0 else np.zeros(n, dtype=bool)
    voiced = (aper < voicing_threshold) & loud & (f0 >= fmin * 0.97) & (f0 <= fmax * 1.03)
    return F0Track(np.where(voiced, f0, 0.0), voiced, aper, hop, sr)
