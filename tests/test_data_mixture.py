"""Selection axes: quality filter and corpus mixtures (nested per level, proportions, pool limits, errors)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from fixtures_data import builtin_corpus, data_cfg  # noqa: F401 - fixture
from fixtures_quality import (  # noqa: F401 - fixtures
    SIGNAL_FILTER,
    degraded_corpus,
    quality_cache,
)

from model.config import ConfigError, TrialConfig
from model.data import available_hours, check_selection, parse_quality, prepare_data
from model.data.manifest import ManifestItem
from model.data.quality import SCORES
from model.data.quality_report import read_degradations
from model.data.select import SourcePool, draw, select
from model.data.subsets import NotEnoughDataError

# ---------------------------------------------------------------------------------------------------
# the drawing rule on synthetic pools (large enough for proportions to mean something)


def pools(weights: dict[str, float], n: int = 400, seed: int = 0) -> list[SourcePool]:
    rng = random.Random(seed)
    out = []
    for name, w in weights.items():
        items = [
            ManifestItem(f"{name}__u{i:04d}", name, "あ", f"/x/{i}.wav", rng.uniform(1.0, 8.0), 22050)
            for i in range(n)
        ]
        out.append(SourcePool(name, w, items, [], items, sum(i.duration for i in items) / 3600))
    return out


def share(sources: list[SourcePool]) -> dict[str, float]:
    total = sum(i.duration for s in sources for i in s.train)
    return {s.name: sum(i.duration for i in s.train) / total for s in sources}


@pytest.mark.parametrize("weights", [{"a": 0.8, "b": 0.2}, {"a": 0.5, "b": 0.3, "c": 0.2}])
def test_mixture_proportions_and_nesting(weights):
    srcs = pools(weights)
    prev: dict[str, set] = {}
    for hours in (0.1, 0.2, 0.35):
        draw(srcs, hours)
        got = share(srcs)
        for name, w in weights.items():
            assert abs(got[name] - w) < 0.03, (hours, got)
        total = sum(i.duration for s in srcs for i in s.train) / 3600
        assert hours <= total < hours * 1.03
        ids = {s.name: {i.id for i in s.train} for s in srcs}
        for name in ids:  # nested within the level, per corpus and so overall
            assert prev.get(name, set()) <= ids[name]
        prev = ids


def test_pool_is_limited_by_the_scarcest_source():
    srcs = pools({"a": 0.8, "b": 0.2})
    srcs[1].pool = srcs[1].pool[:50]  # b is small: the pool is b's hours / 0.2
    pool = draw(srcs, None)
    assert pool == pytest.approx(srcs[1].hours / 0.2)
    assert srcs[1].train == srcs[1].pool  # at the limit the scarce source is used whole
    with pytest.raises(NotEnoughDataError, match=rf"holds only {pool:.4f} h"):
        draw(srcs, pool * 1.01, "sources {'a': 0.8, 'b': 0.2}")
    draw(srcs, pool)  # exactly the pool is fine


# ---------------------------------------------------------------------------------------------------
# parsing: strict, with errors that name the field and the choices


def test_quality_expressions_parse_strictly():
    (c,) = parse_quality("dnsmos_ovrl >= 3.2")
    assert (c.score, c.op, c.value) == ("dnsmos_ovrl", ">=", 3.2)
    conds = parse_quality("snr_db>25 and clip_ratio <= 1e-3 & transcript_absz < 3")
    assert [str(x) for x in conds] == ["snr_db > 25", "clip_ratio <= 0.001", "transcript_absz < 3"]
    assert parse_quality("dnsmos_ovrl >= p20")[0].percentile == 20
    assert len(parse_quality("default")) >= 3
    with pytest.raises(
        ConfigError, match=r"data.min_quality: unknown score 'dnsmos' .*allowed: .*dnsmos_ovrl"
    ):
        parse_quality("dnsmos >= 3")
    for bad in ("dnsmos_ovrl == 3", "dnsmos_ovrl >=", "3 <= dnsmos_ovrl", "snr_db > 3 or clip_ratio < 1"):
        with pytest.raises(ConfigError, match="data.min_quality: cannot parse"):
            parse_quality(bad)
    with pytest.raises(ConfigError, match="p0..p100"):
        parse_quality("snr_db > p120")
    assert set(SCORES) >= {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "snr_db", "clip_ratio", "speaking_rate"}


def test_selection_errors_before_launch():
    cfg = TrialConfig.from_dict(
        {"data": {"corpora": {"jsut": "/c/jsut", "jvs": "/c/jvs"}, "sources": {"jsut": 0.8, "jvs": 0.2}}}
    )
    check_selection(cfg)  # reads nothing
    cfg.data.sources = {"jsut": 0.8, "reazon": 0.2}
    with pytest.raises(
        ConfigError, match=r"data.sources: unknown corpus 'reazon' \(data.corpora defines: jsut, jvs\)"
    ):
        check_selection(cfg)
    cfg.data.sources = {"jsut": -1}
    with pytest.raises(ConfigError, match="data.sources.jsut: weight must be a number >= 0"):
        check_selection(cfg)
    cfg.data.sources, cfg.data.corpora = {"jsut": 1.0}, {}
    with pytest.raises(ConfigError, match="data.corpora is empty"):
        check_selection(cfg)
    cfg.data.sources, cfg.data.min_quality = None, "mos >= 3"
    with pytest.raises(ConfigError, match="unknown score 'mos'"):
        check_selection(cfg)
    with pytest.raises(ConfigError, match="unknown score 'mos'"):
        available_hours(cfg.data)  # the orchestrator's pre-launch size check fails the same way
    # YAML-style typing: sources must be a mapping
    with pytest.raises(ConfigError, match="data.sources"):
        TrialConfig.from_dict({"data": {"sources": ["jsut"]}})


# ---------------------------------------------------------------------------------------------------
# end to end on two tiny built-in corpora (signal scores only: cheap)


def mixed_cfg(builtin_corpus, degraded_corpus, cache, **kw):  # noqa: F811
    cfg = data_cfg("builtin", cache, val_utterances=2)
    cfg.data.corpora = {"clean": str(builtin_corpus.dir), "deg": str(degraded_corpus.dir)}
    for k, v in kw.items():
        setattr(cfg.data, k, v)
    return cfg


def test_quality_filter_on_one_corpus(degraded_corpus, quality_cache, tmp_path):  # noqa: F811
    cfg = data_cfg(degraded_corpus.dir, quality_cache, val_utterances=3)
    plain = select(replace(cfg.data, min_quality="clip_ratio <= 1"))  # passes everything
    full = available_hours(cfg)
    cfg.data.min_quality = SIGNAL_FILTER
    filtered = available_hours(cfg)
    deg = read_degradations(degraded_corpus.dir)
    assert 0.3 * full < filtered < 0.75 * full  # about half the corpus is degraded
    levels = [filtered * f for f in (0.3, 0.6, 1.0)]
    subsets, held = [], None
    for h in levels:
        cfg.data.data_hours = h
        sel = select(cfg)
        ids = [i.id for i in sel.train]
        assert sum(i.duration for i in sel.train) / 3600 >= h * (1 - 1e-9)
        # no utterance with audio damage or a wrong transcript is left
        assert not [u for u in ids if u in deg], [deg[u] for u in ids if u in deg]
        subsets.append(set(ids))
        held = held or [i.id for i in sel.heldout]
        assert [i.id for i in sel.heldout] == held  # fixed across hours ...
    assert subsets[0] <= subsets[1] <= subsets[2]
    # ... and the same as without the filter
    assert held == [i.id for i in plain.heldout]
    cfg.data.data_hours = filtered * 1.05
    with pytest.raises(NotEnoughDataError, match=r"the pool \(min_quality .*\) holds only"):
        select(cfg)
    # a filter on the held-out set keeps it clean, still independent of min_quality
    cfg.data.data_hours, cfg.data.val_min_quality = None, SIGNAL_FILTER
    a = select(cfg)
    cfg.data.min_quality = "snr_db >= 35"
    b = select(cfg)
    assert [i.id for i in a.heldout] == [i.id for i in b.heldout]
    assert not [i.id for i in a.heldout if i.id in deg]


def test_mixture_end_to_end(builtin_corpus, degraded_corpus, quality_cache):  # noqa: F811
    cfg = mixed_cfg(builtin_corpus, degraded_corpus, quality_cache, sources={"clean": 1, "deg": 1})
    pool = available_hours(cfg)
    sel = select(cfg.data)
    assert pool == pytest.approx(sel.pool_hours)
    assert {s.name for s in sel.sources} == {"clean", "deg"} and all(s.weight == 0.5 for s in sel.sources)
    # ids and speakers carry the corpus name; each corpus holds out its own fixed items
    assert all(i.id.split("__")[0] == i.extras["corpus"] == i.speaker.split("__")[0] for i in sel.manifest)
    held = sorted(i.id for i in sel.heldout)
    assert len(held) == 4
    # the held-out set is the same at another mixture and under a quality filter
    for kw in ({"sources": {"clean": 0.2, "deg": 0.8}}, {"min_quality": SIGNAL_FILTER}):
        other = mixed_cfg(builtin_corpus, degraded_corpus, quality_cache, sources={"clean": 1, "deg": 1})
        for k, v in kw.items():
            setattr(other.data, k, v)
        s2 = select(other.data)
        assert sorted(i.id for i in s2.heldout) == held
        assert held and not set(held) & {i.id for i in s2.train}
    # nested within the (quality, mixture) level
    cfg.data.min_quality = SIGNAL_FILTER
    level_pool = available_hours(cfg)
    assert level_pool < pool
    prev: set = set()
    for f in (0.4, 0.7, 1.0):
        cfg.data.data_hours = level_pool * f
        s = select(cfg.data)
        ids = {i.id for i in s.train}
        assert prev <= ids
        prev = ids
        parts = s.summary()["sources"]
        assert parts["clean"]["train_hours"] > 0 and parts["deg"]["train_hours"] > 0
    # prepare_data: one feature cache for the mixture, batches with both corpora's speakers
    cfg.data.data_hours = level_pool * 0.7
    p = prepare_data(cfg)
    assert p.corpus.format == "mixture" and p.selection["sources"]["deg"]["weight"] == 0.5
    assert set(p.spk2id) == {f"{c}__{s}" for c in ("clean", "deg") for s in ("mei_a", "mei_b")}
    batch = next(iter(p.make_loader("train", batch_size=2)))
    assert batch["phones"].shape[0] == 2 and all("__" in u for u in batch["ids"])
    assert prepare_data(cfg).stats.computed == 0
    # more hours than the level holds: a clear error with the pool size
    cfg.data.data_hours = level_pool * 1.2
    with pytest.raises(NotEnoughDataError, match=rf"holds only {level_pool:.4f} h .*clean: .*deg: "):
        prepare_data(cfg)
    cfg.data.sources = {"clean": 1, "other": 1}
    with pytest.raises(ConfigError, match="unknown corpus 'other'"):
        prepare_data(cfg)
