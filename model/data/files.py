"""File helpers for shared directories: atomic writes (temp file + rename) and an exclusive file lock."""

from __future__ import annotations

import fcntl
import os
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
    """Stands in for a tqdm bar when progress is off."""

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(enabled: bool, total: float, desc: str, unit: str = "it", **kw):
    if not enabled or not total:
        return NullBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, **kw)
