"""Shared fixtures and helpers for the data/text tests (import the fixtures into a test module to use them).

``builtin_corpus``: one tiny built-in corpus (about 45 s of audio at 16 kHz, 2 speakers) per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.config import tiny_config

CORPUS_HOURS = 0.0125  # 45 s: about 14 utterances, enough for the coverage words


_BUILT: dict = {}


@pytest.fixture(scope="session")
def builtin_corpus(tmp_path_factory):
    # imported into several modules, pytest makes one fixture per module: build once per session anyway
    from model.data.builtin import build_builtin_corpus

    if "corpus" not in _BUILT:
        out = tmp_path_factory.mktemp("builtin") / "corpus"
        _BUILT["corpus"] = build_builtin_corpus(
            out, CORPUS_HOURS, seed=0, sample_rate=16000, speakers=2, workers=1, progress=False
        )
    return _BUILT["corpus"]


def data_cfg(corpus, cache_dir: Path, **kw):
    """A tiny trial config reading ``corpus`` with its cache in ``cache_dir``."""
    cfg = tiny_config()
    d = cfg.data
    d.corpus = str(corpus)
    d.cache_dir = str(cache_dir)
    d.val_utterances = 3
    d.prepare_workers = 1
    for k, v in kw.items():
        setattr(d, k, v)
    return cfg


def tone_wav(path: Path, seconds: float = 1.0, sr: int = 16000, amp: float = 0.3, f0: float = 220.0) -> Path:
    """A harmonic test signal (voice-like enough for the validators), written as 16-bit PCM."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(amp / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6)) / 2
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16")
    return path


def write_tiny_bert(d: Path, texts: list[str], hidden: int = 32, layers: int = 3) -> Path:
    """A randomly initialised DeBERTa-v2 with a character vocabulary (the real model's tokenizer layout)."""
    import torch
    from transformers import DebertaV2Config, DebertaV2Model

    d.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for t in texts for c in t} - {" "})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (d / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertJapaneseTokenizer",
                "word_tokenizer_type": "basic",
                "subword_tokenizer_type": "character",
                "do_lower_case": False,
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
            }
        )
    )
    torch.manual_seed(0)
    cfg = DebertaV2Config(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        relative_attention=True,
        position_biased_input=False,
        pos_att_type=["p2c", "c2p"],
        pad_token_id=0,
    )
    DebertaV2Model(cfg).save_pretrained(d)
    return d
