"""Monotonic alignment search timings: numba (CPU) vs batched torch (CPU, and CUDA when present).

Sizes follow a JP-Extra batch: 8 utterances, up to ~10 s at 44.1 kHz / hop 512 (860 frames) and 250
tokens (with blanks), ragged lengths. Prints milliseconds per call (median of a few runs).
"""

from __future__ import annotations

import statistics
import time

import torch

from model.commons import sequence_mask
from model.mas import maximum_path_numba, maximum_path_torch


def _batch(b: int, t_y: int, t_x: int, device: str):
    g = torch.Generator().manual_seed(0)
    ty = torch.randint(t_y // 2, t_y + 1, (b,), generator=g)
    tx = torch.minimum(torch.randint(t_x // 2, t_x + 1, (b,), generator=g), ty)
    ty[0], tx[0] = t_y, t_x
    value = torch.randn(b, t_y, t_x, generator=g)
    mask = (sequence_mask(ty, t_y).unsqueeze(2) & sequence_mask(tx, t_x).unsqueeze(1)).float()
    return value.to(device), mask.to(device)


def _time(fn, *args, repeat: int = 5) -> float:
    fn(*args)  # warm-up (numba load/compile, CUDA init)
    times = []
    for _ in range(repeat):
        if args[0].is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(*args)
        if args[0].is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{'batch':>5} {'T_y':>5} {'T_x':>5}  {'impl':<12} {'ms/call':>9}")
    for b, t_y, t_x in [(8, 200, 60), (8, 860, 250), (32, 860, 250)]:
        for dev in devices:
            value, mask = _batch(b, t_y, t_x, dev)
            if dev == "cpu":
                ms = _time(maximum_path_numba, value, mask)
                print(f"{b:>5} {t_y:>5} {t_x:>5}  {'numba':<12} {ms:>9.1f}")
            ms = _time(maximum_path_torch, value, mask, repeat=3)
            print(f"{b:>5} {t_y:>5} {t_x:>5}  {'torch-' + dev:<12} {ms:>9.1f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
