"""BERT features through the real transformers path, with a tiny random DeBERTa-v2 written locally."""

from __future__ import annotations

import pytest
import torch
from fixtures_data import write_tiny_bert

from model.text.bert import BertFeaturizer, expand_to_phones
from model.text.g2p import g2p, to_sequence

TEXTS = ["今日は良い天気ですね!", "雨が降っています.", "はい そうです", "ヴァイオリン"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-deberta", [g2p(t).text for t in TEXTS])


def test_features_align_with_word2ph(tiny_bert):
    bert = BertFeaturizer(str(tiny_bert), device="cpu")
    assert bert.dim == 32
    results = [g2p(t) for t in TEXTS]
    feats = bert([r.text for r in results], batch_size=3)
    for r, f in zip(results, feats, strict=True):
        assert f.shape == (len(r.text) + 2, 32)
        assert torch.isfinite(f).all()
        for add_blank in (False, True):
            ids, _, _, w2p = to_sequence(r.phones, r.tones, r.word2ph, add_blank)
            ph = expand_to_phones(f, w2p)
            assert ph.shape == (32, len(ids))
    # batching does not change a text's features (padding is masked)
    alone = bert([results[0].text])[0]
    assert torch.allclose(alone, feats[0], atol=1e-5)


def test_space_and_unknown_characters_keep_alignment(tiny_bert):
    bert = BertFeaturizer(str(tiny_bert), device="cpu")
    r = g2p("はい そうです 鬱")  # the tokenizer drops spaces and has no 鬱: per-character ids are used
    ids = bert.char_ids(r.text)
    assert len(ids) == len(r.text) + 2
    assert ids[r.text.index("鬱") + 1] == bert.tokenizer.unk_token_id


def test_long_text_runs_in_windows(tiny_bert):
    bert = BertFeaturizer(str(tiny_bert), device="cpu", max_tokens=16)
    text = g2p("今日は良い天気ですね!" * 4).text
    (f,) = bert([text])
    assert f.shape == (len(text) + 2, 32)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="use_bert"):
        BertFeaturizer(str(tmp_path / "no-such-model"))


def test_expand_rejects_mismatch():
    with pytest.raises(ValueError, match="word2ph"):
        expand_to_phones(torch.zeros(5, 4), [1, 2, 1])
