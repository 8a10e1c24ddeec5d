"""The manifest: one row per usable utterance (id, speaker, text, path, duration, sample rate)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from model.data.files import atomic_write_text


@dataclass
class ManifestItem:
    id: str
    speaker: str
    text: str
    path: str
    duration: float  # seconds, of the source file
    sample_rate: int  # of the source file
    source: str = ""  # "file:line" of the listing entry
    size: int = 0  # bytes of the audio file (part of the corpus fingerprint)
    extras: dict = field(
        default_factory=dict
    )  # per-utterance annotations (e.g. quality scores, degradations)


def save_manifest(items: list[ManifestItem], path: str | Path) -> None:
    atomic_write_text(path, "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items))


def load_manifest(path: str | Path) -> list[ManifestItem]:
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(ManifestItem(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{path}:{n}: bad manifest row ({e})") from None
    return out


def fingerprint(items: list[ManifestItem]) -> str:
    """Content digest of a manifest: ids, speakers, texts, audio file names, sizes, rates and durations.

    Independent of where the corpus lives and of file times, so a corpus rebuilt byte for byte (the
    built-in one) or copied elsewhere keeps its feature cache.
    """
    h = hashlib.sha256()
    for i in sorted(items, key=lambda x: x.id):
        row = [i.id, i.speaker, i.text, Path(i.path).name, i.size, i.sample_rate, round(i.duration, 6)]
        h.update(json.dumps(row, ensure_ascii=False).encode())
    return h.hexdigest()[:16]
