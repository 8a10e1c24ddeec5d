"""The seam between a trial and whoever watches it.

``model/`` never imports Ray or MLflow. The trainer reports through a ``Sink``; the orchestrator supplies
an MLflow + Ray Tune sink, the CLI an MLflow + progress-bar sink, and tests the in-memory one below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Sink(Protocol):
    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_checkpoint(self, path: str | Path, step: int) -> None: ...

    def set_status(self, status: str, message: str = "") -> None: ...


@dataclass
class MemorySink:
    """Keeps everything in lists; used by tests and as a local record."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    artifacts: list[tuple[str, str | None]] = field(default_factory=list)
    checkpoints: list[tuple[str, int]] = field(default_factory=list)
    status: str = "running"
    message: str = ""

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(path), artifact_path))

    def log_checkpoint(self, path: str | Path, step: int) -> None:
        self.checkpoints.append((str(path), step))

    def set_status(self, status: str, message: str = "") -> None:
        self.status, self.message = status, message

    def history(self, key: str) -> list[tuple[int, float]]:
        return [(s, m[key]) for s, m in self.metrics if key in m]

    def last(self, key: str) -> float | None:
        h = self.history(key)
        return h[-1][1] if h else None


class MultiSink:
    """Fans every call out to several sinks (e.g. MLflow + progress bar)."""

    def __init__(self, *sinks: Sink):
        self.sinks = [s for s in sinks if s is not None]

    def log_params(self, params):
        for s in self.sinks:
            s.log_params(params)

    def log_metrics(self, metrics, step):
        for s in self.sinks:
            s.log_metrics(metrics, step)

    def log_artifact(self, path, artifact_path=None):
        for s in self.sinks:
            s.log_artifact(path, artifact_path)

    def log_checkpoint(self, path, step):
        for s in self.sinks:
            s.log_checkpoint(path, step)

    def set_status(self, status, message=""):
        for s in self.sinks:
            s.set_status(status, message)
