"""A seeded, deterministic Japanese sentence generator for the built-in offline corpus.

``sentence(seed, i)`` depends only on ``(seed, i)`` (``random.Random`` seeded with a string, which is
hashed with SHA-512 and so does not change with ``PYTHONHASHSEED`` or the process), so a larger corpus
extends a smaller one with the same seed and any worker can make any sentence.

Variety: about twenty sentence patterns (declaratives, polite and plain past, questions with か?,
invitations, requests, conditionals, quotations, exclamations, hesitations with …, a dash, a spaced
reply), several hundred words (native words, Sino-Japanese compounds, loanwords), numbers written as
digits (prices with thousands separators, dates, counters, decimals) so the normaliser is exercised.

Coverage: the first ``len(COVERAGE_WORDS)`` sentences each carry one word chosen for rare phones
(``kw``, ``gw``, ``fy``, ``ty``, ``dy``, ``v``, ...), so any corpus of at least that many sentences
contains every phone of the table; tests check this, and that both flat (heiban) and accented phrases
occur.
"""

from __future__ import annotations

import random

# words that bring the table's rarer phones (with the phones in a comment)
COVERAGE_WORDS = [
    "クヮルテット",  # kw, cl
    "グヮバ",  # gw, b
    "フュージョン",  # fy, j, N
    "テューバ",  # ty
    "デュエット",  # dy
    "ヴァイオリン",  # v
    "ファイル",  # f
    "病院の地図",  # by, ch, z
    "研究発表",  # ky, py
    "山脈の写真",  # my, sh
    "牛乳",  # gy, ny
    "百円玉",  # hy, d
    "旅行の荷物",  # ry, ts
    "ピアノの楽譜",  # p, g, f
]

