"""Dynamic time warping of two feature sequences (frames x dims), Euclidean frame cost.

Steps (1, 0), (0, 1), (1, 1) with equal weight, path from (0, 0) to (n-1, m-1). The accumulation runs in
numba (O(n m), about 10 ms for two 5-second utterances at a 5 ms hop); the frame-cost matrix is one
vectorised numpy expression.
"""

from __future__ import annotations

import numba
import numpy as np


def cost_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between every frame of ``a`` (n, d) and every frame of ``b`` (m, d)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


@numba.njit(cache=True)
def _accumulate(cost: np.ndarray) -> np.ndarray:
    n, m = cost.shape
    acc = np.full((n, m), np.inf)
    acc[0, 0] = cost[0, 0]
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                continue
            best = np.inf
            if i > 0 and j > 0 and acc[i - 1, j - 1] < best:
                best = acc[i - 1, j - 1]
            if i > 0 and acc[i - 1, j] < best:
                best = acc[i - 1, j]
            if j > 0 and acc[i, j - 1] < best:
                best = acc[i, j - 1]
            acc[i, j] = cost[i, j] + best
    return acc


@numba.njit(cache=True)
def _backtrack(acc: np.ndarray):
    n, m = acc.shape
    i, j = n - 1, m - 1
    ii = np.empty(n + m, dtype=np.int64)
    jj = np.empty(n + m, dtype=np.int64)
    k = 0
    while True:
        ii[k] = i
        jj[k] = j
        k += 1
        if i == 0 and j == 0:
            break
        if i == 0:
            j -= 1
        elif j == 0:
            i -= 1
        else:
            d, u, l = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
            if d <= u and d <= l:  # prefer the diagonal on ties
                i -= 1
                j -= 1
            elif u <= l:
                i -= 1
            else:
                j -= 1
    return ii[:k][::-1].copy(), jj[:k][::-1].copy()


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align ``a`` (n, d) with ``b`` (m, d); returns index arrays ``(ia, ib)`` of the optimal path."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 1:
        a = a[:, None]
    if b.ndim == 1:
        b = b[:, None]
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"dtw_path: empty sequence (lengths {len(a)} and {len(b)})")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"dtw_path: feature sizes differ ({a.shape[1]} vs {b.shape[1]})")
    acc = _accumulate(cost_matrix(a, b))
    return _backtrack(acc)
