"""Feature cache (reuse, rebuild on key change, concurrent preparers) and the trainer's batch contract."""

from __future__ import annotations

import threading

import pytest
import torch
from fixtures_data import builtin_corpus, data_cfg, write_tiny_bert  # noqa: F401 - fixture

from model.audio import spectrogram
from model.data import available_hours, prepare_data
from model.data.cache import FeatureCache
from model.data.manifest import fingerprint
from model.data.subsets import NotEnoughDataError
from model.text import symbols


def test_prepare_then_reuse_then_rebuild_on_key_change(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache")
    p = prepare_data(cfg)
    n = len(p.train_items) + len(p.val_items)
    assert n == len(p.manifest) and p.stats.audio_computed == n and p.stats.text_computed == n
    again = prepare_data(cfg)
    assert again.stats.computed == 0 and again.stats.audio_reused == n and again.stats.text_reused == n
    assert again.stats.audio_dir == p.stats.audio_dir
    # a feature setting changes: a new audio cache is built; the text cache is reused
    cfg.data.hop_length = 256
    hop = prepare_data(cfg)
    assert hop.stats.audio_dir != p.stats.audio_dir and hop.stats.audio_computed == n
    assert hop.stats.text_computed == 0
    cfg.data.cache_mel = True
    mel = prepare_data(cfg)
    assert mel.stats.audio_computed == n and mel.stats.audio_dir != hop.stats.audio_dir
    a, _ = mel.cache.load(mel.train_items[0].id)
    assert a["mel"].shape[0] == cfg.data.n_mel_channels
    cfg.data.n_mel_channels = 20  # n_mels is part of the key when mel is cached
    assert prepare_data(cfg).stats.audio_computed == n
    # no temporary files left behind
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_concurrent_preparers_compute_each_item_once(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache")
    first = prepare_data(cfg, workers=1)  # manifest + cache of one setting
    cfg.data.hop_length = 160  # a fresh cache key, filled by two "trials" at once
    items = first.manifest
    caches = [FeatureCache(cfg.data.cache_dir, fingerprint(items), cfg.data) for _ in range(3)]
    stats = [None] * 3

    def run(k):
        stats[k] = caches[k].prepare(items)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(s.audio_computed for s in stats) == len(items)
    assert sum(s.text_computed for s in stats) == 0  # text features do not depend on hop
    for it in items:
        a, _ = caches[0].load(it.id)
        assert a["spec"].shape[1] == a["wav"].numel() // 160


def test_batch_contract(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache")
    cfg.model.style_dim = 7
    p = prepare_data(cfg)
    d = cfg.data
    assert p.spk2id == {"mei_a": 0, "mei_b": 1}
    assert abs(p.data_hours - sum(i.duration for i in p.train_items) / 3600) < 1e-12
    assert p.available_hours == pytest.approx(p.data_hours)
    batches = list(p.make_loader("train", batch_size=3, seed=5))
    assert len(batches) == p.batches_per_epoch(3)
    seen = set()
    for b in batches:
        B = len(b["ids"])
        T, F = b["phones"].shape[1], b["spec"].shape[2]
        assert B == 3
        assert b["phones"].dtype == b["tones"].dtype == b["languages"].dtype == torch.long
        assert b["tones"].shape == b["languages"].shape == (B, T)
        assert b["bert"].shape == (B, 1024, T) and not b["bert"].any()  # text_features none: zeros
        assert b["style"].shape == (B, 7) and not b["style"].any()
        assert b["spec"].shape == (B, d.filter_length // 2 + 1, F)
        assert b["wav"].shape == (B, 1, F * d.hop_length)
        assert torch.equal(b["wav_lengths"], b["spec_lengths"] * d.hop_length)
        assert b["spec_lengths"].tolist() == sorted(b["spec_lengths"].tolist(), reverse=True)
        assert b["wav"].abs().max() <= 1.0 and set(b["tones"].unique().tolist()) <= {0, 1}
        assert b["speakers"].dtype == torch.long and set(b["speakers"].tolist()) <= {0, 1}
        for k in range(B):
            n, f = int(b["phone_lengths"][k]), int(b["spec_lengths"][k])
            # blanks (0) between symbols; [PAD] edges at 1 and n - 2; real phones in between
            assert n % 2 == 1 and (b["phones"][k, 0:n:2] == 0).all()
            assert (
                b["phones"][k, 1] == b["phones"][k, n - 2] == 0 and (b["phones"][k, 3 : n - 2 : 2] != 0).all()
            )
            assert (b["phones"][k, n:] == 0).all() and (b["spec"][k, :, f:] == 0).all()
            # the cached spectrogram is the one implementation's, of the batch's own waveform
            ref = spectrogram(
                b["wav"][k : k + 1, :, : f * d.hop_length], d.filter_length, d.hop_length, d.win_length
            )
            assert torch.allclose(ref[0], b["spec"][k, :, :f], rtol=2e-3, atol=2e-3)
            seen.add(b["ids"][k])
    assert seen == {i.id for i in p.train_items}
    # the same (seed, epoch) gives the same order; resuming skips exactly the consumed batches
    again = [b["ids"] for b in p.make_loader("train", batch_size=3, seed=5)]
    assert again == [b["ids"] for b in batches]
    resumed = [b["ids"] for b in p.make_loader("train", batch_size=3, seed=5, skip_batches=2)]
    assert resumed == again[2:]
    assert [b["ids"] for b in p.make_loader("train", batch_size=3, seed=5, epoch=1)] != again
    val = [i for b in p.make_loader("val", batch_size=2) for i in b["ids"]]
    assert sorted(val) == sorted(i.id for i in p.val_items) and not set(val) & seen


def test_subset_hours_and_errors(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache")
    avail = available_hours(cfg)
    cfg.data.data_hours = avail / 2
    half = prepare_data(cfg)
    assert avail / 2 <= half.data_hours < avail and half.available_hours == pytest.approx(avail)
    assert len(half.train_items) + len(half.val_items) == half.stats.audio_computed  # only what is needed
    cfg.data.data_hours = avail
    full = prepare_data(cfg)
    assert {i.id for i in half.train_items} < {i.id for i in full.train_items}
    assert full.stats.audio_reused == len(half.train_items) + len(half.val_items)
    cfg.data.data_hours = avail * 2
    with pytest.raises(NotEnoughDataError, match="data_hours"):
        prepare_data(cfg)
    cfg.data.data_hours = None
    cfg.data.n_speakers = 1
    with pytest.raises(ValueError, match="n_speakers"):
        prepare_data(cfg)


def test_bert_features_through_the_cache(builtin_corpus, tmp_path):  # noqa: F811
    from model.data.corpus import read_esd_list
    from model.text.g2p import g2p

    texts = [g2p(i.text).text for i in read_esd_list(builtin_corpus.esd_list)[0]]
    model_dir = write_tiny_bert(tmp_path / "bert", texts, hidden=16, layers=3)
    cfg = data_cfg(
        builtin_corpus.esd_list, tmp_path / "cache", text_features="bert", bert_model=str(model_dir)
    )
    p = prepare_data(cfg)
    assert "bert" in p.stats.text_dir and p.stats.text_computed == len(p.manifest)
    b = next(iter(p.make_loader("train", batch_size=2, seed=0)))
    assert b["bert"].shape[:2] == (2, 16) and b["bert"].shape[2] == b["phones"].shape[1]
    for k in range(2):
        n = int(b["phone_lengths"][k])
        assert b["bert"][k, :, :n].abs().sum(0).gt(0).all()  # every phone position gets a feature
        assert not b["bert"][k, :, n:].any()
    cfg.model.bert_dim = 1024  # an explicit width that is not the features': refused before any work
    cfg.data.cache_dir = str(tmp_path / "cache2")
    with pytest.raises(
        ValueError, match="model.bert_dim: 1024 but data.text_features 'bert'.*16-dimensional"
    ):
        prepare_data(cfg)


def test_symbol_ids_in_batches_are_table_ids(builtin_corpus, tmp_path):  # noqa: F811
    cfg = data_cfg(builtin_corpus.esd_list, tmp_path / "cache", add_blank=False)
    p = prepare_data(cfg)
    item = p.train[0]
    _, t = p.cache.load(p.train_items[0].id)
    assert item["phones"].tolist() == [symbols.SYMBOL_TO_ID[s] for s in t["phones"]]
