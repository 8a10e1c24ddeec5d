"""Per-utterance quality scores, computed once per corpus and kept in the shared feature cache.

Scores (``SCORES``; higher is better unless marked):

- ``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl``, ``dnsmos_p808``: DNSMOS P.835 / P.808 (``model.metrics.mos``,
  speechmos ONNX models, 16 kHz).
- ``snr_db``: energy-based SNR estimate (percentile method). Frame powers of 25 ms frames every 10 ms;
  the noise power is the 10th percentile of the frame powers (pauses and edge silence), the speech power
  the 90th percentile; ``snr = 10 log10((P90 - P10) / P10)``, clamped to [-20, 100] dB (digital silence
  gives 100). It needs some pause in the utterance (about 10 % of frames); on speech without any pause it
  underestimates.
- ``clip_ratio`` (lower is better): fraction of samples within 0.1 % of the file's own peak. Clean audio
  has a handful of samples at its peak (ratio ~1e-4); clipped audio has flat tops, also when it was
  normalised after clipping (which the validator's full-scale check cannot see).
- ``speech_s``: seconds from the first to the last speech frame (frame power above the midpoint, in dB,
  between the noise and speech percentiles).
- ``n_phones``: phones of the transcript (``model.text.g2p``; pauses and punctuation not counted);
  ``n_pauses``: pauses inside it (runs of punctuation or spaces between phones).
- ``speaking_rate``: ``n_phones / speech_s`` (phones per second, pauses included).
- ``transcript_z``: the transcript check. Per corpus, the speech span is predicted from the transcript,
  ``span ~ a * n_phones + b * n_pauses`` (least squares, refitted three times without the items whose
  residual is beyond 3 robust sigmas); the residual ``log(span / predicted)`` is centred on each speaker's
  median (speakers with at least ``MIN_SPEAKER_ITEMS`` items; the corpus median otherwise) and divided by
  ``1.4826 MAD`` of the centred residuals (at least ``MIN_MAD``). Positive: more audio than the text
  accounts for (words missing from the transcript); negative: the transcript is too long. A transcript that
  belongs to another utterance is far off (|z| 4-11 on the built-in corpus; clean items stay below ~2).
  ``transcript_absz = |transcript_z|`` is the score to threshold (lower is better). Both are relative to
  the corpus, so they are derived when the table is loaded.

Two groups, each cached on its own (``<cache_dir>/quality-<group>-<digest>/``, digest of the key: corpus
fingerprint, group, scorer version, and the frontend version for ``signal``): ``signal`` (cheap: SNR,
clipping, speech span, phones) and ``dnsmos`` (about 0.35 s per utterance per core). Work is done in chunks
of ``CHUNK`` utterances (id order), each written atomically (temp file + rename) under an exclusive
``flock``: an interrupted run keeps its finished chunks, trials starting together compute each chunk once,
and a second call computes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from model.config import DEFAULT_MIN_QUALITY  # noqa: F401  (re-exported: the quality rule beside its scores)
from model.data.files import atomic_write_text, file_lock, progress_bar
from model.data.manifest import ManifestItem, fingerprint
from model.text.g2p import FRONTEND_VERSION, phone_counts

SIGNAL_VERSION = 2
DNSMOS_VERSION = 1
CHUNK = 256
MIN_SPEAKER_ITEMS = 5
MIN_MAD = 0.02

GROUPS = {
    "signal": ("snr_db", "clip_ratio", "speech_s", "n_phones", "n_pauses", "speaking_rate"),
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"),
}
DERIVED = {"transcript_z": "signal", "transcript_absz": "signal"}
# name -> (group, higher is better, description)
SCORES: dict[str, tuple[str, bool, str]] = {
    "dnsmos_sig": ("dnsmos", True, "DNSMOS P.835 speech signal quality (1-5)"),
    "dnsmos_bak": ("dnsmos", True, "DNSMOS P.835 background noise quality (1-5)"),
    "dnsmos_ovrl": ("dnsmos", True, "DNSMOS P.835 overall quality (1-5)"),
    "dnsmos_p808": ("dnsmos", True, "DNSMOS P.808 MOS (1-5)"),
    "snr_db": ("signal", True, "SNR estimate, dB (frame-power percentiles P90 vs P10)"),
    "clip_ratio": ("signal", False, "fraction of samples within 0.1 % of the peak"),
    "speech_s": ("signal", True, "seconds of speech (voice-active frames)"),
    "n_phones": ("signal", True, "phones of the transcript"),
    "n_pauses": ("signal", True, "pauses inside the transcript"),
    "speaking_rate": ("signal", True, "phones per second of speech"),
    "transcript_z": ("signal", True, "robust z of log(speech span / span predicted from the text)"),
    "transcript_absz": ("signal", False, "|transcript_z|: transcript implausibility"),
}
# The default filter ("min_quality: default"): one condition per kind of damage, tuned on the built-in
# corpus (0.1 h, 30 % degraded: all 37 degraded items fail, none of the 86 clean ones). Background noise:
# DNSMOS BAK (noise <= 2.2, clean >= 3.1) and the SNR estimate (noise <= 12 dB); reverberation fills the
# pauses, so the SNR estimate falls (reverb 15-30 dB, clean >= 40 dB); clipping: clip_ratio (clipped >= 0.007,
# clean ~2e-5); a transcript of another utterance: transcript_absz (wrong >= 10 there, clean <= 3.1). No
# absolute DNSMOS OVRL bound: it depends on the voice (the HTS voice of the built-in corpus scores OVRL
# ~1.8-3.0 clean), so for other corpora prefer a percentile ("dnsmos_ovrl >= p20") or their own values.
# The expression itself lives in model.config (beside data.min_quality), so light modules such as the CLI's
# help text can show it without importing this package.


# ----------------------------------------------------------------------------------------------------
# per-utterance scorers


def read_mono(path: str) -> tuple[np.ndarray, int]:
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def signal_scores(x: np.ndarray, sr: int, text: str) -> dict[str, float]:
    frame, hop = int(0.025 * sr), int(0.010 * sr)
    if len(x) < frame:
        x = np.pad(x, (0, frame - len(x)))
    n = 1 + (len(x) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    p = np.mean(x.astype(np.float64)[idx] ** 2, axis=1)
    noise, speech = np.percentile(p, 10), np.percentile(p, 90)
    snr = 10 * math.log10(max(speech - noise, 1e-20) / max(noise, 1e-20))
    snr = float(min(100.0, max(-20.0, snr)))
    lo, hi = 10 * math.log10(max(noise, 1e-12)), 10 * math.log10(max(speech, 1e-12))
    active = np.flatnonzero(10 * np.log10(np.maximum(p, 1e-12)) > (lo + hi) / 2)
    speech_s = ((active[-1] - active[0]) * hop + frame) / sr if active.size else 0.0
    peak = float(np.max(np.abs(x)))
    clip = float(np.mean(np.abs(x) >= peak * 0.999)) if peak > 0 else 1.0
    phones, pauses = phone_counts(text)
    rate = phones / speech_s if speech_s > 0 else math.nan
    return {
        "snr_db": snr,
        "clip_ratio": clip,
        "speech_s": float(speech_s),
        "n_phones": float(phones),
        "n_pauses": float(pauses),
        "speaking_rate": float(rate),
    }


def dnsmos_scores(x: np.ndarray, sr: int) -> dict[str, float]:
    from model.metrics.mos import (
        predict_mos,  # onnxruntime + the DNSMOS models: only when DNSMOS is asked for
    )

    return predict_mos(x, sr, "dnsmos")


def _score_job(args: tuple[str, str, tuple[str, ...]]) -> dict[str, float]:
    path, text, groups = args
    x, sr = read_mono(path)
    out: dict[str, float] = {}
    if "signal" in groups:
        out.update(signal_scores(x, sr, text))
    if "dnsmos" in groups:
        out.update(dnsmos_scores(x, sr))
    return out


def _init_worker() -> None:
    import torch  # torch only to pin its threads in a scoring worker

    os.environ["VITS_SCALING_MOS_THREADS"] = "1"
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------
# the cached table


@dataclass
class QualityStats:
    computed: dict[str, int] = field(default_factory=dict)  # group -> utterances scored by this call
    reused: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dirs: dict[str, str] = field(default_factory=dict)

    @property
    def total_computed(self) -> int:
        return sum(self.computed.values())


@dataclass
class QualityTable:
    """Scores of every utterance of one corpus (``scores[id][name]``)."""

    corpus_fp: str
    groups: tuple[str, ...]
    scores: dict[str, dict[str, float]]
    stats: QualityStats

    @property
    def names(self) -> list[str]:
        return [s for s, (g, _, _) in SCORES.items() if g in self.groups]

    def column(self, name: str, ids: list[str] | None = None) -> np.ndarray:
        ids = list(self.scores) if ids is None else ids
        return np.array([self.scores[i].get(name, math.nan) for i in ids], dtype=float)


def group_key(corpus_fp: str, group: str) -> dict:
    if group not in GROUPS:
        raise ValueError(f"unknown quality score group {group!r} (allowed: {', '.join(GROUPS)})")
    key = {"kind": "quality", "group": group, "corpus": corpus_fp}
    if group == "signal":
        key.update(version=SIGNAL_VERSION, frontend=FRONTEND_VERSION)
    else:
        key.update(version=DNSMOS_VERSION)
    return key


def group_dir(cache_dir: str | Path, corpus_fp: str, group: str) -> Path:
    key = group_key(corpus_fp, group)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"quality-{group}-{digest}"


def _write_tsv(path: Path, cols: tuple[str, ...], rows: dict[str, dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(["id", *cols])
    for uid, r in rows.items():
        w.writerow([uid, *(repr(float(r[c])) for c in cols)])
    atomic_write_text(path, buf.getvalue())


def _read_tsv(path: Path) -> dict[str, dict[str, float]]:
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f, delimiter="\t")
        head = next(r)
        return {row[0]: {c: float(v) for c, v in zip(head[1:], row[1:], strict=True)} for row in r}


def _fill_group(
    items: list[ManifestItem],
    gdir: Path,
    key: dict,
    group: str,
    workers: int,
    progress: bool,
    stats: QualityStats,
) -> dict[str, dict[str, float]]:
    gdir.mkdir(parents=True, exist_ok=True)
    if not (gdir / "key.json").is_file():
        atomic_write_text(gdir / "key.json", json.dumps(key, indent=1))
    cols = GROUPS[group]
    order = sorted(items, key=lambda i: i.id)
    chunks = [order[s : s + CHUNK] for s in range(0, len(order), CHUNK)]
    out: dict[str, dict[str, float]] = {}
    with file_lock(gdir / ".lock"):
        todo = [(k, c) for k, c in enumerate(chunks) if not (gdir / f"part-{k:05d}.tsv").is_file()]
        for k, c in enumerate(chunks):
            if (gdir / f"part-{k:05d}.tsv").is_file():
                part = _read_tsv(gdir / f"part-{k:05d}.tsv")
                if set(part) != {i.id for i in c}:  # cannot happen for one fingerprint; be safe
                    todo.append((k, c))
                    continue
                out.update(part)
        stats.reused[group] = len(out)
        stats.computed[group] = 0
        n_todo = sum(len(c) for _, c in todo)
        bar = progress_bar(progress, n_todo, f"quality scores ({group})", unit="utt")
        pool = None
        try:
            if workers > 1 and n_todo >= 8:
                pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
            for k, c in sorted(todo):
                jobs = [(i.path, i.text, (group,)) for i in c]
                res = pool.map(_score_job, jobs, chunksize=2) if pool else map(_score_job, jobs)
                part = {}
                for it, r in zip(c, res, strict=True):
                    part[it.id] = r
                    bar.update(1)
                _write_tsv(gdir / f"part-{k:05d}.tsv", cols, part)
                out.update(part)
                stats.computed[group] += len(c)
        finally:
            if pool is not None:
                pool.shutdown()
            bar.close()
    return out


def add_transcript_z(items: list[ManifestItem], scores: dict[str, dict[str, float]]) -> None:
    """Derive ``transcript_z``/``transcript_absz`` (see the module docstring) into ``scores``."""
    ok = [i for i in items if scores[i.id].get("speech_s", 0) > 0 and scores[i.id].get("n_phones", 0) > 0]
    z = {i.id: math.nan for i in items}
    if len(ok) >= 3:
        x = np.array([[scores[i.id]["n_phones"], scores[i.id]["n_pauses"]] for i in ok])
        y = np.log([scores[i.id]["speech_s"] for i in ok])
        keep = np.ones(len(ok), bool)
        for _ in range(3):
            coef = np.linalg.lstsq(x[keep], np.exp(y[keep]), rcond=None)[0]
            res = y - np.log(np.maximum(x @ coef, 1e-3))
            med = float(np.median(res[keep]))
            mad = max(1.4826 * float(np.median(np.abs(res[keep] - med))), MIN_MAD)
            new = np.abs(res - med) <= 3 * mad
            if new.sum() < 3 or np.array_equal(new, keep):
                break
            keep = new
        by_spk: dict[str, list[float]] = {}
        for i, r, k in zip(ok, res, keep, strict=True):
            if k:
                by_spk.setdefault(i.speaker, []).append(float(r))
        centre_all = float(np.median(res[keep]))
        centre = {
            sp: float(np.median(v)) if len(v) >= MIN_SPEAKER_ITEMS else centre_all for sp, v in by_spk.items()
        }
        centred = np.array([r - centre.get(i.speaker, centre_all) for i, r in zip(ok, res, strict=True)])
        scale = max(1.4826 * float(np.median(np.abs(centred[keep]))), MIN_MAD)
        z.update({i.id: float(c / scale) for i, c in zip(ok, centred, strict=True)})
    for i in items:
        scores[i.id]["transcript_z"] = z[i.id]
        scores[i.id]["transcript_absz"] = abs(z[i.id])


def score_corpus(
    items: list[ManifestItem],
    cache_dir: str | Path,
    *,
    groups: tuple[str, ...] | list[str] = ("signal", "dnsmos"),
    workers: int = 1,
    progress: bool = False,
) -> QualityTable:
    """Quality scores of every item (cached per corpus fingerprint and scorer group)."""
    t0 = time.perf_counter()
    fp = fingerprint(items)
    stats = QualityStats()
    scores: dict[str, dict[str, float]] = {i.id: {} for i in items}
    groups = tuple(g for g in GROUPS if g in set(groups))
    for g in groups:
        gdir = group_dir(cache_dir, fp, g)
        stats.dirs[g] = str(gdir)
        for uid, r in _fill_group(items, gdir, group_key(fp, g), g, workers, progress, stats).items():
            scores[uid].update(r)
    if "signal" in groups:
        add_transcript_z(items, scores)
    stats.seconds = time.perf_counter() - t0
    return QualityTable(fp, groups, scores, stats)


def groups_for(names) -> tuple[str, ...]:
    """The scorer groups needed for these score names."""
    need = {SCORES[n][0] for n in names}
    return tuple(g for g in GROUPS if g in need)


def attach(items: list[ManifestItem], table: QualityTable) -> None:
    """Put each item's scores into ``item.extras`` (``extras[name] = value``)."""
    for i in items:
        i.extras.update(table.scores.get(i.id, {}))
