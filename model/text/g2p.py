"""Japanese g2p with accent: phones, a tone (0 low / 1 high) per phone, and ``word2ph``.

Pipeline for one utterance:

1. ``normalize_text`` (see ``normalize.py``).
2. The normalised text is cut at punctuation and spaces. Each punctuation mark becomes its own symbol and
   a space becomes ``SP`` (tone 0, one phone for one character). Each run of speakable text goes through
   Open JTalk (``pyopenjtalk.run_frontend`` -> ``make_label``); a run followed by ``?`` is analysed with
   the question mark so that its labels carry the interrogative flag (used by ``segment_labels`` for
   synthesis; tones are lexical and do not depend on it).
3. Phones are read from the full-context labels (``sil`` dropped, ``pau`` -> ``SP``, devoiced vowels
   lower-cased). The tone of a phone comes from the label's A field (``a2``: mora position in the accent
   phrase) and F field (``f2``: accent type = mora of the accent nucleus, 0 = flat) with the Tokyo rule:
   flat (``f2 = 0``): mora 1 low, later morae high; head-high (``f2 = 1``): mora 1 high, later low;
   otherwise mora 1 low, morae 2..f2 high, morae after the nucleus low.
4. ``word2ph``: the labels' morae are grouped into Open JTalk's words (NJD nodes, ``mora_size`` each),
   each word's surface is matched to the characters of the text, and the word's whole morae are spread
   over its characters (earlier characters first; a character may get 0 phones, e.g. a small kana).
   If the match fails (Open JTalk rewrote the surface in a way we cannot align), the run's phones are
   spread evenly over the run's characters instead; the sum is exact either way.

Sequence convention (fixed; the trainer and BERT rely on it): ``phones = [PAD] + phones + [PAD]`` with
tones ``0`` at both ends and ``word2ph = [1] + per-char counts + [1]``, so ``len(word2ph) == len(text) + 2``
matches the BERT tokens ([CLS] text [SEP]) and ``sum(word2ph) == len(phones)``. With ``add_blank`` (see
``to_sequence``) the blank id 0 is interspersed: ``2n + 1`` symbols, every ``word2ph`` entry doubled and the
first one plus one.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

import pyopenjtalk

from model.text.normalize import normalize_text
from model.text.symbols import LANGUAGE_ID, PAD, PUNCTUATIONS, SP, SYMBOL_TO_ID, UNK, UNK_ID, VOWELS

log = logging.getLogger(__name__)

FRONTEND_VERSION = 1  # bump when phones/tones/word2ph of a given text can change (part of cache keys)

_MORA_END = VOWELS | {"N", "cl"}
_A = re.compile(r"/A:([0-9\-]+|xx)\+(\d+|xx)\+(\d+|xx)/")
_F = re.compile(r"/F:(\d+|xx)_(\d+|xx)#")


@dataclass
class G2PResult:
    text: str  # normalised text
    phones: list[str]  # [PAD] + phones + [PAD]
    tones: list[int]  # 0/1 per phone
    word2ph: list[int]  # len(text) + 2; sum == len(phones)


def label_phone(label: str) -> str:
    return label.split("-", 1)[1].split("+", 1)[0]


def label_tone(label: str) -> int:
    """Tone (0 low, 1 high) of the phone a full-context label describes; 0 for pauses and silence."""
    a = _A.search(label)
    f = _F.search(label)
    if a is None or f is None or a.group(2) == "xx" or f.group(2) == "xx":
        return 0
    mora, acc = int(a.group(2)), int(f.group(2))
    if acc == 0:
        return 0 if mora == 1 else 1
    if acc == 1:
        return 1 if mora == 1 else 0
    return 1 if 2 <= mora <= acc else 0


def _phone_symbol(p: str) -> str:
    if p == "pau":
        return SP
    p = p.lower() if p in ("A", "I", "U", "E", "O") else p
    if p not in SYMBOL_TO_ID:
        log.warning("pyopenjtalk produced unknown phone %r; mapped to %s", p, UNK)
        return UNK
    return p


def _run_labels(run: str, question: bool) -> tuple[list[dict], list[str]]:
    njd = pyopenjtalk.run_frontend(run + ("？" if question else ""))
    if question and njd and njd[-1]["string"] in ("？", "?"):
        words = njd[:-1]
    else:
        words = njd
    labels = pyopenjtalk.make_label(njd) if any(w["mora_size"] > 0 for w in njd) else []
    return words, labels


def _spread(n: int, k: int) -> list[int]:
    """``n`` things over ``k`` slots, earlier slots first: (5, 3) -> [2, 2, 1]."""
    if k == 0:
        return []
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


_SMALL_KANA = set("ぁぃぅぇぉゃゅょゎァィゥェォャュョヮ")


def _kana_morae(surface: str) -> list[int] | None:
    """Morae per character of an all-kana surface (small kana join the previous one), else None."""
    out = []
    for c in surface:
        if not (0x3041 <= ord(c) <= 0x309F or 0x30A1 <= ord(c) <= 0x30FC):
            return None
        out.append(0 if (c in _SMALL_KANA and out) else 1)
    return out


def _align_run(run: str, words: list[dict], units: list[list[int]]) -> list[int] | None:
    """Per-character phone counts of one run, or None when Open JTalk's words do not line up."""
    counts = [0] * len(run)
    pos = 0
    u = 0
    for w in words:
        surface = unicodedata.normalize("NFKC", w["string"])
        if run[pos : pos + len(surface)] != surface:
            return None
        n_units = int(w["mora_size"])
        if n_units == 0 and u < len(units) and len(units[u]) == 1 and units[u][0] < 0:
            n_units = 1  # a pause Open JTalk made from a symbol-like word
        if u + n_units > len(units):
            return None
        sizes = [len(x) for x in units[u : u + n_units]]
        u += n_units
        per_char = _kana_morae(surface)
        if per_char is None or sum(per_char) != len(sizes):
            per_char = _spread(len(sizes), len(surface))
        k = 0
        for j, m in enumerate(per_char):
            counts[pos + j] = sum(sizes[k : k + m])
            k += m
        pos += len(surface)
    if pos != len(run) or u != len(units):
        return None
    return counts


