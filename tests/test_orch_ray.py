"""Sweeps on real Ray and a real MLflow server, started and stopped here; fast fake trials.

* a Ray head (``ray start --head`` on 127.0.0.1, free port) receives sweeps through ``--address``, and an
  ``mlflow server`` (SQLite) receives their runs: one parent, one child per trial, artifacts, histories;
* a trial that raises is failed with its error in its run while the others finish; a trial that fails
  once resumes from its checkpoint in the same run;
* the driver SIGKILLed mid-sweep (embedded local Ray), then ``sweep resume``: finished trials are kept,
  the rest complete, exactly one child run per trial; re-submitting the finished sweep creates nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from orch_helpers import BIN, MlflowServer, RayHead, cli, env, sweep_file

from analysis.mlflow_contract import TAG_ERROR, TAG_PARAM_CONFLICTS, TAG_ROLE, TAG_STATUS, TAG_SWEEP
from orchestrator.tracking import Tracker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("services")
    with ThreadPoolExecutor(1) as pool:  # the MLflow server starts while the Ray head does
        pending = pool.submit(MlflowServer, tmp)
        try:
            head = RayHead(tmp)
        except Exception:
            with contextlib.suppress(Exception):
                pending.result().stop()
            raise
        try:
            server = pending.result()
        except Exception:
            head.stop()
            raise
    yield head, server
    server.stop()
    head.stop()


def _runs(uri: str, sweep: str):
    t = Tracker(uri)
    eid = t.experiment_id("vits-scaling", create=False)
    trials = t.search(eid, {TAG_SWEEP: sweep, TAG_ROLE: "trial"})
    parents = t.search(eid, {TAG_SWEEP: sweep, TAG_ROLE: "sweep"})
    return t, trials, parents


def test_sweep_on_ray_head_into_mlflow_server(services, tmp_path):
    head, server = services
    f = sweep_file(tmp_path, "tiny2", tracking_uri=server.uri)
    p = cli("sweep", "submit", str(f), "--allow-trial-fn", "--address", head.address, "--json", cwd=tmp_path)
    res = json.loads(p.stdout)
    assert [t["status"] for t in res["trials"]] == ["finished", "finished"]
    t, trials, parents = _runs(server.uri, "tiny2")
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    arts = {a.path for a in t.client.list_artifacts(parents[0].info.run_id, "sweep")}
    assert {"sweep/sweep.yaml", "sweep/trial_table.json"} <= arts
    for r in trials:
        assert r.data.tags[TAG_STATUS] == "finished" and r.info.status == "FINISHED"
        assert len(t.client.get_metric_history(r.info.run_id, "loss_g_total")) == 6
        assert r.data.params["axis.width"] in ("16", "32")
    # the sweep ran on the head we started, not on a local Ray
    ray_log = Path(head.log.name).read_text()
    assert "Ray runtime started" in ray_log or "block forever" in ray_log
    # queries
    best = json.loads(cli("best", "tiny2", "--storage", str(tmp_path / "sweeps"), "--metric", "dnsmos_ovrl",
                          "--mode", "max", "--json", cwd=tmp_path).stdout)  # fmt: skip
    assert len(best) == 2 and best[0]["value"] >= best[1]["value"]
    assert best[0]["axes"]["width"] == 32  # the bigger model has the lower loss under the fake law
    only = json.loads(cli("best", "tiny2", "--storage", str(tmp_path / "sweeps"), "--metric", "val_mel_l1",
                          "--where", "width < 20", "--json", cwd=tmp_path).stdout)  # fmt: skip
    assert [r["axes"]["width"] for r in only] == [16]
    st = json.loads(
        cli("sweep", "status", "tiny2", "--storage", str(tmp_path / "sweeps"), "--json", cwd=tmp_path).stdout
    )
    assert st["counts"] == {"finished": 2} and all(r["step"] == 6 for r in st["trials"])
    bad = cli(
        "best", "tiny2", "--storage", str(tmp_path / "sweeps"), "--metric", "nope", cwd=tmp_path, check=False
    )
    assert bad.returncode == 2 and "not logged by any trial" in bad.stderr


def test_failing_trial_is_marked_and_others_finish(services, tmp_path):
    head, server = services
    f = sweep_file(tmp_path, "raising", tracking_uri=server.uri)
    p = cli(
        "sweep",
        "submit",
        str(f),
        "--allow-trial-fn",
        "--address",
        head.address,
        "--json",
        cwd=tmp_path,
        check=False,
    )
    assert p.returncode == 1, p.stderr[-2000:]
    res = json.loads(p.stdout)
    by_width = {}
    for row in res["trials"]:
        by_width[row["name"].split()[0]] = row
    assert by_width["width=16"]["status"] == "finished"
    assert by_width["width=32"]["status"] == "finished"
    assert by_width["width=24"]["status"] == "failed"
    t, trials, _ = _runs(server.uri, "raising")
    assert len(trials) == 3  # retries (max_failures: 1) reused their runs
    failed = next(r for r in trials if r.data.params.get("axis.width") == "24")
    assert "fake trial failure at step 2" in failed.data.tags[TAG_ERROR] and failed.info.status == "FAILED"
    resumed = next(r for r in trials if r.data.params.get("axis.width") == "32")
    assert TAG_PARAM_CONFLICTS not in resumed.data.tags
    out = Path(tmp_path / "sweeps" / "raising" / "trials" / resumed.data.tags["vits_scaling.trial_id"])
    starts = [json.loads(x)["start_step"] for x in (out / "attempts.jsonl").read_text().splitlines()]
    assert starts == [0, 4]  # failed at step 5, resumed from the step-4 checkpoint
    steps = [m.step for m in t.client.get_metric_history(resumed.info.run_id, "loss_g_total")]
    assert steps[-1] == 8 and set(steps) == set(range(1, 9))


def test_reused_workers_leak_no_config_seed_env_or_mlflow_run(services, tmp_path, monkeypatch):
    """Tune reuses one worker for trial after trial (``reuse_actors``): each trial still gets its own
    config, seeded random streams and MLflow run; what the previous trial left (an env var,
    ``MLFLOW_RUN_ID``, an open fluent run, advanced streams) is gone; a failed trial's retry resumes from
    its checkpoint in the same run."""
    from orchestrator.driver import submit_sweep
    from tests.reuse_probe import LEAK_ENV

    head, server = services
    monkeypatch.chdir(tmp_path)
    f = sweep_file(tmp_path, "reuse", tracking_uri=server.uri)
    res = submit_sweep(f, address=head.address, progress=False, allow_trial_fn=True)
    assert [t["status"] for t in res.trials] == ["finished"] * 4, res.trials
    t, runs, _ = _runs(server.uri, "reuse")
    assert len(runs) == 4  # the retries reused their runs
    by_tid = {r.data.tags["vits_scaling.trial_id"]: r for r in runs}
    probes = []
    for row in res.trials:
        tdir = tmp_path / "sweeps" / "reuse" / "trials" / row["trial_id"]
        attempts = [json.loads(x) for x in (tdir / "probe.jsonl").read_text().splitlines()]
        planned = json.loads((tmp_path / "sweeps" / "reuse" / "trials.json").read_text())[row["trial_id"]]
        for a in attempts:  # its own config and run, in every attempt
            assert a["trial_id"] == row["trial_id"] and a["run_id"] == row["run_id"]
            assert a["width"] == planned["model"]["hidden_channels"] and a["seed"] == planned["train"]["seed"]
            assert a["left_env"] is None and a["mlflow_run_id_env"] is None and a["active_run"] is None
            left = t.client.get_run(a["left_open"])  # ended when its trial ended, not left RUNNING
            assert left.info.status in ("FINISHED", "FAILED") and left.info.run_id != row["run_id"]
        assert json.loads((tdir / "tracking" / "tracking.json").read_text())["run_id"] == row["run_id"]
        assert by_tid[row["trial_id"]].data.params["axis.width"] == str(planned["axes"]["width"])
        if planned["axes"].get("extra.fail"):  # failed at step 3, retried from the step-2 checkpoint
            starts = [json.loads(x)["start_step"] for x in (tdir / "attempts.jsonl").read_text().splitlines()]
            assert starts == [0, 2] and len(attempts) == 2
        probes += attempts
    pids = [p["pid"] for p in probes]
    assert len(set(pids)) < len(pids), "no worker ran a second trial: actors were not reused"
    # same seed -> the same draws, whatever ran before in that worker; another seed -> other draws
    draws = {}
    for p in probes:
        draws.setdefault(p["seed"], set()).add((p["random"], p["numpy"], p["torch"]))
    assert {s: len(d) for s, d in draws.items()} == {1: 1, 2: 1}
    assert draws[1] != draws[2]
    assert LEAK_ENV not in os.environ


def _finished_trials(sweep_dir: Path) -> set[str]:
    out = set()
    for s in sweep_dir.glob("trials/*/tracking/status.json"):
        if json.loads(s.read_text())["status"] == "finished":
            out.add(s.parent.parent.name)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has exited (nobody reaped it yet)


DAEMONS = (
    "RuntimeEnvAgent",
    "DashboardAgent",
    "dashboard/agent.py",
)  # Ray helpers: no trial code; may linger


def _daemon(pid: int) -> bool:
    return any(d in _cmd(pid) for d in DAEMONS)


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:150]
    except OSError:
        return "?"


def _descendants(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def test_driver_killed_then_resumed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    f = sweep_file(tmp_path, "tiny4", tracking_uri=uri)
    sweep_dir = tmp_path / "sweeps" / "tiny4"
    log = open(tmp_path / "driver.log", "w")
    drv = subprocess.Popen(
        [str(BIN / "vits-scaling"), "sweep", "submit", str(f), "--allow-trial-fn"], cwd=tmp_path, env=env(), stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not _finished_trials(sweep_dir):
            assert drv.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
            time.sleep(0.3)
        before = _finished_trials(sweep_dir)
        assert 1 <= len(before) < 4, "kill must land mid-sweep"
        family = _descendants(drv.pid)
        os.kill(drv.pid, signal.SIGKILL)
        drv.wait(10)
        # Ray's processes share the driver's fate; wait for them so nothing of the old run writes later
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(p) and not _daemon(p) for p in family):
            time.sleep(0.5)
    finally:
        if drv.poll() is None:
            drv.kill()
        log.close()
    leftovers = {p: _cmd(p) for p in family if _alive(p)}
    for p in leftovers:  # only processes of the driver we started
        os.kill(p, signal.SIGKILL)
    workers = {p: c for p, c in leftovers.items() if not any(d in c for d in DAEMONS)}
    assert not workers, f"the killed driver's Ray workers outlived it: {workers}"

    hist_before = {}
    t = Tracker(uri)
    eid = t.experiment_id("vits-scaling")
    for r in t.search(eid, {TAG_SWEEP: "tiny4", TAG_ROLE: "trial"}):
        if r.data.tags["vits_scaling.trial_id"] in before:
            hist_before[r.info.run_id] = len(t.client.get_metric_history(r.info.run_id, "loss_g_total"))
    p = cli("sweep", "resume", "tiny4", "--storage", str(tmp_path / "sweeps"), "--json", "--quiet", cwd=tmp_path,
            timeout=240)  # fmt: skip
    res = json.loads(p.stdout)
    assert sorted(r["status"] for r in res["trials"]) == ["finished"] * 4
    _, trials, parents = _runs(uri, "tiny4")
    assert len(trials) == 4 and len(parents) == 1  # exactly one child run per trial, one parent
    assert len({r.data.tags["vits_scaling.trial_id"] for r in trials}) == 4
    for r in trials:
        tid = r.data.tags["vits_scaling.trial_id"]
        attempts = (sweep_dir / "trials" / tid / "attempts.jsonl").read_text().splitlines()
        if tid in before:
            assert len(attempts) == 1  # finished before the kill: not run again
            assert (
                len(t.client.get_metric_history(r.info.run_id, "loss_g_total"))
                == hist_before[r.info.run_id]
                == 12
            )
        assert r.data.tags[TAG_STATUS] == "finished"
    # submitting the finished sweep again resumes it: nothing new runs, no new runs in MLflow
    again = json.loads(
        cli(
            "sweep", "submit", str(f), "--allow-trial-fn", "--json", "--quiet", cwd=tmp_path, timeout=240
        ).stdout
    )
    assert sorted(r["status"] for r in again["trials"]) == ["finished"] * 4
    _, trials2, parents2 = _runs(uri, "tiny4")
    assert {r.info.run_id for r in trials2} == {r.info.run_id for r in trials} and len(parents2) == 1
    assert Tracker(uri).experiment_id("vits-scaling") == eid
