"""Corpus readers: Style-Bert-VITS2 ``esd.list``, JSUT and JVS, all into one list of ``RawItem``.

Readers only parse listings; they never open audio (``validate.py`` does) and never write to the corpus.
Every item remembers where it came from (``source`` = ``file:line``) so errors can name it.

Layouts:
- ``esd.list``: ``wav_path|speaker|language|text`` per line (extra ``|`` fields of SBV2's cleaned lists are
  ignored). Relative paths are looked up beside the list, then in ``wavs/`` beside it, then from the
  current directory. Language must be ``JP``/``JA``.
- JSUT: ``ROOT/<subset>/wav/<ID>.wav`` + ``ROOT/<subset>/transcript_utf8.txt`` (``ID:text``); all subsets
  found (``basic5000``, ...), speaker ``jsut``.
- JVS: ``ROOT/jvsNNN/{parallel100,nonpara30}/wav24kHz16bit/<ID>.wav`` + ``transcripts_utf8.txt`` in each
  subset folder; speaker ``jvsNNN``, id ``jvsNNN_<ID>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from model.textfile import read_lines

FORMATS = ("esd", "jsut", "jvs")
JVS_SUBSETS = ("parallel100", "nonpara30")


@dataclass
class RawItem:
    id: str
    speaker: str
    text: str
    path: str  # absolute path of the audio (may not exist: validation reports it)
    source: str  # "file:line" of the listing entry
    language: str = "JP"


class CorpusError(ValueError):
    """A corpus listing cannot be read at all (wrong layout, malformed line in strict mode)."""


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_file():
        return "esd"
    if not p.is_dir():
        raise CorpusError(f"{p}: corpus not found (expected a directory or an esd.list file)")
    if (p / "esd.list").is_file():
        return "esd"
    if any(re.fullmatch(r"jvs\d{3}", c.name) and c.is_dir() for c in p.iterdir()):
        return "jvs"
    if (p / "transcript_utf8.txt").is_file() or any(p.glob("*/transcript_utf8.txt")):
        return "jsut"
    raise CorpusError(
        f"{p}: cannot tell the corpus layout (no esd.list, no jvsNNN/ folders, no */transcript_utf8.txt)"
    )


def read_corpus(path: str | Path, fmt: str = "auto", strict: bool = False) -> tuple[list[RawItem], list]:
    """Parse a corpus listing. Returns (items, problems) where problems are ``(source, id, reason)``
    for lines that cannot be parsed (raised instead in strict mode)."""
    fmt = detect_format(path) if fmt in ("auto", "", None) else fmt
    if fmt == "esd":
        return read_esd_list(path, strict=strict)
    if fmt == "jsut":
        return read_jsut(path, strict=strict)
    if fmt == "jvs":
        return read_jvs(path, strict=strict)
    raise CorpusError(f"unknown corpus format {fmt!r} (allowed: auto, {', '.join(FORMATS)}, builtin)")


def _problem(problems: list, strict: bool, source: str, id_: str, reason: str) -> None:
    if strict:
        raise CorpusError(f"{source}: {reason}")
    problems.append((source, id_, reason))


def _resolve(list_dir: Path, rel: str) -> Path:
    p = Path(rel)
    if p.is_absolute():
        return p
    for cand in (list_dir / p, list_dir / "wavs" / p, Path.cwd() / p):
        if cand.exists():
            return cand.resolve()
    return (list_dir / p).resolve()


def read_esd_list(path: str | Path, strict: bool = False) -> tuple[list[RawItem], list]:
    p = Path(path)
    if p.is_dir():
        p = p / "esd.list"
    if not p.is_file():
        raise CorpusError(f"{p}: esd.list not found")
    items, problems = [], []
    for n, line, bad in read_lines(p):
        src = f"{p}:{n}"
        if line is None:
            _problem(problems, strict, src, "", str(bad))
            continue
        if not line.strip():
            continue
        parts = line.split("|", 3)  # the text is the rest of the line: a '|' inside it is kept
        if len(parts) < 4:
            _problem(problems, strict, src, "", f"expected wav_path|speaker|language|text, got {line!r}")
            continue
        wav, spk, lang, text = (x.strip() for x in parts)
        id_ = Path(wav).stem
        if not wav or not spk:
            _problem(problems, strict, src, id_, "empty wav path or speaker")
            continue
        if lang.upper() not in ("JP", "JA"):
            _problem(problems, strict, src, id_, _language_problem(lang, text))
            continue
        items.append(RawItem(id_, spk, text, str(_resolve(p.parent, wav)), src))
    return items, problems


LANGUAGE_CODES = ("JP", "JA", "EN", "ZH")  # what Style-Bert-VITS2 lists carry in the language field


def _language_problem(lang: str, rest: str) -> str:
    """Why the language field is wrong; a '|' inside the wav path or speaker name shifts every field right,
    so when a language code turns up later in the line, say that instead of 'unsupported language'."""
    later = [f.strip() for f in rest.split("|")[:-1]]
    if lang.upper() not in LANGUAGE_CODES and any(f.upper() in LANGUAGE_CODES for f in later):
        return (
            f"field 3 should be the language but is {lang!r}, and a language code comes later in the line: "
            "the wav path or the speaker name contains '|', which separates the fields "
            "(expected wav_path|speaker|language|text)"
        )
    if lang.upper() in LANGUAGE_CODES:
        return f"unsupported language {lang!r} (this project trains Japanese: JP)"
    return f"field 3 should be the language (JP) but is {lang!r} (expected wav_path|speaker|language|text)"


def _read_transcript(path: Path, strict: bool, problems: list) -> list[tuple[str, str, str]]:
    out = []
    for n, line, bad in read_lines(path, bom=True):
        src = f"{path}:{n}"
        if line is None:
            _problem(problems, strict, src, "", str(bad))
            continue
        if not line.strip():
            continue
        if ":" not in line:
            _problem(problems, strict, src, "", f"expected ID:text, got {line!r}")
            continue
        id_, text = line.split(":", 1)
        out.append((id_.strip(), text.strip(), src))
    return out


def read_jsut(root: str | Path, strict: bool = False) -> tuple[list[RawItem], list]:
    root = Path(root)
    subsets = (
        [root]
        if (root / "transcript_utf8.txt").is_file()
        else sorted(d for d in root.iterdir() if (d / "transcript_utf8.txt").is_file())
    )
    if not subsets:
        raise CorpusError(f"{root}: no JSUT subset (*/transcript_utf8.txt) found")
    items, problems = [], []
    for sub in subsets:
        for id_, text, src in _read_transcript(sub / "transcript_utf8.txt", strict, problems):
            items.append(RawItem(id_, "jsut", text, str((sub / "wav" / f"{id_}.wav").resolve()), src))
    return items, problems


def read_jvs(root: str | Path, strict: bool = False) -> tuple[list[RawItem], list]:
    root = Path(root)
    speakers = sorted(d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"jvs\d{3}", d.name))
    if not speakers:
        raise CorpusError(f"{root}: no jvsNNN/ speaker folders found")
    items, problems = [], []
    for spk in speakers:
        for sub in JVS_SUBSETS:
            tr = spk / sub / "transcripts_utf8.txt"
            if not tr.is_file():
                continue
            for id_, text, src in _read_transcript(tr, strict, problems):
                wav = (spk / sub / "wav24kHz16bit" / f"{id_}.wav").resolve()
                items.append(RawItem(f"{spk.name}_{id_}", spk.name, text, str(wav), src))
    return items, problems
