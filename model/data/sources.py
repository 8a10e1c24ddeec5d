"""Where a corpus comes from and what is in it: resolve ``data.corpus`` (or build the built-in corpus),
read and validate it into a cached manifest, and map its speakers to ids.

- ``resolve_corpus``: ``data.corpus == "builtin"`` builds (or reuses) the built-in corpus under
  ``data.corpus_dir`` (``builtin_dir``); otherwise a directory or ``esd.list`` in ``esd``/``jsut``/``jvs``
  layout (``corpus.py``).
- ``load_validated_manifest``: validation (``validate.py``) is cached under
  ``<cache_dir>/manifests/<digest of the listing and the checks>/`` (manifest, ``dropped.tsv``, report),
  so later trials skip the audio scan. The corpus itself is never written to.
- ``data_section(cfg)``: every function here takes a ``DataConfig`` or a ``TrialConfig``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from model.data.builtin import build_builtin_corpus
from model.data.corpus import detect_format, read_corpus
from model.data.files import atomic_write_text, file_lock
from model.data.manifest import ManifestItem, load_manifest, save_manifest
from model.data.validate import DataValidationError, Dropped, ValidationReport, validate
from model.text.g2p import FRONTEND_VERSION

VALIDATION_VERSION = 1
KNOWN_RATES = {"jsut": 48000, "jvs": 24000}


@dataclass
class CorpusInfo:
    path: Path  # directory or esd.list that was read
    format: str
    builtin: dict | None = None  # stamp of the built-in corpus when it was used


def data_section(cfg):
    """The ``DataConfig`` of a ``TrialConfig``, or the argument itself when it is one already."""
    return cfg.data if hasattr(cfg, "data") and hasattr(cfg, "model") else cfg


def default_workers(d) -> int:
    """Processes for validation, scoring and features: ``data.prepare_workers``, else up to 4 cores."""
    return d.prepare_workers or max(1, min(4, os.cpu_count() or 1))


def builtin_dir(d) -> Path:
    """Where ``data.corpus: builtin`` is built: one directory per (hours, seed, rate, speakers, degradation)."""
    degrade = f"-degrade{d.builtin_degrade:g}-dseed{d.builtin_degrade_seed}" if d.builtin_degrade else ""
    return Path(d.corpus_dir) / (
        f"builtin-{d.builtin_hours:g}h-seed{d.builtin_seed}-{d.sampling_rate}hz-{d.builtin_speakers}spk"
        + degrade
    )


def resolve_corpus(cfg, *, progress: bool = False, workers: int | None = None) -> CorpusInfo:
    """Find (or build, for ``builtin``) the corpus a config names."""
    d = data_section(cfg)
    if d.corpus == "builtin" or d.corpus_format == "builtin":
        out = builtin_dir(d) if d.corpus == "builtin" else Path(d.corpus)
        b = build_builtin_corpus(
            out,
            d.builtin_hours,
            seed=d.builtin_seed,
            sample_rate=d.sampling_rate,
            speakers=d.builtin_speakers,
            workers=workers or default_workers(d),
            progress=progress,
            degrade=d.builtin_degrade,
            degrade_seed=d.builtin_degrade_seed,
        )
        stamp = json.loads((b.dir / "builtin.json").read_text())
        return CorpusInfo(b.esd_list, "esd", stamp)
    p = Path(d.corpus)
    if not p.exists():
        raise FileNotFoundError(f"data.corpus: {p} does not exist (use 'builtin' for the offline corpus)")
    fmt = detect_format(p) if d.corpus_format == "auto" else d.corpus_format
    return CorpusInfo(p, fmt)


def _listing_digest(info: CorpusInfo, raw, problems, d) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            [
                VALIDATION_VERSION,
                FRONTEND_VERSION,
                str(Path(info.path).resolve()),
                info.format,
                d.min_duration_s,
                d.max_duration_s,
                d.sampling_rate if info.builtin else None,
            ]
        ).encode()
    )
    for r in raw:
        try:
            st = os.stat(r.path)
            sig = (st.st_size, st.st_mtime_ns)
        except OSError:
            sig = None
        h.update(json.dumps([r.id, r.speaker, r.text, r.path, r.source, sig], ensure_ascii=False).encode())
    h.update(json.dumps(problems, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def load_validated_manifest(
    cfg, *, progress: bool = False, workers: int | None = None
) -> tuple[CorpusInfo, list[ManifestItem], ValidationReport, Path]:
    """Resolve, read and validate the corpus (cached); strict mode raises on the first bad item."""
    d = data_section(cfg)
    info = resolve_corpus(d, progress=progress, workers=workers)
    raw, problems = read_corpus(info.path, info.format, strict=d.strict)
    name = Path(info.path).parent.name if Path(info.path).is_file() else Path(info.path).name
    mdir = Path(d.cache_dir) / "manifests" / f"{name}-{_listing_digest(info, raw, problems, d)}"
    with file_lock(Path(d.cache_dir) / "manifests" / f".{mdir.name}.lock"):
        if (mdir / "report.json").is_file():
            rep = json.loads((mdir / "report.json").read_text(encoding="utf-8"))
            report = ValidationReport(
                rep["total"],
                rep["kept"],
                rep["expected_sample_rate"],
                [Dropped(**x) for x in rep["dropped_items"]],
            )
            items = load_manifest(mdir / "manifest.jsonl")
        else:
            expected = (info.builtin or {}).get("sample_rate") or KNOWN_RATES.get(info.format)
            items, report = validate(
                raw,
                problems,
                min_duration=d.min_duration_s,
                max_duration=d.max_duration_s,
                expected_sample_rate=expected,
                strict=False,
                workers=workers or default_workers(d),
            )
            mdir.mkdir(parents=True, exist_ok=True)
            save_manifest(items, mdir / "manifest.jsonl")
            report.write(mdir / "dropped.tsv")
            rep = dict(report.to_dict(), dropped_items=[x.__dict__ for x in report.dropped])
            atomic_write_text(mdir / "report.json", json.dumps(rep, indent=1, ensure_ascii=False))
    if d.strict and report.dropped:
        first = report.dropped[0]
        more = (
            f" (and {len(report.dropped) - 1} more; see {mdir / 'dropped.tsv'})"
            if len(report.dropped) > 1
            else ""
        )
        raise DataValidationError(f"{first.source}: {first.id or '?'}: {first.reason}{more}")
    if not items:
        raise DataValidationError(f"{info.path}: no usable utterances (see {mdir / 'dropped.tsv'})")
    return info, items, report, mdir


def speaker_map(items: list[ManifestItem], d) -> dict[str, int]:
    """Speaker name -> id: ``data.spk2id`` when given (it must cover every speaker), else sorted order."""
    speakers = sorted({i.speaker for i in items})
    if d.spk2id:
        missing = [s for s in speakers if s not in d.spk2id]
        if missing:
            raise ValueError(f"data.spk2id has no id for speaker(s) {missing[:5]} of the corpus")
        spk2id = dict(d.spk2id)
    else:
        spk2id = {s: k for k, s in enumerate(speakers)}
    top = max(spk2id.values()) + 1
    if top > d.n_speakers:
        raise ValueError(f"the corpus needs {top} speaker ids but data.n_speakers is {d.n_speakers}")
    return spk2id
