"""Real-time factor of synthesis: wall-clock seconds spent per second of audio produced (< 1 is faster
than real time). CUDA work is synchronised before the clock is read so that queued kernels are counted."""

from __future__ import annotations

import time

import torch


class SynthesisTimer:
    """``with timer: audio = net.infer(...)`` then ``timer.add_audio(n_samples, sr)``; ``timer.rtf``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds = 0.0
        self.audio_seconds = 0.0
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __enter__(self) -> SynthesisTimer:
        self._sync()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._t0

    def add_audio(self, n_samples: int, sr: int) -> None:
        self.audio_seconds += n_samples / sr

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds > 0 else float("nan")


def real_time_factor(synthesis_seconds: float, audio_seconds: float) -> float:
    return synthesis_seconds / audio_seconds if audio_seconds > 0 else float("nan")
