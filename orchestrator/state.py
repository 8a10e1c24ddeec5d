"""Where a submitted sweep keeps its state, so ``status/resume/cancel/best NAME`` find it later.

``<storage_path>/<name>/`` holds ``sweep.json`` (spec, paths, tracking URI, parent run id, driver pid),
``trials.json`` (the resolved TrialConfig of every trial, with its MLflow run id), ``sweep.yaml`` (a copy
of the submitted file), ``ray/`` (the Ray Tune experiment) and ``trials/<trial_id>/`` (each trial's
output directory). ``runs/sweeps_index.json`` (relative to the working directory) maps names to sweep
directories for sweeps whose ``storage_path`` is elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from orchestrator.plan.load import load_spec

STATE_FILE = "sweep.json"
TRIALS_FILE = "trials.json"
CANCEL_FILE = "cancel.requested"
INDEX = Path("runs") / "sweeps_index.json"
DEFAULT_STORAGE = Path("runs") / "sweeps"


class SweepNotFound(FileNotFoundError):
    """No submitted sweep by that name, directory or file (the message says where it looked)."""


def _write(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)


def save_state(sweep_dir: Path, state: dict[str, Any], trials: dict[str, dict] | None = None) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write(sweep_dir / STATE_FILE, state)
    if trials is not None:
        _write(sweep_dir / TRIALS_FILE, trials)
    try:
        index = json.loads(INDEX.read_text()) if INDEX.exists() else {}
        index[state["name"]] = str(sweep_dir.resolve())
        INDEX.parent.mkdir(parents=True, exist_ok=True)
        _write(INDEX, index)
    except (OSError, ValueError):  # the index is a convenience; the sweep dir is the truth
        pass


def load_state(sweep_dir: Path) -> dict[str, Any]:
    return json.loads((sweep_dir / STATE_FILE).read_text(encoding="utf-8"))


def load_trials(sweep_dir: Path) -> dict[str, dict]:
    return json.loads((sweep_dir / TRIALS_FILE).read_text(encoding="utf-8"))


def update_state(sweep_dir: Path, **changes: Any) -> dict[str, Any]:
    state = load_state(sweep_dir)
    state.update(changes)
    _write(sweep_dir / STATE_FILE, state)
    return state


def find_sweep(name: str, storage: str | Path | None = None) -> Path:
    """The sweep directory of ``name``: a sweep dir or YAML path, ``storage/name``, the index, or the default."""
    p = Path(name)
    if (p / STATE_FILE).exists():
        return p.resolve()
    if p.suffix in (".yaml", ".yml") and p.exists():
        spec = load_spec(p, check=False)  # its name and storage only: nothing it points to is read
        d = Path(storage or spec.storage_path).expanduser().resolve() / spec.name
        if (d / STATE_FILE).exists():
            return d
        raise SweepNotFound(f"sweep {spec.name!r} (from {p}) has not been submitted: no {d / STATE_FILE}")
    candidates = []
    if storage is not None:
        candidates.append(Path(storage).expanduser().resolve() / name)
    if INDEX.exists():
        try:
            hit = json.loads(INDEX.read_text()).get(name)
            if hit:
                candidates.append(Path(hit))
        except ValueError:
            pass
    candidates.append(DEFAULT_STORAGE.resolve() / name)
    for c in candidates:
        if (c / STATE_FILE).exists():
            return c
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise SweepNotFound(f"no sweep named {name!r} (looked in {looked}; pass --storage DIR or the sweep YAML)")


def driver_alive(state: dict[str, Any]) -> bool:
    drv = state.get("driver") or {}
    if drv.get("host") != socket.gethostname() or not drv.get("pid"):
        return False
    try:
        os.kill(int(drv["pid"]), 0)
    except (ProcessLookupError, PermissionError):
        return False
    cmdline = Path(f"/proc/{drv['pid']}/cmdline")
    if cmdline.exists():  # pid reuse: only a python process can be our driver
        return b"python" in cmdline.read_bytes() or b"vits-scaling" in cmdline.read_bytes()
    return True


def this_driver() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}