def _g2p_run(run: str, question: bool) -> tuple[list[str], list[int], list[int]]:
    words, labels = _run_labels(run, question)
    phones, tones = [], []
    for lab in labels:
        p = label_phone(lab)
        if p == "sil":
            continue
        phones.append(_phone_symbol(p))
        tones.append(label_tone(lab) if p != "pau" else 0)
    # morae (consonants attach to the vowel, N or cl that closes them); a pause is its own unit,
    # marked with a negative index so the aligner can tell it from a mora
    units: list[list[int]] = []
    cur: list[int] = []
    for i, p in enumerate(phones):
        if p == SP:
            if cur:
                units.append(cur)
                cur = []
            units.append([-1 - i])
            continue
        cur.append(i)
        if p in _MORA_END:
            units.append(cur)
            cur = []
    if cur:
        units.append(cur)
    counts = _align_run(run, words, units)
    if counts is None:
        log.debug("word alignment failed for %r; spreading phones evenly", run)
        counts = _spread(len(phones), len(run))
    return phones, tones, counts


def g2p(text: str, normalize: bool = True) -> G2PResult:
    """Text -> normalised text, phones, tones and word2ph (see the module docstring)."""
    norm = normalize_text(text) if normalize else text
    phones, tones, word2ph = [PAD], [0], [1]
    i = 0
    while i < len(norm):
        c = norm[i]
        if c in PUNCTUATIONS or c == " ":
            phones.append(SP if c == " " else c)
            tones.append(0)
            word2ph.append(1)
            i += 1
            continue
        j = i
        while j < len(norm) and norm[j] not in PUNCTUATIONS and norm[j] != " ":
            j += 1
        ph, tn, cnt = _g2p_run(norm[i:j], question=j < len(norm) and norm[j] == "?")
        phones += ph
        tones += tn
        word2ph += cnt
        i = j
    phones.append(PAD)
    tones.append(0)
    word2ph.append(1)
    assert sum(word2ph) == len(phones) and len(word2ph) == len(norm) + 2
    return G2PResult(norm, phones, tones, word2ph)


def segment_labels(text: str) -> list[tuple[str, list[str]]]:
    """Normalised text -> [(mark, []) or (run, full-context labels)]: what the built-in corpus synthesises.

    The labels are the very ones ``g2p`` reads phones and tones from, so synthesised audio and its
    transcript's phones agree by construction.
    """
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(text):
        if text[i] in PUNCTUATIONS or text[i] == " ":
            out.append((text[i], []))
            i += 1
            continue
        j = i
        while j < len(text) and text[j] not in PUNCTUATIONS and text[j] != " ":
            j += 1
        _, labels = _run_labels(text[i:j], question=j < len(text) and text[j] == "?")
        out.append((text[i:j], labels))
        i = j
    return out


def intersperse(seq: list[int], item: int = 0) -> list[int]:
    out = [item] * (len(seq) * 2 + 1)
    out[1::2] = seq
    return out


def to_sequence(
    phones: list[str], tones: list[int], word2ph: list[int], add_blank: bool
) -> tuple[list[int], list[int], list[int], list[int]]:
    """Symbols -> (phone ids, tones, language ids, word2ph), with blanks interspersed when ``add_blank``."""
    ids = [SYMBOL_TO_ID.get(p, UNK_ID) for p in phones]
    langs = [LANGUAGE_ID["JP"]] * len(ids)
    tones = list(tones)
    w2p = list(word2ph)
    if add_blank:
        ids = intersperse(ids, 0)
        tones = intersperse(tones, 0)
        langs = intersperse(langs, 0)
        w2p = [2 * n for n in w2p]
        w2p[0] += 1
    return ids, tones, langs, w2p


def phone_counts(text: str) -> tuple[int, int]:
    """(spoken phones, pauses between them) of a transcript; padding, punctuation and spaces are not phones."""
    skip = {PAD, SP, UNK, *PUNCTUATIONS}
    phones = pauses = 0
    gap = False
    for p in g2p(text).phones:
        if p in skip:
            gap = phones > 0
            continue
        pauses += gap
        gap = False
        phones += 1
    return phones, pauses


def count_phones(text: str) -> int:
    """Spoken phones of a transcript (no padding, pauses or punctuation)."""
    return phone_counts(text)[0]
