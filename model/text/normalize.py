"""Japanese text normalisation: one canonical spelling per input before g2p and BERT.

Steps, in order:

1. Unicode NFKC: full-width ASCII -> half-width (``Ａ１`` -> ``A1``), half-width katakana -> full-width
   (``ｶﾞ`` -> ``ガ``), compatibility forms expanded (``㍍`` -> ``メートル``).
2. Punctuation to the fixed set of ``symbols.PUNCTUATIONS``: ``、，,・;:`` -> ``,``; ``。．.`` -> ``.``;
   ``！`` -> ``!``; ``？`` -> ``?``; ``…‥`` and runs of two or more dots -> ``…``;
   dashes and waves (``―—–‐〜～~−``) -> ``-``. Quotes and brackets are removed (they are not spoken).
3. Numbers to kanji numerals, which Open JTalk reads with the right sound changes (``300`` -> ``三百``
   -> さんびゃく): thousands separators dropped, decimals read with 点 (``3.14`` -> ``三点一四``),
   leading-zero and very long digit strings read digit by digit.
4. Whitespace runs become one space (later the pause symbol ``SP``); whitespace next to punctuation or
   at either end is dropped.
5. Anything not speakable is dropped: kept are kana, kanji (with 々〆ヶ), Latin letters (read as letter
   names/loanwords by Open JTalk), ``%&+=`` and the punctuation set.

Every kept character of the result is one "character" of ``word2ph`` and one BERT token.
"""

from __future__ import annotations

import re
import unicodedata

from model.text.symbols import PUNCTUATIONS

_PUNCT_MAP = {
    "、": ",",
    "，": ",",
    ",": ",",
    "・": ",",
    "･": ",",
    ";": ",",
    ":": ",",
    "；": ",",
    "：": ",",
    "。": ".",
    "．": ".",
    ".": ".",
    "｡": ".",
    "!": "!",
    "！": "!",
    "?": "?",
    "？": "?",
    "…": "…",
    "‥": "…",
    "―": "-",
    "—": "-",
    "–": "-",
    "‐": "-",
    "-": "-",
    "〜": "-",
    "～": "-",
    "~": "-",
    "−": "-",
}
_REMOVED = set("「」『』()（）[]［］{}｛｝【】〈〉《》〔〕\"'“”‘’`«»")
_SPEAKABLE_SYMBOLS = set("%&+=")

_DIGITS = "〇一二三四五六七八九"
_SMALL_UNITS = [(1000, "千"), (100, "百"), (10, "十")]
_BIG_UNITS = ["", "万", "億", "兆", "京"]


def _under_10000(n: int) -> str:
    out = []
    for value, unit in _SMALL_UNITS:
        d, n = divmod(n, value)
        if d:
            out.append(("" if d == 1 else _DIGITS[d]) + unit)
    if n:
        out.append(_DIGITS[n])
    return "".join(out)


def int_to_kanji(n: int) -> str:
    """``0`` -> ``〇``, ``10`` -> ``十``, ``1005`` -> ``千五``, ``120000`` -> ``十二万``."""
    if n < 0:
        raise ValueError(f"negative number {n}")
    if n == 0:
        return _DIGITS[0]
    if n >= 10 ** (4 * len(_BIG_UNITS)):
        return "".join(_DIGITS[int(c)] for c in str(n))
    groups = []
    i = 0
    while n:
        n, g = divmod(n, 10000)
        if g:
            # 一 is kept before 万 and above (一万), dropped before 千/百/十 (千, 百, 十)
            groups.append(_under_10000(g) + _BIG_UNITS[i])
        i += 1
    return "".join(reversed(groups))


def _digits(s: str) -> str:
    return "".join(_DIGITS[int(c)] for c in s)


_NUMBER = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")


def _number(m: re.Match) -> str:
    s = m.group(0)
    whole, _, frac = s.partition(".")
    whole = whole.replace(",", "")
    if (len(whole) > 1 and whole.startswith("0")) or len(whole) > 20:
        out = _digits(whole)
    else:
        out = int_to_kanji(int(whole))
    if frac:
        out += "点" + _digits(frac)
    return out


def _is_kept(c: str) -> bool:
    o = ord(c)
    return (
        0x3041 <= o <= 0x309F  # hiragana (incl. ゝゞ)
        or 0x30A1 <= o <= 0x30FF  # katakana, ー, ヽヾ
        or 0x4E00 <= o <= 0x9FFF  # CJK unified ideographs
        or 0x3400 <= o <= 0x4DBF  # extension A
        or 0xF900 <= o <= 0xFAFF  # compatibility ideographs
        or c in "々〆〇ヶ"
        or ("a" <= c <= "z")
        or ("A" <= c <= "Z")
        or c in _SPEAKABLE_SYMBOLS
        or c in PUNCTUATIONS
        or c == " "
    )


_PUNCT_SET = "".join(re.escape(p) for p in PUNCTUATIONS)


def normalize_text(text: str) -> str:
    """Return the canonical form of ``text`` (see the module docstring)."""
    # keep the ellipsis as one mark before NFKC expands it to three dots
    text = text.replace("…", "\u0000").replace("‥", "\u0000")
    text = unicodedata.normalize("NFKC", text).replace("\u0000", "…")
    text = _NUMBER.sub(_number, text)
    text = re.sub(r"\.{2,}", "…", text)
    chars = []
    for c in text:
        if c.isspace():
            chars.append(" ")
        elif c in _REMOVED:
            continue
        else:
            chars.append(_PUNCT_MAP.get(c, c))
    text = "".join(c for c in chars if _is_kept(c))
    text = re.sub(r" +", " ", text)
    text = re.sub(rf" *([{_PUNCT_SET}]) *", r"\1", text)
    return text.strip()
