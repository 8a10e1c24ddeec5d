"""The built-in offline corpus: generated sentences synthesised with Open JTalk's HTS "mei" voice.

``build_builtin_corpus(out_dir, hours, seed, sample_rate, speakers)`` writes ``out_dir/esd.list``
(``wavs/uttNNNNNN.wav|speaker|JP|text``), the wavs (16-bit PCM at ``sample_rate``), ``utterances.tsv``
(a side table: id, speaker, pitch shift, speed, text) and a stamp ``builtin.json``.

- Sentence ``i`` comes from ``sentences.sentence(seed, i)`` and is spoken by speaker ``i % speakers``.
- Synthesis uses the very full-context labels ``model.text.g2p`` reads phones and tones from
  (``segment_labels``): each speakable run between punctuation marks is synthesised from its labels
  (``pyopenjtalk.synthesize``, 48 kHz), its edge silence trimmed, and the runs are joined with pauses
  whose length depends on the mark (``PAUSES``, scaled by speaker speed and a seeded +-15 % jitter).
  So the audio says exactly the phones of its transcript.
- "Speakers" are the one HTS voice with a pitch shift (``half_tone``) and speaking rate (``speed``)
  per speaker (``SPEAKERS``): enough variety for the speaker embedding to have something to learn.
- Each utterance is peak-normalised to ``PEAK`` and resampled to ``sample_rate`` (torchaudio).
- Utterance ``i`` depends only on (seed, i, speaker settings, sample rate), so the corpus is the shortest
  prefix 0..n-1 whose total duration reaches ``hours``, byte-identical for the same arguments whatever the
  number of workers, and a larger corpus extends a smaller one.
- Reuse: if ``builtin.json`` matches the arguments the corpus is returned untouched; if only the hours
  differ, wavs already there are kept and only missing ones are synthesised. Builds are serialised with
  a file lock, so trials starting together build it once.
- Degradation (``degrade`` > 0, ``degrade.py``): a seeded fraction of the utterances is spoiled in known
  ways (noise, reverberation, clipping, a wrong transcript). The clean wavs stay in ``wavs/`` (so the
  undegraded items are byte-identical to the clean corpus of the same seed); the spoiled audio goes to
  ``degraded/`` and ``esd.list`` points there (or carries the wrong text). ``degradations.tsv`` lists
  ``id, kind, parameter``; ``utterances.tsv`` keeps what was actually spoken.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyopenjtalk
import soundfile as sf

from model.data.builtin.degrade import (
    DEGRADE_VERSION,
    Degradation,
    choose,
    degrade_audio,
    to_pcm16,
    wrong_transcript,
)
from model.data.builtin.sentences import sentence
from model.data.files import atomic_write_bytes, atomic_write_text, file_lock, progress_bar
from model.text.g2p import segment_labels
from model.text.normalize import normalize_text

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SOURCE_RATE = 48000
PEAK = 0.9
EDGE_S = 0.12  # silence before the first and after the last run
PAUSES = {",": 0.25, ".": 0.45, "!": 0.4, "?": 0.4, "…": 0.5, "-": 0.3, " ": 0.15}
# (name, half_tone, speed): one HTS voice made into several "speakers"
SPEAKERS = [
    ("mei_a", 0.0, 1.00),
    ("mei_b", 3.0, 1.08),
    ("mei_c", -3.0, 0.93),
    ("mei_d", 5.0, 1.03),
    ("mei_e", -5.0, 0.97),
    ("mei_f", 1.5, 0.88),
    ("mei_g", -1.5, 1.15),
    ("mei_h", 7.0, 1.00),
]
_EST_SECONDS = 3.6  # rough mean utterance length, only to size the first round of work


@dataclass
class BuiltinCorpus:
    dir: Path
    esd_list: Path
    n_items: int
    seconds: float
    synthesized: int  # utterances synthesised by this call (0 when reused)
    synth_seconds: float  # wall time spent synthesising
    beyond: int = 0  # of those, utterances past the target (kept on disk for a larger build, not in esd.list)

    @property
    def hours(self) -> float:
        return self.seconds / 3600


def _trim(x: np.ndarray, sr: int) -> np.ndarray:
    level = 0.02 * float(np.max(np.abs(x))) if x.size else 0.0
    idx = np.flatnonzero(np.abs(x) > level)
    if idx.size == 0:
        return x[:0]
    margin = int(0.01 * sr)
    return x[max(0, idx[0] - margin) : idx[-1] + margin]


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(x), sr_in, sr_out).numpy()


def synthesize(text: str, speaker: int, sample_rate: int, rng: random.Random) -> np.ndarray:
    """One utterance as int16 at ``sample_rate`` (see the module docstring)."""
    _, half_tone, speed = SPEAKERS[speaker % len(SPEAKERS)]
    parts: list[np.ndarray] = []
    pending = 0.0  # pause seconds waiting for the next speech run
    for seg, labels in segment_labels(normalize_text(text)):
        if not labels:
            if seg in PAUSES:
                pending += PAUSES[seg] / speed * rng.uniform(0.85, 1.15)
            continue
        wav, sr = pyopenjtalk.synthesize(labels, speed=speed, half_tone=half_tone)
        wav = _trim(np.asarray(wav, dtype=np.float32) / 32768.0, sr)
        if parts and pending > 0:
            parts.append(np.zeros(int(round(pending * SOURCE_RATE)), np.float32))
        pending = 0.0
        parts.append(wav)
    if not parts:
        raise ValueError(f"nothing to synthesise in {text!r}")
    edge = np.zeros(int(EDGE_S * SOURCE_RATE), np.float32)
    x = np.concatenate([edge, *parts, edge])
    x = _resample(x, SOURCE_RATE, sample_rate)
    peak = float(np.max(np.abs(x)))
    if peak > 0:
        x = x * (PEAK / peak)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def _job(args: tuple[int, int, int, int]) -> tuple[int, str, int, bytes, float]:
    """Worker: synthesise utterance ``i``; returns (i, text, speaker, wav bytes, seconds)."""
    seed, i, sample_rate, n_speakers = args
    text = sentence(seed, i)
    spk = i % n_speakers
    pcm = synthesize(text, spk, sample_rate, random.Random(f"vits-scaling-synth:{seed}:{i}"))
    buf = io.BytesIO()
    sf.write(buf, pcm, sample_rate, subtype="PCM_16", format="WAV")
    return i, text, spk, buf.getvalue(), len(pcm) / sample_rate


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def utt_id(i: int) -> str:
    return f"utt{i:06d}"


def build_builtin_corpus(
    out_dir: str | Path,
    hours: float,
    seed: int = 0,
    sample_rate: int = 22050,
    speakers: int = 4,
    workers: int | None = None,
    progress: bool = True,
    degrade: float = 0.0,
    degrade_seed: int = 0,
) -> BuiltinCorpus:
    """Build (or reuse) the built-in corpus of at least ``hours`` of audio in ``out_dir``; with
    ``degrade`` > 0 that fraction of utterances is degraded (seeded by ``degrade_seed``)."""
    if not hours > 0:
        raise ValueError(f"builtin corpus hours must be > 0, got {hours}")
    if not 1 <= speakers <= len(SPEAKERS):
        raise ValueError(f"builtin corpus speakers must be 1..{len(SPEAKERS)}, got {speakers}")
    if not 0.0 <= degrade <= 1.0:
        raise ValueError(f"builtin corpus degrade fraction must be in [0, 1], got {degrade}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "sample_rate": int(sample_rate),
        "speakers": int(speakers),
        "speaker_settings": [list(s) for s in SPEAKERS[:speakers]],
    }
    with file_lock(out / ".lock"):
        stamp = out / "builtin.json"
        if stamp.is_file() and (out / "esd.list").is_file():
            old = json.loads(stamp.read_text())

            same_degrade = old.get("degrade", 0.0) == degrade and (
                not degrade
                or (old.get("degrade_seed"), old.get("degrade_version")) == (degrade_seed, DEGRADE_VERSION)
            )
            if {k: old.get(k) for k in params} == params and old.get("hours") == hours and same_degrade:
                return BuiltinCorpus(out, out / "esd.list", old["n_items"], old["seconds"], 0, 0.0)
        elif (out / "esd.list").is_file():
            raise FileExistsError(f"{out}: has an esd.list that is not a built-in corpus; choose another dir")
        return _build(out, hours, params, workers, progress, degrade, degrade_seed)


def _build(
    out: Path,
    hours: float,
    params: dict,
    workers: int | None,
    progress: bool,
    degrade: float = 0.0,
    degrade_seed: int = 0,
) -> BuiltinCorpus:
    wavs = out / "wavs"
    wavs.mkdir(exist_ok=True)
    pfile = out / "params.json"
    if not (pfile.is_file() and json.loads(pfile.read_text()) == params):
        for f in wavs.glob("utt*.wav"):  # made with other settings: not reusable
            f.unlink()
        atomic_write_text(pfile, json.dumps(params, indent=1))
    seed, sr, n_spk = params["seed"], params["sample_rate"], params["speakers"]
    target = hours * 3600.0
    workers = workers or min(os.cpu_count() or 1, 8)

    rows: list[tuple[str, str, int, float]] = []  # (id, text, speaker, seconds)
    total = 0.0
    synthesized = 0
    made: list[int] = []  # indices synthesised by this call
    t0 = time.perf_counter()
    bar = progress_bar(progress, target, "synthesising built-in corpus", unit="s of audio")
    pool = None

    try:
        i = 0
        while total < target:
            # next round: enough utterances (by a rough estimate) to reach the target
            n = max(8, math.ceil((target - total) / _EST_SECONDS * 1.1))
            todo, cached = [], {}
            for k in range(i, i + n):
                f = wavs / f"{utt_id(k)}.wav"
                if f.is_file():
                    cached[k] = sf.info(str(f)).frames / sr
                else:
                    todo.append((seed, k, sr, n_spk))
            bar.update(sum(cached.values()))
            if todo and workers > 1 and len(todo) >= 4 and pool is None:
                pool = get_context("spawn").Pool(workers, initializer=_init_worker)
            results = pool.imap(_job, todo, chunksize=2) if pool is not None else map(_job, todo)
            done: dict[int, float] = dict(cached)
            for k, _text, _spk, data, secs in results:
                atomic_write_bytes(wavs / f"{utt_id(k)}.wav", data)
                done[k] = secs
                synthesized += 1
                made.append(k)
                bar.update(secs)
            for k in range(i, i + n):
                if total >= target:
                    break
                secs = done[k]
                rows.append((utt_id(k), sentence(seed, k), k % n_spk, secs))
                total += secs
            i += n
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        bar.close()
    synth_s = time.perf_counter() - t0
    # utterances beyond the prefix (made by the last round) are kept on disk for a larger build
    degraded = _degrade(out, rows, seed, sr, degrade, degrade_seed)
    lines = [
        f"wavs/{uid}.wav|{SPEAKERS[spk][0]}|JP|{text}"
        if uid not in degraded
        else f"{degraded[uid].path}|{SPEAKERS[spk][0]}|JP|{degraded[uid].text or text}"
        for uid, text, spk, _ in rows
    ]
    atomic_write_text(out / "esd.list", "\n".join(lines) + "\n")
    side = ["id\tspeaker\thalf_tone\tspeed\tseconds\ttext"] + [
        f"{uid}\t{SPEAKERS[spk][0]}\t{SPEAKERS[spk][1]}\t{SPEAKERS[spk][2]}\t{secs:.3f}\t{text}"
        for uid, text, spk, secs in rows
    ]
    atomic_write_text(out / "utterances.tsv", "\n".join(side) + "\n")
    stamp = dict(params, hours=hours, n_items=len(rows), seconds=round(total, 3))
    if degrade:
        stamp.update(
            degrade=degrade,
            degrade_seed=degrade_seed,
            degrade_version=DEGRADE_VERSION,
            degraded=len(degraded),
        )
    atomic_write_text(out / "builtin.json", json.dumps(stamp, indent=1))
    log.info(
        "built-in corpus: %d utterances, %.3f h, %d synthesised in %.1f s",
        len(rows),
        total / 3600,
        synthesized,
        synth_s,
    )
    beyond = sum(1 for k in made if k >= len(rows))
    return BuiltinCorpus(out, out / "esd.list", len(rows), total, synthesized, synth_s, beyond)


def _degrade(out: Path, rows: list, seed: int, sr: int, fraction: float, dseed: int) -> dict:
    """Write the degraded audio and ``degradations.tsv``; ``{id: Degradation}`` (with ``.path`` set)."""
    import shutil

    ddir = out / "degraded"
    if ddir.exists():
        shutil.rmtree(ddir)
    if not fraction:
        (out / "degradations.tsv").unlink(missing_ok=True)
        return {}

    ddir.mkdir()
    texts = {uid: text for uid, text, _, _ in rows}
    result: dict[str, Degradation] = {}
    for uid, kind in choose(list(texts), fraction, dseed).items():
        if kind == "wrong_transcript":
            donor, param = wrong_transcript(texts[uid], seed, dseed, uid)
            d = Degradation(uid, kind, param, donor, f"wavs/{uid}.wav")
        else:
            x, _ = sf.read(str(out / "wavs" / f"{uid}.wav"), dtype="float32")
            y, param = degrade_audio(x.astype(np.float64), sr, kind, dseed, uid)
            buf = io.BytesIO()
            sf.write(buf, to_pcm16(y), sr, subtype="PCM_16", format="WAV")
            atomic_write_bytes(ddir / f"{uid}.wav", buf.getvalue())
            d = Degradation(uid, kind, param, None, f"degraded/{uid}.wav")
        result[uid] = d
    side = ["id\tkind\tparameter"] + [f"{d.id}\t{d.kind}\t{d.parameter}" for d in result.values()]
    atomic_write_text(out / "degradations.tsv", "\n".join(side) + "\n")
    return result
