"""Helpers shared by the orchestrator tests: test sweep files, free ports, real Ray head / MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "tests" / "sweeps"
BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `tests.fake_trial` importable in this process and (via the driver) in Ray


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_file(tmp: Path, name: str, **overrides) -> Path:
    """Copy ``tests/sweeps/<name>.yaml`` into ``tmp`` with storage (and tracking) under ``tmp``."""
    raw = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    raw["storage_path"] = str(tmp / "sweeps")
    raw.setdefault("tracking_uri", f"sqlite:///{tmp / 'mlflow.db'}")
    raw.update(overrides)
    out = tmp / f"{raw['name']}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    e.setdefault("OMP_NUM_THREADS", "1")
    return e


def cli(*args: str, cwd: Path, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(
        [str(BIN / "vits-scaling"), *args],
        cwd=cwd,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and p.returncode != 0:
        raise AssertionError(
            f"vits-scaling {' '.join(args)} -> {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        )
    return p


class RayHead:
    """``ray start --head --block`` on 127.0.0.1 and a free port; stopped by SIGTERM to that process only."""

    def __init__(self, tmp: Path, num_cpus: int = 2):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log = open(tmp / "ray_head.log", "w")
        self.proc = subprocess.Popen(
            [
                str(BIN / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
                "--port", str(self.port), "--num-cpus", str(num_cpus), "--num-gpus", "0",
                "--include-dashboard", "false", "--disable-usage-stats",
                "--min-worker-port", "0", "--max-worker-port", "0",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, env=env(), cwd=ROOT,
        )  # fmt: skip
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray head exited: {(tmp / 'ray_head.log').read_text()[-2000:]}")
            if "block forever" in (tmp / "ray_head.log").read_text():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("ray head did not start in 90 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class MlflowServer:
    """``mlflow server`` on 127.0.0.1, SQLite backend; stopped by signalling its own process group."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = tmp / "server.db"
        self.log = open(tmp / f"mlflow_server_{self.port}.log", "w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination", str(tmp / "server_art"),
                "--workers", "1",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, env=env(), cwd=tmp, start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("mlflow server did not start in 120 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test created (server + its workers)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
