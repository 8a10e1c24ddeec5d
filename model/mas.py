"""Monotonic alignment search (Glow-TTS / VITS): the most likely monotonic, surjective text->frame path.

Given scores ``value[b, y, x]`` (log-likelihood of frame ``y`` under token ``x``) and the valid region of
each item (``t_y`` frames, ``t_x`` tokens), find the path that starts at (0, 0), ends at
(t_y - 1, t_x - 1), and at every frame either stays on the token or moves to the next one, maximising the
summed score. Dynamic programme::

    Q[y, x] = value[y, x] + max(Q[y-1, x], Q[y-1, x-1])      (Q[-1, -1] = 0, impossible cells = -1e9)

restricted to the band ``max(0, t_x + y - t_y) <= x <= min(t_x - 1, y)``; the path is read back from the
last cell, moving to ``x - 1`` when ``x == y`` or ``Q[y-1, x] < Q[y-1, x-1]`` (ties stay on ``x``).

Three implementations return bit-identical paths (all accumulate in float32 with the same operations):

* ``maximum_path_numba``: per item, on CPU (numba, parallel over the batch);
* ``maximum_path_torch``: batched tensor ops on any device (GPU), loops over frames only;
* ``maximum_path_reference``: plain python, the readable definition; used by tests.

``maximum_path`` dispatches: numba for CPU tensors, torch for CUDA (override with ``impl``).
Items with more tokens than frames have no valid path; every implementation returns the same
deterministic (degenerate) path for them: the data pipeline is expected to filter such items.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import torch
from torch import Tensor

NEG = np.float32(-1e9)

# numba's default OpenMP threading layer leaves its worker threads spinning after each parallel MAS call;
# on a small CPU they steal the core torch is using and made a tiny training step ~10x slower (2.3 s
# vs 0.22 s). The work-queue layer's threads sleep. An explicit NUMBA_THREADING_LAYER still wins.
if not os.environ.get("NUMBA_THREADING_LAYER"):
    numba.config.THREADING_LAYER = "workqueue"


def _lengths(mask: Tensor) -> tuple[Tensor, Tensor]:
    """mask (B, T_y, T_x) -> (t_y, t_x) per item."""
    t_y = mask[:, :, 0].sum(1).long()
    t_x = mask[:, 0, :].sum(1).long()
    return t_y, t_x


# ----------------------------------------------------------------------------------------------------
# numba (CPU)


@numba.njit(nogil=True, cache=True)
def _path_one(path, value, t_y, t_x):
    if t_x <= 0 or t_y <= 0:
        return
    neg = np.float32(-1e9)
    zero = np.float32(0.0)
    q = np.full((t_y, t_x), neg, dtype=np.float32)
    for y in range(t_y):
        for x in range(max(0, t_x + y - t_y), min(t_x, y + 1)):
            v_cur = neg if x == y else q[y - 1, x]
            if x == 0:
                v_prev = zero if y == 0 else neg
            else:
                v_prev = q[y - 1, x - 1]
            q[y, x] = value[y, x] + max(v_prev, v_cur)
    index = t_x - 1
    for y in range(t_y - 1, -1, -1):
        path[y, index] = 1
        if y > 0 and index != 0 and (index == y or q[y - 1, index] < q[y - 1, index - 1]):
            index -= 1


@numba.njit(nogil=True, parallel=True, cache=True)
def _path_batch(paths, values, t_ys, t_xs):
    for b in numba.prange(paths.shape[0]):
        _path_one(paths[b], values[b], t_ys[b], t_xs[b])


def maximum_path_numba(value: Tensor, mask: Tensor) -> Tensor:
    """value, mask: (B, T_y, T_x) -> path (B, T_y, T_x) in value's dtype and device (computed on CPU)."""
    t_y, t_x = _lengths(mask)
    v = value.detach().float().cpu().numpy()
    paths = np.zeros(v.shape, dtype=np.int32)
    _path_batch(paths, v, t_y.cpu().numpy().astype(np.int64), t_x.cpu().numpy().astype(np.int64))
    return torch.from_numpy(paths).to(device=value.device, dtype=value.dtype)


# ----------------------------------------------------------------------------------------------------
# batched torch (any device)


