"""Monotonic alignment search: numba, batched torch and the python reference agree, and are optimal."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.commons import sequence_mask
from model.mas import (
    maximum_path,
    maximum_path_numba,
    maximum_path_reference,
    maximum_path_torch,
)


def _batch(seed: int, b: int, max_y: int, max_x: int, integer: bool = False):
    g = torch.Generator().manual_seed(seed)
    t_x = torch.randint(1, max_x + 1, (b,), generator=g)
    t_y = t_x + torch.randint(0, max_y - max_x + 1, (b,), generator=g)  # t_y >= t_x
    t_x[0], t_y[0] = max_x, max_y  # one item fills the padded shape
    if integer:  # many ties: checks that every implementation breaks them the same way
        value = torch.randint(-3, 1, (b, max_y, max_x), generator=g).float()
    else:
        value = torch.randn(b, max_y, max_x, generator=g) * 3
    mask = (sequence_mask(t_y, max_y).unsqueeze(2) & sequence_mask(t_x, max_x).unsqueeze(1)).float()
    return value, mask, t_y, t_x


def _brute_force_best(value: torch.Tensor, ty: int, tx: int) -> float:
    """Max path score over every monotonic alignment (each token gets >= 1 contiguous frames)."""
    best = -float("inf")
    for cuts in itertools.combinations(range(1, ty), tx - 1):
        bounds = (0, *cuts, ty)
        score = sum(float(value[y, x]) for x in range(tx) for y in range(bounds[x], bounds[x + 1]))
        best = max(best, score)
    return best


def _check_valid(path: torch.Tensor, ty: int, tx: int) -> None:
    assert path[ty:].sum() == 0 and path[:, tx:].sum() == 0
    inside = path[:ty, :tx]
    assert torch.all(inside.sum(1) == 1), "every frame belongs to exactly one token"
    assert torch.all(inside.sum(0) >= 1), "every token gets at least one frame"
    tokens = inside.argmax(1)
    steps = tokens[1:] - tokens[:-1]
    assert tokens[0] == 0 and tokens[-1] == tx - 1
    assert torch.all((steps == 0) | (steps == 1)), "monotonic, one token at a time"


@pytest.mark.parametrize("integer", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_implementations_agree_on_ragged_batches(seed: int, integer: bool):
    value, mask, t_y, t_x = _batch(seed, b=6, max_y=40, max_x=15, integer=integer)
    ref = maximum_path_reference(value, mask)
    assert torch.equal(maximum_path_numba(value, mask), ref)
    assert torch.equal(maximum_path_torch(value, mask), ref)
    for b in range(value.shape[0]):
        _check_valid(ref[b], int(t_y[b]), int(t_x[b]))


def test_dp_path_is_the_brute_force_optimum():
    value, mask, t_y, t_x = _batch(7, b=8, max_y=9, max_x=5)
    path = maximum_path(value, mask)
    for b in range(value.shape[0]):
        ty, tx = int(t_y[b]), int(t_x[b])
        got = float((path[b] * value[b]).sum())
        assert got == pytest.approx(_brute_force_best(value[b], ty, tx), abs=1e-4)


def test_dispatch_and_degenerate_items():
    value, mask, _, _ = _batch(3, b=3, max_y=12, max_x=6)
    # item 2: more tokens than frames (no valid path) and item 1: empty; all implementations agree
    mask[1] = 0
    mask[2] = 0
    mask[2, :4, :6] = 1
    ref = maximum_path_reference(value, mask)
    assert torch.equal(maximum_path(value, mask), ref)
    assert torch.equal(maximum_path(value, mask, impl="torch"), ref)
    assert ref[1].sum() == 0
    with pytest.raises(ValueError, match="unknown MAS implementation"):
        maximum_path(value, mask, impl="cython")


def test_numba_larger_batch_matches_torch():
    value, mask, _, _ = _batch(11, b=8, max_y=300, max_x=80)
    assert torch.equal(maximum_path_numba(value, mask), maximum_path_torch(value, mask))