PEOPLE = [
    "私",
    "僕",
    "彼",
    "彼女",
    "先生",
    "友達",
    "母",
    "父",
    "兄",
    "姉",
    "弟",
    "妹",
    "子供たち",
    "お医者さん",
    "店員さん",
    "運転手さん",
    "隣の人",
    "田中さん",
    "鈴木さん",
    "山本さん",
    "佐藤さん",
    "留学生",
    "社長",
    "おばあさん",
    "おじいさん",
    "学生たち",
]
PLACES = [
    "駅",
    "学校",
    "図書館",
    "公園",
    "病院",
    "空港",
    "会社",
    "海",
    "山",
    "京都",
    "東京",
    "北海道",
    "大阪",
    "沖縄",
    "銀行",
    "郵便局",
    "美術館",
    "動物園",
    "喫茶店",
    "デパート",
    "神社",
    "お寺",
    "川のそば",
    "スーパー",
    "コンビニ",
    "映画館",
    "体育館",
    "港",
    "温泉",
    "市役所",
]
THINGS = [
    "本",
    "手紙",
    "写真",
    "傘",
    "時計",
    "自転車",
    "新聞",
    "辞書",
    "切符",
    "財布",
    "鍵",
    "花",
    "帽子",
    "眼鏡",
    "机",
    "椅子",
    "パソコン",
    "カメラ",
    "ギター",
    "ピアノ",
    "地図",
    "絵",
    "雑誌",
    "荷物",
    "靴",
    "鞄",
    "電話",
    "ノート",
    "鉛筆",
    "封筒",
    "人形",
    "お土産",
    "スマートフォン",
    "テレビ",
    "冷蔵庫",
    "ハンカチ",
    "ボールペン",
    "カレンダー",
    "チケット",
    "シャツ",
]
FOODS = [
    "パン",
    "ご飯",
    "果物",
    "野菜",
    "お寿司",
    "ラーメン",
    "カレー",
    "天ぷら",
    "お菓子",
    "ケーキ",
    "チョコレート",
    "りんご",
    "みかん",
    "卵焼き",
    "焼き魚",
    "お弁当",
    "サンドイッチ",
    "うどん",
    "そば",
    "おにぎり",
    "ハンバーグ",
    "スープ",
]
DRINKS = ["コーヒー", "紅茶", "お茶", "牛乳", "ジュース", "水", "ココア", "ミルクティー"]
ADJ_I = [
    "大きい",
    "小さい",
    "新しい",
    "古い",
    "高い",
    "安い",
    "面白い",
    "難しい",
    "優しい",
    "美しい",
    "珍しい",
    "重い",
    "軽い",
    "暖かい",
    "涼しい",
    "明るい",
    "暗い",
    "おいしい",
    "かわいい",
    "すごい",
]
ADJ_NA = ["きれい", "静か", "便利", "有名", "丈夫", "大切", "簡単", "不思議", "にぎやか", "素敵"]
ADVERBS = [
    "ゆっくり",
    "ちょっと",
    "たぶん",
    "すぐに",
    "きっと",
    "いつも",
    "時々",
    "もう一度",
    "やっと",
    "だんだん",
    "ずっと",
    "とても",
    "少し",
    "かなり",
]
TIMES = [
    "今朝",
    "昨日",
    "明日",
    "今日",
    "先週",
    "来週",
    "去年",
    "毎朝",
    "夕方",
    "夜中",
    "週末",
    "日曜日",
    "月曜日",
    "春休み",
    "昼休み",
]
PAST_TIMES = ["昨日", "先週", "去年", "今朝", "おととい", "先月"]
WEATHER = ["晴れ", "雨", "雪", "曇り", "嵐", "快晴"]
# (dictionary, polite, polite past, plain past, te-form, negative)
VERBS_GO = [
    ("行く", "行きます", "行きました", "行った", "行って", "行かない"),
    ("来る", "来ます", "来ました", "来た", "来て", "来ない"),
    ("帰る", "帰ります", "帰りました", "帰った", "帰って", "帰らない"),
    ("出かける", "出かけます", "出かけました", "出かけた", "出かけて", "出かけない"),
]
VERBS_THING = [
    ("買う", "買います", "買いました", "買った", "買って", "買わない"),
    ("見る", "見ます", "見ました", "見た", "見て", "見ない"),
    ("探す", "探します", "探しました", "探した", "探して", "探さない"),
    ("忘れる", "忘れます", "忘れました", "忘れた", "忘れて", "忘れない"),
    ("借りる", "借ります", "借りました", "借りた", "借りて", "借りない"),
    ("持つ", "持ちます", "持ちました", "持った", "持って", "持たない"),
    ("使う", "使います", "使いました", "使った", "使って", "使わない"),
    ("送る", "送ります", "送りました", "送った", "送って", "送らない"),
    ("直す", "直します", "直しました", "直した", "直して", "直さない"),
]
VERBS_FOOD = [
    ("食べる", "食べます", "食べました", "食べた", "食べて", "食べない"),
    ("作る", "作ります", "作りました", "作った", "作って", "作らない"),
    ("頼む", "頼みます", "頼みました", "頼んだ", "頼んで", "頼まない"),
]
VERBS_DRINK = [
    ("飲む", "飲みます", "飲みました", "飲んだ", "飲んで", "飲まない"),
    ("注ぐ", "注ぎます", "注ぎました", "注いだ", "注いで", "注がない"),
]
ACTIVITIES = [
    "散歩する",
    "勉強する",
    "買い物をする",
    "写真を撮る",
    "歌を歌う",
    "テニスをする",
    "話をする",
    "休憩する",
    "待ち合わせる",
    "練習する",
]
ACT_MASEN = {
    "散歩する": "散歩しませんか",
    "勉強する": "勉強しませんか",
    "買い物をする": "買い物をしませんか",
    "写真を撮る": "写真を撮りませんか",
    "歌を歌う": "歌を歌いませんか",
    "テニスをする": "テニスをしませんか",
    "話をする": "話をしませんか",
    "休憩する": "休憩しませんか",
    "待ち合わせる": "待ち合わせませんか",
    "練習する": "練習しませんか",
}
INTERJECTIONS = ["ええと", "あのう", "まあ", "うーん", "そうですね", "なるほど", "へえ"]
REPLIES = ["はい そうです", "いいえ 違います", "ええ もちろん", "うん わかった"]


