"""Orchestration overhead: the same fake trials (tests/fake_trial.py) in a plain in-process loop and as a
sweep (local Ray Tune + MLflow on SQLite, one trial at a time), measured side by side in one run; printed
per trial, as a ratio, and as each trial's start-up breakdown (``startup.json``, written by
``orchestrator.trial.StartupClock``: worker start and imports, config, checkpoint restore, trial function
import, MLflow run lookup + status + params, the trial function's own start to its first step, teardown).

Ray is started and stopped by the bench around the sweep, so its start/stop (a cost per sweep, not per
trial) is printed apart; "overhead per trial" is the sweep's wall time less Ray start/stop less the plain
loop, over the trials. ``--real`` also profiles the start-up of the real trainer (``model.train``): imports,
config build, data preparation, FLOP counting, nets; on an empty feature cache, in a new process on the
filled cache (a worker that is not reused) and again in the same process (a reused worker).

``--compare`` runs the same sweep a second time with a worker per trial (``reuse_actors`` off), as
before workers were reused.

    python bench/orchestration_overhead.py [--trials 6] [--steps 40] [--step-s 0.05] [--compare] [--real]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ORDER = (
    "worker_boot_imports",
    "worker_to_trial",
    "config_and_parent",
    "checkpoint_restore",
    "trial_fn_import",
    "mlflow_setup",
    "trial_to_step1",
    "teardown",
)


def fake_sweep(args) -> None:
    import ray
    from ray import tune

    from model.sink import MemorySink
    from orchestrator.driver import submit_sweep
    from orchestrator.plan import parse_spec, resolve
    from tests import fake_trial

    modes = [True, False] if args.compare else [True]
    with tempfile.TemporaryDirectory(prefix="orch_bench_") as tmp:
        tmp = Path(tmp)

        def raw(name: str) -> dict:
            return {
                "name": name,
                "base": {"preset": "tiny", "train": {"steps": args.steps, "checkpoint_every": 10}},
                "axes": {"width": [16 + 8 * i for i in range(args.trials)], "extra.step_s": [args.step_s]},
                "resources": {"cpu": 1},
                "max_concurrent": 1,
                "storage_path": str(tmp / "sweeps"),
                "tracking_uri": f"sqlite:///{tmp / name / 'mlflow.db'}",  # each sweep creates its own store
                "trial_fn": "tests.fake_trial:run_trial",
                "estimate": {"count": False},
            }

        plan = resolve(parse_spec(raw("plain")))
        t0 = time.perf_counter()
        for tp in plan.trials:
            cfg = tp.config
            cfg.output_dir = str(tmp / "plain" / tp.trial_id)
            fake_trial.run_trial(cfg, MemorySink())
        plain = time.perf_counter() - t0

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        swept, phases = {}, {}
        tune_config = tune.TuneConfig
        for reuse in modes:
            name = "reuse" if reuse else "noreuse"
            if not reuse:  # the driver always reuses workers; the bench turns that off to show the difference
                tune.TuneConfig = lambda **kw: tune_config(**{**kw, "reuse_actors": False})
            try:
                t0 = time.perf_counter()
                res = submit_sweep(parse_spec(raw(name)), progress=False, allow_trial_fn=True)  # fake trial
                swept[reuse] = time.perf_counter() - t0
            finally:
                tune.TuneConfig = tune_config
            assert res.n_finished == args.trials, res.trials
            phases[reuse] = []
            for tp in plan.trials:
                p = tmp / "sweeps" / name / "trials" / tp.trial_id / "startup.json"
                phases[reuse].append(json.loads(p.read_text()) if p.exists() else {})
        t0 = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - t0

    n = args.trials
    fixed = ray_start + ray_stop
    print(f"{n} fake trials x {args.steps} steps x {args.step_s * 1000:.0f} ms (one at a time, 2 CPUs)")
    print(f"plain loop:                   {plain:7.1f} s  ({plain / n:.2f} s per trial)")
    print(f"Ray start + stop (per sweep): {ray_start:7.1f} s + {ray_stop:.1f} s")
    for reuse in modes:
        w, label = swept[reuse], "reused workers" if reuse else "a worker per trial"
        print(f"sweep, {label + ':':23s}{w:7.1f} s  ({w / n:.2f} s per trial, Ray already up)")
        print(
            f"  overhead per trial:         {(w - plain) / n:7.2f} s  ({(w + fixed - plain) / n:.2f} s with Ray start/stop)"
        )
        print(
            f"  ratio sweep / plain:        {w / plain:7.2f}x  ({(w + fixed) / plain:.2f}x with Ray start/stop)"
        )
        ph = phases[reuse]
        rest = ph[1:] or [{}]
        print("  start-up per trial (s; startup.json): first trial | mean of the others")
        for k in ORDER:
            a = ph[0].get(k, 0.0)
            b = sum(p.get(k, 0.0) for p in rest) / len(rest)
            print(f"    {k:22s} {a:7.3f} | {b:7.3f}")
        sums = [sum(p.get(k, 0.0) for k in ORDER) for p in ph]
        print(f"    {'sum in the trial':22s} {sums[0]:7.3f} | {sum(sums[1:]) / max(1, n - 1):7.3f}")
        other = (w - plain) / n - sum(sums) / n
        print(
            f"    {'rest (Tune, driver)':22s} {other:7.3f} per trial: scheduling, checkpoint reports, run creation"
        )
        ran = sorted((p for p in ph if "started_at" in p and "ended_at" in p), key=lambda p: p["started_at"])
        gaps = [b["started_at"] - a["ended_at"] for a, b in zip(ran, ran[1:], strict=False)]
        if gaps:
            print(
                f"    {'gap between trials':22s} {sum(gaps) / len(gaps):7.3f} (one trial's end to the next one's start)"
            )


def real_pieces(tmp: Path, attempt: str) -> dict[str, float]:
    """The real trainer's start-up pieces for one trial of preset tiny (cache and corpus under ``tmp``)."""
    r = {}
    t0 = time.perf_counter()
    import torch

    from model.config import preset_config
    from model.counting import flops_per_step
    from model.train.data import TrialData
    from model.train.init import build_state

    r["imports (torch, model.train)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = preset_config("tiny")
    cfg.output_dir = str(tmp / attempt)
    cfg.data.cache_dir = str(tmp / "cache")
    r["config build"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = TrialData.prepare(cfg, device=torch.device("cpu"))
    r["data preparation + loading"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        flops_per_step(cfg, utterance_s=data.mean_utterance_s, disk_cache=cfg.data.cache_dir)
    r["FLOP counting"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    build_state(cfg, torch.device("cpu"))
    r["model build"] = time.perf_counter() - t0
    return r


def real_startup(args) -> None:
    """The real trainer's start-up, in process: cold (empty feature cache), a new process on the filled
    cache (what a worker that is not reused pays), and the same process again (a reused worker)."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="orch_bench_real_") as tmp:
        cold = real_pieces(Path(tmp), "cold")
        out = subprocess.run(
            [sys.executable, __file__, "--real-child", tmp], capture_output=True, text=True, check=True
        ).stdout
        fresh = json.loads(out.strip().splitlines()[-1])
        warm = real_pieces(Path(tmp), "warm")
    print("real trainer start-up (preset tiny, s): cold cache | new process | reused process")
    for k in cold:
        print(f"  {k:30s} {cold[k]:8.3f} | {fresh[k]:8.3f} | {warm[k]:8.3f}")
    print(f"  {'sum':30s} {sum(cold.values()):8.3f} | {sum(fresh.values()):8.3f} | {sum(warm.values()):8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--step-s", type=float, default=0.05)
    ap.add_argument("--real", action="store_true", help="also profile the real trainer's start-up")
    ap.add_argument("--compare", action="store_true", help="also run the sweep without worker reuse")
    ap.add_argument("--real-child", help=argparse.SUPPRESS)  # the "new process" column of --real
    args = ap.parse_args()
    if args.real_child:
        print(json.dumps(real_pieces(Path(args.real_child), "child")))
        return
    fake_sweep(args)
    if args.real:
        real_startup(args)


if __name__ == "__main__":
    main()
