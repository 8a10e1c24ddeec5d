"""Text frontend: normalisation, phones, tones (accent), word2ph, the symbol table, the sentence generator."""

from __future__ import annotations

import collections

import pytest

from model.data.builtin.sentences import COVERAGE_WORDS, sentence
from model.text import symbols
from model.text.g2p import g2p, intersperse, to_sequence
from model.text.normalize import int_to_kanji, normalize_text

SENTENCES = [
    "こんにちは、今日は良い天気ですね！",
    "ＨＥＬＬＯ　ｗｏｒｌｄ、１００％です。",
    "ヴァイオリンとデュエット…行きますか？",
    "２５個の「りんご」を3.14円で買った―",
    "彼は1,000,000円持っている",
    "キャッシュカードを忘れないでください。",
    "東京都に住んでいます。明日、大阪へ行きます",
    "えっ⁉ 本当ですか……",
    "ｶﾀｶﾅのﾃｷｽﾄ",
    "2024年3月5日、午後7時30分",
]


@pytest.mark.parametrize("text", SENTENCES)
def test_g2p_invariants(text):
    r = g2p(text)
    assert len(r.phones) == len(r.tones) == sum(r.word2ph)
    assert len(r.word2ph) == len(r.text) + 2  # [CLS] text [SEP]
    assert set(r.tones) <= {0, 1}
    assert r.phones[0] == r.phones[-1] == symbols.PAD
    assert all(p in symbols.SYMBOL_TO_ID for p in r.phones)
    assert symbols.UNK not in r.phones
    for p, t in zip(r.phones, r.tones, strict=True):  # pauses, punctuation and padding are low
        if p not in symbols.JA_PHONES:
            assert t == 0
    assert all(w >= 0 for w in r.word2ph)


def _word_tones(text):
    r = g2p(text)
    return [(p, t) for p, t in zip(r.phones, r.tones, strict=True) if p in symbols.JA_PHONES]


def test_accent_minimal_pairs():
    # 箸 (ha'shi, head-high), 橋 (hashi', tail-high), 端 (hashi, flat): classic Tokyo minimal triple
    r = g2p("箸と橋と端")
    tones = [t for p, t in zip(r.phones, r.tones, strict=True) if p in ("a", "i", "o")]
    # vowels: ha shi to | ha shi to | ha shi
    assert tones == [1, 0, 0, 0, 1, 0, 0, 1]
    # 雨 (a'me, head-high) vs 飴 (ame, flat): different tone patterns, same phones
    ame = _word_tones("雨")
    candy = _word_tones("飴")
    assert [p for p, _ in ame] == [p for p, _ in candy] == ["a", "m", "e"]
    assert [t for _, t in ame] == [1, 0, 0]
    assert [t for _, t in candy] == [0, 1, 1]


def test_nakadaka_rise_and_fall():
    # 卵 (ta ma' go, accent on mora 2): low, high (nucleus), low
    t = _word_tones("卵")
    assert [p for p, _ in t] == ["t", "a", "m", "a", "g", "o"]
    assert [tn for _, tn in t] == [0, 0, 1, 1, 0, 0]


def test_punctuation_and_spaces_kept_as_symbols():
    r = g2p("はい、そうです！ えっと…本当？")
    syms = [p for p in r.phones if p not in symbols.JA_PHONES and p != symbols.PAD]
    assert syms == [",", "!", "…", "?"]  # space next to punctuation is dropped
    r = g2p("はい そうです")
    assert symbols.SP in r.phones


def test_word2ph_per_character_alignment():
    r = g2p("キャッシュ")
    # キャ -> ky a, ッ -> cl, シュ -> sh u; small kana get 0
    assert r.word2ph == [1, 2, 0, 1, 2, 0, 1]
    r = g2p("今日は雨")
    assert r.text == "今日は雨"
    assert sum(r.word2ph[1:-1]) == len(r.phones) - 2


def test_normalize():
    assert normalize_text("ＡＢＣ１２３") == "ABC百二十三"
    assert normalize_text("「こんにちは」、世界！！") == "こんにちは,世界!!"
    assert normalize_text("えー...そう。") == "えー…そう."
    assert normalize_text("3.5kg") == "三点五kg"
    assert normalize_text("1,200円") == "千二百円"
    assert normalize_text("007") == "〇〇七"
    assert normalize_text("  あ　い  ") == "あ い"
    assert normalize_text("あ、 い") == "あ,い"
    assert normalize_text("😀絵文字") == "絵文字"
    assert normalize_text("ｱｲｳ") == "アイウ"
    assert normalize_text("〜") == "-"


