"""The data-hours axis: nested subsets, a fixed held-out set, clear errors; and the batch sampler's order."""

from __future__ import annotations

import random

import pytest

from model.data.dataset import BucketBatchSampler
from model.data.manifest import ManifestItem
from model.data.subsets import NotEnoughDataError, nested_subset, split


def corpus(n=400, seed=0):
    rng = random.Random(seed)
    return [
        ManifestItem(f"u{i:04d}", f"spk{i % 5}", "あ", f"/x/u{i:04d}.wav", rng.uniform(1.0, 8.0), 22050)
        for i in range(n)
    ]


def hours(items):
    return sum(i.duration for i in items) / 3600


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_nested_subsets(seed):
    items = corpus()
    sp = split(items, 10, seed)
    levels = [0.05, 0.1, 0.2, 0.3, 0.45, sp.available_hours]
    subsets = [nested_subset(sp.train_pool, h) for h in levels]
    for h, sub in zip(levels, subsets, strict=True):
        assert hours(sub) >= h * (1 - 1e-9)
        assert hours(sub[:-1]) < h  # the shortest prefix that reaches h
    for a, b in zip(subsets, subsets[1:], strict=False):
        assert {i.id for i in a} < {i.id for i in b}
    assert nested_subset(sp.train_pool, None) == sp.train_pool


def test_heldout_fixed_and_disjoint():
    items = corpus()
    ref = split(items, 12, 0).heldout
    assert len(ref) == 12
    for seed in (0, 1, 2, 99):
        sp = split(list(reversed(items)), 12, seed)  # order of the listing and subset seed do not matter
        assert [i.id for i in sp.heldout] == [i.id for i in ref]
        held = {i.id for i in sp.heldout}
        for h in (0.05, 0.3, sp.available_hours):
            assert held.isdisjoint(i.id for i in nested_subset(sp.train_pool, h))
        assert len(held) + len(sp.train_pool) == len(items)
    # different seeds give different training orders
    assert split(items, 12, 0).train_pool[:20] != split(items, 12, 1).train_pool[:20]


def test_order_is_stable_when_corpus_grows():
    small, big = corpus(200), corpus(400)
    a = [i.id for i in split(small, 0, 3).train_pool]
    b = [i.id for i in split(big, 0, 3).train_pool if i.id in set(a)]
    assert a == b


def test_too_many_hours_is_a_clear_error():
    sp = split(corpus(50), 5, 0)
    with pytest.raises(NotEnoughDataError, match=r"data_hours=5 but only 0\.\d+ h"):
        nested_subset(sp.train_pool, 5.0)
    with pytest.raises(NotEnoughDataError, match="val_utterances"):
        split(corpus(5), 5, 0)
    with pytest.raises(ValueError, match="> 0"):
        nested_subset(sp.train_pool, 0.0)


def test_sampler_pure_function_of_seed_and_epoch():
    rng = random.Random(0)
    lengths = [rng.randint(50, 800) for _ in range(101)]
    s = BucketBatchSampler(lengths, 4, seed=3, epoch=2, bucket_batches=4)
    batches = list(s)
    assert batches == list(BucketBatchSampler(lengths, 4, seed=3, epoch=2, bucket_batches=4))
    assert batches != list(BucketBatchSampler(lengths, 4, seed=3, epoch=3, bucket_batches=4))
    assert batches != list(BucketBatchSampler(lengths, 4, seed=4, epoch=2, bucket_batches=4))
    assert all(len(b) == 4 for b in batches)  # the short last batch is topped up
    assert set(range(101)) <= {i for b in batches for i in b}  # every item each epoch
    assert len(s) == len(batches) == 26
    # resume: skipping k batches yields exactly the rest of the same epoch
    assert (
        list(BucketBatchSampler(lengths, 4, seed=3, epoch=2, skip_batches=7, bucket_batches=4)) == batches[7:]
    )
    # buckets: batches hold similar lengths (much less spread than random batches)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches[:-1])
    assert spread < 0.5 * 26 * (800 - 50) / 2
    # ranks split the same epoch's batches without overlap
    r0 = list(BucketBatchSampler(lengths, 4, seed=3, epoch=2, num_replicas=2, rank=0, bucket_batches=4))
    r1 = list(BucketBatchSampler(lengths, 4, seed=3, epoch=2, num_replicas=2, rank=1, bucket_batches=4))
    assert len(r0) == len(r1) == 13 and not {tuple(b) for b in r0} & {tuple(b) for b in r1}


def test_sampler_smaller_than_batch():
    batches = list(BucketBatchSampler([10, 20, 30], 8, seed=0))
    assert len(batches) == 1 and len(batches[0]) == 8 and set(batches[0]) == {0, 1, 2}
