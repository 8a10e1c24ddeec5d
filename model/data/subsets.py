"""The data-hours axis: a fixed held-out set and nested, seeded training subsets.

- Held-out: the ``n`` utterances with the smallest ``sha256(id)``. It depends on nothing but the ids (no
  seed, no order of the listing), so it is the same for every trial of a sweep whatever its subset seed,
  and it never enters any training subset.
- Training order: the remaining utterances sorted by ``sha256(f"{seed}:{id}")`` -- a seeded shuffle that
  also stays stable when the corpus grows (new items slot in; old ones keep their relative order).
- ``subset(h)``: the shortest prefix of that order whose total duration reaches ``h`` hours. Prefixes of
  one order are nested: ``subset(h1)`` is contained in ``subset(h2)`` for ``h1 < h2``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from model.data.manifest import ManifestItem


class NotEnoughDataError(ValueError):
    """A subset asks for more training hours than the corpus has."""


def heldout_key(item_id: str) -> tuple[str, str]:
    """Sort key of the held-out draw: ``sha256(id)`` (ties broken by the id)."""
    return hashlib.sha256(item_id.encode()).hexdigest(), item_id


def order_key(seed: int, item_id: str) -> tuple[str, str]:
    """Sort key of the seeded training order: ``sha256(f"{seed}:{id}")`` (ties broken by the id)."""
    return hashlib.sha256(f"{seed}:{item_id}".encode()).hexdigest(), item_id


@dataclass
class Split:
    train_pool: list[ManifestItem]  # all training candidates, in the seeded order
    heldout: list[ManifestItem]  # fixed validation/test set

    @property
    def available_hours(self) -> float:
        return sum(i.duration for i in self.train_pool) / 3600


def split(
    items: list[ManifestItem], val_utterances: int, seed: int, eligible: list[ManifestItem] | None = None
) -> Split:
    """Held-out set (the ``val_utterances`` smallest ``heldout_key`` among ``eligible``, default all items)
    and the rest of ``items`` in the seeded training order (``order_key``)."""
    if val_utterances < 0:
        raise ValueError(f"data.val_utterances must be >= 0, got {val_utterances}")
    cand = items if eligible is None else eligible
    if val_utterances >= len(cand):
        raise NotEnoughDataError(
            f"data.val_utterances={val_utterances} but the corpus has only {len(cand)} usable utterances"
        )
    held = sorted(cand, key=lambda i: heldout_key(i.id))[:val_utterances]
    held_ids = {i.id for i in held}
    pool = sorted((i for i in items if i.id not in held_ids), key=lambda i: order_key(seed, i.id))
    return Split(pool, sorted(held, key=lambda i: i.id))


def nested_subset(pool: list[ManifestItem], hours: float | None) -> list[ManifestItem]:
    """Shortest prefix of ``pool`` with at least ``hours`` of audio (all of it when ``hours`` is None)."""
    if hours is None:
        return list(pool)
    if not hours > 0:
        raise ValueError(f"data.data_hours must be > 0, got {hours}")
    available = sum(i.duration for i in pool) / 3600
    if hours > available * (1 + 1e-9):
        raise NotEnoughDataError(
            f"data.data_hours={hours:g} but only {available:.4f} h of training audio are available "
            f"({len(pool)} utterances after holding out the validation set)"
        )
    target = hours * 3600
    total = 0.0
    for n, it in enumerate(pool, 1):
        total += it.duration
        if total >= target * (1 - 1e-12):
            return pool[:n]
    return list(pool)
