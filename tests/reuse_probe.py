"""A trial function for the reused-worker tests: records what the trial finds in its process, then leaves
things behind on purpose for the next trial the same Ray worker runs, then trains as the fake trial does.

Recorded (``probe.jsonl`` in the trial directory, one line per attempt): the pid, its config (trial id,
width, seed, run id), a draw from Python's, numpy's and torch's global random streams, the environment
variables the previous trial set, and the fluent MLflow run it finds active. Left behind: an environment
variable, ``MLFLOW_RUN_ID`` naming an open fluent MLflow run (which would make the next ``mlflow.start_run``
log into it), and random streams advanced past the draws.
numpy and torch are imported at module level, as the real trainer's module does, so the driver seeds them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from tests.fake_trial import run_trial as fake_run_trial

LEAK_ENV = "VITS_SCALING_TEST_LEFT_BEHIND"


def run_trial(cfg, sink, *, resume: bool = True) -> dict:
    import mlflow

    active = mlflow.active_run()
    rec = {
        "pid": os.getpid(),
        "trial_id": cfg.trial_id,
        "width": cfg.model.hidden_channels,
        "seed": cfg.train.seed,
        "run_id": cfg.tracking.run_id,
        "random": random.random(),
        "numpy": float(np.random.rand()),
        "torch": float(torch.rand(1)),
        "left_env": os.environ.get(LEAK_ENV),
        "mlflow_run_id_env": os.environ.get("MLFLOW_RUN_ID"),
        "active_run": active.info.run_id if active else None,
    }
    mlflow.set_tracking_uri(cfg.tracking.uri)
    left = mlflow.start_run(run_name=f"left open by {cfg.trial_id}")
    rec["left_open"] = left.info.run_id
    with open(Path(cfg.output_dir) / "probe.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    os.environ[LEAK_ENV] = cfg.trial_id
    os.environ["MLFLOW_RUN_ID"] = left.info.run_id
    random.random(), np.random.rand(7), torch.rand(7)  # streams moved on
    return fake_run_trial(cfg, sink, resume=resume)