@pytest.mark.parametrize(
    "n,kanji",
    [
        (0, "〇"),
        (1, "一"),
        (10, "十"),
        (11, "十一"),
        (105, "百五"),
        (1000, "千"),
        (2024, "二千二十四"),
        (10000, "一万"),
        (120000, "十二万"),
        (100000000, "一億"),
        (1234567, "百二十三万四千五百六十七"),
    ],
)
def test_int_to_kanji(n, kanji):
    assert int_to_kanji(n) == kanji


def test_blank_convention():
    r = g2p("雨")
    ids, tones, langs, w2p = to_sequence(r.phones, r.tones, r.word2ph, add_blank=True)
    n = len(r.phones)
    assert len(ids) == len(tones) == len(langs) == 2 * n + 1 == sum(w2p)
    assert ids[0::2] == [0] * (n + 1)
    assert ids[1::2] == [symbols.SYMBOL_TO_ID[p] for p in r.phones]
    assert w2p[0] == 2 * r.word2ph[0] + 1 and w2p[1:] == [2 * x for x in r.word2ph[1:]]
    ids2, _, _, w2p2 = to_sequence(r.phones, r.tones, r.word2ph, add_blank=False)
    assert len(ids2) == n and w2p2 == r.word2ph
    assert intersperse([5, 6]) == [0, 5, 0, 6, 0]


def test_symbol_table_is_fixed():
    assert symbols.SYMBOL_TO_ID[symbols.PAD] == 0
    assert symbols.NUM_SYMBOLS == 49 and symbols.NUM_TONES == 2 and symbols.NUM_LANGUAGES == 1
    assert symbols.SYMBOLS[:3] == ["_", "N", "a"] and symbols.SYMBOLS[-2:] == ["SP", "UNK"]
    assert symbols.table_hash() == symbols.symbol_table()["hash"]
    symbols.check_symbol_table(symbols.symbol_table())
    symbols.check_symbol_table({"symbols": symbols.SYMBOLS[:10]})  # an older, shorter table is fine
    bad = symbols.symbol_table()
    bad["symbols"] = list(bad["symbols"])
    bad["symbols"][3], bad["symbols"][4] = bad["symbols"][4], bad["symbols"][3]
    with pytest.raises(ValueError, match="id 3"):
        symbols.check_symbol_table(bad, where="ckpt.pt")
    with pytest.raises(ValueError, match="more symbols"):
        symbols.check_symbol_table({"symbols": symbols.SYMBOLS + ["new"]})


def test_generator_covers_every_phone_and_both_accent_types():
    n = len(COVERAGE_WORDS)
    seen = collections.Counter()
    tones = collections.Counter()
    flat = accented = False
    for i in range(n):
        s = sentence(0, i)
        assert s == sentence(0, i)  # pure function of (seed, i)
        r = g2p(s)
        seen.update(r.phones)
        tones.update(t for p, t in zip(r.phones, r.tones, strict=True) if p in symbols.JA_PHONES)
    missing = [p for p in symbols.JA_PHONES + symbols.PUNCTUATIONS if seen[p] == 0]
    assert not missing, f"first {n} generated sentences miss {missing}"
    assert tones[0] > 0 and tones[1] > 0
    # accent types from the labels (F field f1 = morae of the phrase, f2 = accent nucleus): flat phrases
    # (no fall inside: f2 = 0 or f2 = f1, as Open JTalk writes heiban) and accented ones (0 < f2 < f1)
    import pyopenjtalk

    for i in range(n):
        for lab in pyopenjtalk.extract_fullcontext(normalize_text(sentence(0, i))):
            f1, f2 = lab.split("/F:")[1].split("#")[0].split("_")
            if f1 == "xx":
                continue
            flat |= f2 == "0" or f2 == f1
            accented |= 0 < int(f2) < int(f1)
    assert flat and accented
    assert sentence(0, 100) != sentence(1, 100)
    assert len({sentence(0, i) for i in range(200)}) > 150  # varied