def _c(rng: random.Random, xs):
    return xs[rng.randrange(len(xs))]


def _price(rng: random.Random) -> str:
    yen = _c(rng, [100, 150, 280, 500, 980, 1200, 2500, 3800, 12000, 45000])
    return f"{yen:,}円"


def _templates(rng: random.Random, thing: str) -> list:
    p, pl, t, f, d = (_c(rng, PEOPLE), _c(rng, PLACES), _c(rng, TIMES), _c(rng, FOODS), _c(rng, DRINKS))
    ai, an, adv = _c(rng, ADJ_I), _c(rng, ADJ_NA), _c(rng, ADVERBS)
    vg, vt, vf, vd = _c(rng, VERBS_GO), _c(rng, VERBS_THING), _c(rng, VERBS_FOOD), _c(rng, VERBS_DRINK)
    act = _c(rng, ACTIVITIES)
    n = rng.randrange(2, 12)
    return [
        lambda: f"{_c(rng, PAST_TIMES)}、{p}は{pl}へ{vg[2]}。",
        lambda: f"{p}は{adv}{f}を{vf[1]}。",
        lambda: f"{pl}には{thing}が{n}つあります。",
        lambda: f"この{thing}は{adv}{ai}ですね！",
        lambda: f"{p}と一緒に{pl}で{ACT_MASEN[act]}？",
        lambda: f"もし{_c(rng, WEATHER)}なら、{p}は{pl}へ{vg[5]}でしょう。",
        lambda: f"すみません、その{thing}を{vt[4]}ください。",
        lambda: f"{_c(rng, INTERJECTIONS)}…{thing}はどこにありますか？",
        lambda: f"{ai}{thing}を見つけました！",
        lambda: f"{_c(rng, PAST_TIMES)}は{_c(rng, WEATHER)}でしたが、今日は{_c(rng, WEATHER)}です。",
        lambda: f"{p}が言うには、{pl}の{thing}は{_price(rng)}だそうです。",
        lambda: (
            f"{rng.randrange(1990, 2031)}年{rng.randrange(1, 13)}月{rng.randrange(1, 29)}日に{pl}で会いましょう。"
        ),
        lambda: f"「{thing}が{ai}」と{p}は言った。",
        lambda: f"{pl}まで{rng.randrange(2, 40)}.{rng.randrange(1, 10)}キロ―{adv}遠いなあ。",
        lambda: f"{p}は{d}を{vd[3]}あとで、{thing}を{vt[2]}。",
        lambda: f"{thing}が{an}なので、{p}は{adv}{vt[3]}。",
        lambda: f"{_c(rng, REPLIES)}。{thing}は{pl}にあります。",
        lambda: f"{p}は{t}、{act}つもりですか？",
        lambda: f"{pl}の{thing}は{an}で、{ai}です。",
        lambda: f"{n}時{rng.randrange(0, 60)}分に{pl}の前で{p}を待っています。",
        lambda: f"{thing}を{vt[5]}で、{f}を{vf[2]}。",
        lambda: f"{p}、{adv}{vg[4]}ください！",
        lambda: f"{thing}―それが{p}の{an}なものです。",
    ]


def sentence(seed: int, i: int) -> str:
    """The ``i``-th sentence of the generator with ``seed`` (pure function of both)."""
    rng = random.Random(f"vits-scaling-sentences:{seed}:{i}")
    thing = COVERAGE_WORDS[i] if i < len(COVERAGE_WORDS) else _c(rng, THINGS + DRINKS)
    templates = _templates(rng, thing)
    if i < len(COVERAGE_WORDS):  # keep the coverage word in a pattern that uses {thing}
        return templates[(2, 3, 6, 7, 8, 12, 16, 18, 22)[i % 9]]()
    return _c(rng, templates)()


def sentences(seed: int, n: int, start: int = 0) -> list[str]:
    return [sentence(seed, i) for i in range(start, start + n)]
