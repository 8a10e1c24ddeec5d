"""File helpers for shared directories: atomic writes (temp file + rename) and an exclusive file lock."""

from __future__ import annotations

import fcntl
import math
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def file_lock(path: str | Path):
    """Exclusive advisory lock (``flock``) held for the ``with`` block; other holders wait.

    Works between processes and between threads (each ``open`` is its own lock owner).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class NullBar:
    """Stands in for a progress bar when progress is off."""

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Counted:
    """Counts progress toward ``total``: fractional updates accumulate, the shown count is a whole number and
    never passes the total (work beyond the target, kept for later, does not run the bar past its end)."""

    def __init__(self, total: float):
        self.total = max(1, math.ceil(total))
        self.done = 0.0

    def _step(self, n: float) -> int:
        before = min(int(self.done), self.total)
        self.done += n
        return min(int(self.done), self.total) - before


class _TtyBar(_Counted):
    def __init__(self, total: float, desc: str, unit: str):
        super().__init__(total)
        from tqdm import tqdm

        self._bar = tqdm(total=self.total, desc=desc, unit=unit, leave=False)

    def update(self, n: float = 1) -> None:
        if k := self._step(n):
            self._bar.update(k)

    def close(self) -> None:
        self._bar.close()


class _LogBar(_Counted):
    """For a log (CI, ``| tee``): one plain line every ``every_s`` seconds and one at the end, instead of
    thousands of carriage-return redraws in one line; never two lines with the same count."""

    def __init__(self, total: float, desc: str, unit: str, every_s: float, stream):
        super().__init__(total)
        self.desc, self.unit, self.every_s, self.stream = desc, unit, every_s, stream
        self.t0 = self.last = time.monotonic()
        self.closed = False
        self.printed: int | None = None  # the count of the last line written

    def _print(self) -> None:
        n = min(int(self.done), self.total)
        self.printed = n
        el = time.monotonic() - self.t0
        self.stream.write(
            f"{self.desc}: {n}/{self.total} {self.unit} ({100 * n / self.total:.0f}%, {el:.0f} s)\n"
        )
        self.stream.flush()

    def update(self, n: float = 1) -> None:
        self._step(n)
        moved = self.printed != min(int(self.done), self.total)  # a line that says nothing new is noise
        if moved and time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self._print()

    def close(self) -> None:
        """The final line, unless the last line written already showed this count (no repeated 100% line)."""
        if not self.closed:
            self.closed = True
            if self.printed != min(int(self.done), self.total):
                self._print()


def progress_bar(
    enabled: bool, total: float, desc: str, unit: str = "it", *, every_s: float = 5.0, stream=None
):
    """A progress bar toward ``total`` (``update(n)`` takes fractions; the count shown is whole and capped):
    a tqdm bar on a terminal, a plain line every ``every_s`` seconds when stderr is not a terminal, nothing
    when ``enabled`` is False or there is nothing to do."""
    if not enabled or not total:
        return NullBar()
    stream = stream or sys.stderr
    if not stream.isatty():
        return _LogBar(total, desc, unit, every_s, stream)
    return _TtyBar(total, desc, unit)
