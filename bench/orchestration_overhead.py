"""Orchestration overhead: the same fake trials (tests/fake_trial.py) in a plain loop vs as a sweep
(local Ray Tune + MLflow on SQLite, one trial at a time), printed per trial and as a ratio.

    python bench/orchestration_overhead.py [--trials 6] [--steps 40] [--step-s 0.05]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--step-s", type=float, default=0.05)
    args = ap.parse_args()

    from model.sink import MemorySink
    from orchestrator.driver import submit_sweep
    from orchestrator.plan import parse_spec, resolve
    from tests import fake_trial

    with tempfile.TemporaryDirectory(prefix="orch_bench_") as tmp:
        tmp = Path(tmp)
        raw = {
            "name": "bench",
            "base": {"preset": "tiny", "train": {"steps": args.steps, "checkpoint_every": 10}},
            "axes": {"width": [16 + 8 * i for i in range(args.trials)], "extra.step_s": [args.step_s]},
            "resources": {"cpu": 1},
            "max_concurrent": 1,
            "storage_path": str(tmp / "sweeps"),
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "trial_fn": "tests.fake_trial:run_trial",
            "estimate": {"count": False},
        }
        plan = resolve(parse_spec(raw))
        t0 = time.perf_counter()
        for tp in plan.trials:
            cfg = tp.config
            cfg.output_dir = str(tmp / "plain" / tp.trial_id)
            fake_trial.run_trial(cfg, MemorySink())
        plain = time.perf_counter() - t0

        t0 = time.perf_counter()
        res = submit_sweep(parse_spec(raw), progress=False, allow_trial_fn=True)  # the fake trial
        swept = time.perf_counter() - t0
        assert res.n_finished == args.trials, res.trials

    n = args.trials
    print(f"{n} fake trials x {args.steps} steps x {args.step_s * 1000:.0f} ms (one at a time)")
    print(f"plain loop:                 {plain:7.1f} s  ({plain / n:.2f} s per trial)")
    print(f"sweep (Ray Tune + MLflow):  {swept:7.1f} s  ({swept / n:.2f} s per trial, incl. Ray start/stop)")
    print(f"overhead per trial:         {(swept - plain) / n:7.2f} s")
    print(f"ratio sweep / plain:        {swept / plain:7.2f}x")


if __name__ == "__main__":
    main()
