"""The phone symbol table: fixed ids, saved with every model so a checkpoint never changes meaning.

Layout (ids never change; new symbols may only be APPENDED, which bumps ``SYMBOLS_VERSION``):

====  =========  ================================================================================
id    symbol     meaning
====  =========  ================================================================================
0     ``_``      padding; also the edge symbol around every utterance (it takes the BERT [CLS] and
                 [SEP] positions) and the blank interspersed between phones when ``add_blank``
1-40  phones     the 40 phones ``pyopenjtalk`` (Open JTalk's phone set) can emit, in alphabetical
                 order. Devoiced vowels (``A I U E O``) are folded into their voiced forms; Open
                 JTalk's ``cl`` is the geminate (促音) and ``N`` the moraic nasal (撥音).
41-46  punct     ``, . ! ? … -`` -- the small fixed punctuation set every input mark is normalised to
47    ``SP``     a short pause: whitespace in the input, or a pause Open JTalk inserts by itself
48    ``UNK``    anything else (never produced by the frontend for normalised text; kept so that a
                 table lookup of a foreign symbol has somewhere defined to go)
====  =========  ================================================================================

Tones: 0 = low pitch, 1 = high pitch (Tokyo accent, from the full-context labels); punctuation,
pauses and padding always have tone 0. Languages: one, Japanese, id 0.
"""

from __future__ import annotations

import hashlib

PAD = "_"
SP = "SP"
UNK = "UNK"

# Every phone pyopenjtalk(-plus) can output (checked against all kana and kana+small-kana pairs).
JA_PHONES = [
    "N",
    "a",
    "b",
    "by",
    "ch",
    "cl",
    "d",
    "dy",
    "e",
    "f",
    "fy",
    "g",
    "gw",
    "gy",
    "h",
    "hy",
    "i",
    "j",
    "k",
    "kw",
    "ky",
    "m",
    "my",
    "n",
    "ny",
    "o",
    "p",
    "py",
    "r",
    "ry",
    "s",
    "sh",
    "t",
    "ts",
    "ty",
    "u",
    "v",
    "w",
    "y",
    "z",
]
VOWELS = frozenset("aiueo")
PUNCTUATIONS = [",", ".", "!", "?", "…", "-"]

SYMBOLS = [PAD] + JA_PHONES + PUNCTUATIONS + [SP, UNK]
NUM_SYMBOLS = len(SYMBOLS)
NUM_TONES = 2
NUM_LANGUAGES = 1
LANGUAGE_ID = {"JP": 0}
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}
PAD_ID = SYMBOL_TO_ID[PAD]
SP_ID = SYMBOL_TO_ID[SP]
UNK_ID = SYMBOL_TO_ID[UNK]
SYMBOLS_VERSION = 1

assert PAD_ID == 0 and len(set(SYMBOLS)) == NUM_SYMBOLS


def table_hash(symbols: list[str] | None = None) -> str:
    """Short digest of a symbol list; equal digests mean equal ids for every symbol."""
    return hashlib.sha256("\n".join(symbols or SYMBOLS).encode()).hexdigest()[:16]


def symbol_table() -> dict:
    """What a checkpoint stores so that it can be checked against the code that loads it."""
    return {
        "version": SYMBOLS_VERSION,
        "symbols": list(SYMBOLS),
        "num_tones": NUM_TONES,
        "num_languages": NUM_LANGUAGES,
        "hash": table_hash(),
    }


def check_symbol_table(saved: dict, where: str = "checkpoint") -> None:
    """Raise if a saved table is not a prefix of the current one (ids would change meaning)."""
    syms = list(saved.get("symbols", []))
    if len(syms) > NUM_SYMBOLS:
        raise ValueError(
            f"{where}: phone symbol table has {len(syms)} symbols, more symbols than this code's {NUM_SYMBOLS} "
            f"(newer table: {syms[NUM_SYMBOLS : NUM_SYMBOLS + 3]!r}...)"
        )
    for i, (a, b) in enumerate(zip(syms, SYMBOLS, strict=False)):
        if a != b:
            raise ValueError(
                f"{where}: phone symbol table differs from this code's at id {i} (saved {a!r}, current {b!r}); "
                "the model's ids would change meaning"
            )
    if saved.get("num_tones", NUM_TONES) != NUM_TONES:
        raise ValueError(f"{where}: num_tones {saved.get('num_tones')} != {NUM_TONES}")