@torch.no_grad()
def maximum_path_torch(value: Tensor, mask: Tensor) -> Tensor:
    """Batched MAS in tensor ops: vectorised over batch and tokens, a few kernels per frame (fwd + back).

    Out-of-band cells hold -1e9, so ``Q[y-1, y]`` (the "stay" option on the diagonal) is already the
    impossible value and the recurrence needs no special case; a leading column stands for token -1
    (0 before the first frame, impossible afterwards).
    """
    b, t_max_y, t_max_x = value.shape
    dev = value.device
    t_y, t_x = _lengths(mask)
    v = value.detach().float()
    neg = float(NEG)
    ys = torch.arange(t_max_y, device=dev).view(1, -1, 1)
    xs = torch.arange(t_max_x, device=dev).view(1, 1, -1)
    band = (xs >= (t_x - t_y).view(-1, 1, 1) + ys) & (xs <= ys) & (xs < t_x.view(-1, 1, 1))
    v = v.masked_fill(~band, 0.0)  # keep non-finite padding out of the sums
    q = torch.empty(b, t_max_y, t_max_x, device=dev)
    buf = torch.full((b, t_max_x + 1), neg, device=dev)  # [Q[y-1, -1], Q[y-1, 0], ..., Q[y-1, T_x-1]]
    buf[:, 0] = 0.0
    for y in range(t_max_y):
        cur = v[:, y] + torch.maximum(buf[:, :-1], buf[:, 1:])
        cur = torch.where(band[:, y], cur, neg)
        q[:, y] = cur
        buf[:, 1:] = cur
        if y == 0:
            buf[:, 0] = neg
    # where the backward pass moves to the previous token, for every cell at once
    move = torch.zeros(b, t_max_y, t_max_x, dtype=torch.long, device=dev)
    if t_max_y > 1 and t_max_x > 1:
        stay_v, move_v = q[:, :-1, 1:], q[:, :-1, :-1]
        diag = xs[:, :, 1:] == ys[:, 1:]
        move[:, 1:, 1:] = (diag | (stay_v < move_v)).long()
    active = (ys.view(1, -1) < t_y.view(-1, 1)) & (t_x > 0).view(-1, 1)  # (B, T_y)
    move = move * active.unsqueeze(-1)
    index = (t_x - 1).clamp(min=0).unsqueeze(1)  # (B, 1)
    tokens = torch.empty(b, t_max_y, dtype=torch.long, device=dev)
    for y in range(t_max_y - 1, -1, -1):
        tokens[:, y : y + 1] = index
        index = index - move[:, y].gather(1, index)
    path = torch.zeros(b, t_max_y, t_max_x, dtype=value.dtype, device=dev)
    path.scatter_(2, tokens.unsqueeze(-1), active.unsqueeze(-1).to(value.dtype))
    return path


# ----------------------------------------------------------------------------------------------------
# plain python reference


def maximum_path_reference(value: Tensor, mask: Tensor) -> Tensor:
    """The DP written out cell by cell in python (float32 like the others); slow, for tests."""
    t_y, t_x = _lengths(mask)
    v = value.detach().float().cpu().numpy()
    out = np.zeros(v.shape, dtype=np.float32)
    for b in range(v.shape[0]):
        ty, tx = int(t_y[b]), int(t_x[b])
        if tx == 0 or ty == 0:
            continue
        q = {}

        def get(y, x, q=q):
            return q.get((y, x), NEG)

        for y in range(ty):
            for x in range(tx):
                if not (tx + y - ty <= x <= y):
                    continue
                stay = NEG if x == y else get(y - 1, x)
                move = (np.float32(0.0) if y == 0 else NEG) if x == 0 else get(y - 1, x - 1)
                q[(y, x)] = np.float32(v[b, y, x] + max(stay, move))
        index = tx - 1
        for y in range(ty - 1, -1, -1):
            out[b, y, index] = 1.0
            if y > 0 and index != 0 and (index == y or get(y - 1, index) < get(y - 1, index - 1)):
                index -= 1
    return torch.from_numpy(out).to(device=value.device, dtype=value.dtype)


IMPLEMENTATIONS = {
    "numba": maximum_path_numba,
    "torch": maximum_path_torch,
    "reference": maximum_path_reference,
}


def maximum_path(value: Tensor, mask: Tensor, impl: str = "auto") -> Tensor:
    """MAS path (B, T_y, T_x); ``impl`` is auto (numba on CPU, torch on CUDA), numba, torch or reference."""
    if impl == "auto":
        impl = "torch" if value.is_cuda else "numba"
    if impl not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown MAS implementation {impl!r} (choose from auto, {', '.join(IMPLEMENTATIONS)})"
        )
    return IMPLEMENTATIONS[impl](value, mask)
