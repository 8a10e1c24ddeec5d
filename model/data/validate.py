"""Validation of a corpus listing into a manifest, with a report of everything dropped and why.

Checks per item (``reason`` codes in the report): ``bad_line`` (listing line not parseable),
``duplicate_id``, ``empty_text`` (nothing speakable left after normalisation), ``unparseable_text`` (g2p
failed, gave no phones, or gave an unknown phone), ``missing_audio``, ``unreadable_audio``, ``silent``
(peak below ``SILENCE_PEAK``), ``clipped`` (more than ``CLIP_FRACTION`` of samples at or above
``CLIP_LEVEL``), ``too_short`` / ``too_long`` (outside the duration bounds), ``sample_rate_mismatch``
(differs from the corpus's rate: the given one, else the most common one).

Strict mode raises ``DataValidationError`` naming the first bad item's file and line (and how many others
there are); lenient mode drops the bad items and the caller writes the report (``ValidationReport.write``).
The corpus itself is only read.
"""

from __future__ import annotations

import collections
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf

from model.data.corpus import RawItem
from model.data.files import atomic_write_text
from model.data.manifest import ManifestItem

CLIP_LEVEL = 0.999
CLIP_FRACTION = 0.001
SILENCE_PEAK = 1e-3  # -60 dBFS


class DataValidationError(ValueError):
    """Strict validation found a bad item; the message starts with ``file:line``."""


@dataclass
class Dropped:
    source: str
    id: str
    path: str
    reason: str  # "code: detail"

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@dataclass
class ValidationReport:
    total: int = 0
    kept: int = 0
    expected_sample_rate: int | None = None
    dropped: list[Dropped] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(d.code for d in self.dropped))

    def write(self, path: str | Path) -> None:
        rows = ["source\tid\tpath\treason"] + [
            f"{d.source}\t{d.id}\t{d.path}\t{d.reason}" for d in self.dropped
        ]
        atomic_write_text(path, "\n".join(rows) + "\n")

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": len(self.dropped),
            "by_reason": self.counts(),
            "expected_sample_rate": self.expected_sample_rate,
        }


def check_audio(path: str) -> dict:
    """Read one file: {'ok', 'reason', 'sample_rate', 'duration', 'size', 'peak', 'clip'}."""
    if not os.path.isfile(path):
        return {"ok": False, "reason": f"missing_audio: {path} does not exist"}
    try:
        x, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - libsndfile raises several kinds
        return {"ok": False, "reason": f"unreadable_audio: {type(e).__name__}: {e}"}
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    clip = float(np.mean(np.abs(x) >= CLIP_LEVEL)) if x.size else 0.0
    return {
        "ok": True,
        "sample_rate": int(sr),
        "duration": x.size / sr,
        "size": os.path.getsize(path),
        "peak": peak,
        "clip": clip,
    }


def check_text(text: str) -> str | None:
    """None if the text gives phones, else the reason."""
    from model.text.g2p import g2p
    from model.text.symbols import JA_PHONES, UNK

    if not text.strip():
        return "empty_text: transcript is empty"
    try:
        r = g2p(text)
    except Exception as e:  # noqa: BLE001 - report, never crash on one bad line
        return f"unparseable_text: g2p failed ({type(e).__name__}: {e})"
    if not r.text:
        return f"empty_text: nothing speakable in {text!r}"
    if UNK in r.phones:
        return f"unparseable_text: unknown phone in {text!r}"
    if not any(p in JA_PHONES for p in r.phones):
        return f"unparseable_text: no phones for {text!r}"
    return None


def _audio_results(paths: list[str], workers: int) -> list[dict]:
    if workers <= 1 or len(paths) < 64:
        return [check_audio(p) for p in paths]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as ex:
        return list(ex.map(check_audio, paths, chunksize=32))


def validate(
    items: list[RawItem],
    parse_problems: list | None = None,
    *,
    min_duration: float = 0.3,
    max_duration: float = 15.0,
    expected_sample_rate: int | None = None,
    strict: bool = False,
    workers: int = 1,
    progress=None,
) -> tuple[list[ManifestItem], ValidationReport]:
    """Check every item; returns the manifest of good items and the report of dropped ones."""
    report = ValidationReport(total=len(items) + len(parse_problems or []))
    dropped = report.dropped
    for src, id_, reason in parse_problems or []:
        dropped.append(Dropped(src, id_, "", f"bad_line: {reason}"))

    audio = _audio_results([it.path for it in items], workers)
    if progress is not None:
        progress(len(items))
    rates = collections.Counter(a["sample_rate"] for a in audio if a["ok"])
    expected = expected_sample_rate or (rates.most_common(1)[0][0] if rates else None)
    report.expected_sample_rate = expected

    kept: list[ManifestItem] = []
    seen: set[str] = set()
    for it, a in zip(items, audio, strict=True):
        reason = None
        if it.id in seen:
            reason = f"duplicate_id: {it.id} listed twice"
        if reason is None:
            reason = check_text(it.text)
        if reason is None and not a["ok"]:
            reason = a["reason"]
        if reason is None:
            if a["peak"] < SILENCE_PEAK:
                reason = f"silent: peak {a['peak']:.2e} < {SILENCE_PEAK:g}"
            elif a["clip"] > CLIP_FRACTION:
                reason = f"clipped: {a['clip']:.2%} of samples at full scale (> {CLIP_FRACTION:.1%})"
            elif a["duration"] < min_duration:
                reason = f"too_short: {a['duration']:.2f} s < {min_duration} s"
            elif a["duration"] > max_duration:
                reason = f"too_long: {a['duration']:.2f} s > {max_duration} s"
            elif expected is not None and a["sample_rate"] != expected:
                reason = f"sample_rate_mismatch: {a['sample_rate']} Hz, corpus is {expected} Hz"
        if reason is not None:
            dropped.append(Dropped(it.source, it.id, it.path, reason))
            continue
        seen.add(it.id)
        kept.append(
            ManifestItem(
                id=it.id,
                speaker=it.speaker,
                text=it.text,
                path=it.path,
                duration=round(a["duration"], 6),
                sample_rate=a["sample_rate"],
                source=it.source,
                size=a["size"],
            )
        )
    report.kept = len(kept)
    if strict and dropped:
        first = dropped[0]
        more = f" (and {len(dropped) - 1} more problems)" if len(dropped) > 1 else ""
        raise DataValidationError(f"{first.source}: {first.id or '?'}: {first.reason}{more}")
    return kept, report
