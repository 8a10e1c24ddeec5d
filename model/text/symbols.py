"""The phone symbol table (placeholder interface; the text frontend owns and documents it).

Fixed ids: never reorder; append only. Saved with every checkpoint.
"""

PAD = "_"
UNK = "UNK"
PUNCTUATIONS = ["!", "?", "…", ",", ".", "'", "-"]
SP = "SP"
JA_PHONES = [
    "N",
    "a",
    "a:",
    "b",
    "by",
    "ch",
    "cl",
    "d",
    "dy",
    "e",
    "e:",
    "f",
    "g",
    "gy",
    "h",
    "hy",
    "i",
    "i:",
    "j",
    "k",
    "ky",
    "m",
    "my",
    "n",
    "ny",
    "o",
    "o:",
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
    "u:",
    "v",
    "w",
    "y",
    "z",
    "zy",
]
SYMBOLS = [PAD] + JA_PHONES + PUNCTUATIONS + [SP, UNK]
NUM_SYMBOLS = len(SYMBOLS)
NUM_TONES = 2
NUM_LANGUAGES = 1
SYMBOL_TO_ID = {s: i for i, s in enumerate(SYMBOLS)}
