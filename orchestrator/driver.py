"""Running a sweep on Ray Tune: submit, resume, cancel.

The driver (``submit_sweep``) resolves the sweep, creates the MLflow parent run and one child run per trial
(so a trial always finds its run by id, and a retry or resume never makes a second one), saves the sweep
state, then runs a ``Tuner`` whose grid is the list of trial ids. Each Ray trial runs ``orchestrator.trial.run_tracked``:
the trial function (default ``model.train:run_trial``) with a sink that writes to MLflow and reports to
Ray Tune; checkpoints the trial logs are reported to Tune, so a retried trial (``FailureConfig``) or a
resumed sweep (``Tuner.restore``) continues from its last checkpoint, on any node.

A sweep with phases runs one Tuner per phase (``ray_<phase>/``), in order (``orchestrator.plan.PHASES``):
``stages`` (``orchestrator.plan.stages``: pretrain, then finetune) and ``wsd_branches``
(``orchestrator.plan.branches``: trunk, then cooldown). A phase starts only when every trial of the phase
before has ended, and a trial whose parent (pretrain trial, trunk) did not finish fails at once with that
reason, untrained (a resume retries it once the parent has finished). Each phase's Tuner is restored on
resume, so killing the driver between phases and resuming repeats no finished trial.

Without an address the driver starts a local Ray (``ray.init(num_cpus=..., include_dashboard=False)``) and
stops it at the end; with ``--address``/``ray_address`` it joins an existing cluster.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import UNFINISHED_STATUSES
from model.config import TrialConfig
from orchestrator import state as st
from orchestrator.plan import PHASES, Plan, SpecError, SweepSpec, load_spec, phase_of, resolve
from orchestrator.plan.checks import check_trial_inputs
from orchestrator.tracking import Tracker
from orchestrator.trial import (
    ALLOW_TRIAL_FN_ENV,
    DEFAULT_TRIAL_FN,
    StartupClock,
    TuneSink,
    check_parent,
    find_trial_fn,
    load_trial_fn,
    process_start_time,
    restore_checkpoint,
    run_tracked,
    split_trial_fn,
    trial_fn_allowed,
    trial_scope,
)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------
# the Ray trainable


def _trainable(config: dict[str, Any], trials: dict[str, dict], settings: dict[str, Any]) -> None:
    """The Ray Tune function trainable: one trial id -> its TrialConfig -> ``run_tracked``.

    Tune reuses the worker for the next trial (``reuse_actors=True``): the process, its imports (Ray,
    MLflow, torch, the trial function's module), MLflow's store and the process-wide memos of the trial
    function are set up once per worker. Each trial runs in a ``trial_scope`` (its own seed, environment
    and working directory; a fluent MLflow run it leaves open is ended) and its config is rebuilt from the
    trial table, so a reused worker carries nothing of the previous trial into the next.
    Its name is the trainable's identifier in saved Tune state (``Tuner.restore`` checks it): keep it.
    """
    global _TRIALS_IN_PROCESS
    entered = time.time()
    first = {}
    if _TRIALS_IN_PROCESS == 0:  # a new worker: what its start cost (0 in a reused one)
        started = process_start_time()
        if started is not None:
            first["worker_boot_imports"] = max(0.0, _DRIVER_LOADED_AT - started)
            first["worker_to_trial"] = max(0.0, entered - _DRIVER_LOADED_AT)
    _TRIALS_IN_PROCESS += 1
    clock = StartupClock(**first)
    from ray import tune  # Ray is loaded only where a sweep runs (plans and dry runs do without it)

    for p in reversed(settings.get("sys_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    cwd = settings.get("cwd")
    if cwd and Path(cwd).is_dir():
        os.chdir(cwd)  # Tune starts trials in their Ray dir; relative data paths are relative to the driver
    for k, v in settings.get("env", {}).items():
        os.environ.setdefault(k, v)
    cfg = TrialConfig.from_dict(trials[config["trial_id"]])
    check_parent(cfg, trials)
    clock.mark("config_and_parent")
    fn = load_trial_fn(settings["trial_fn"])  # before the scope: what its module loads gets seeded
    clock.mark("trial_fn_import")
    with trial_scope(cfg.train.seed):
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            restore_checkpoint(ckpt, cfg.output_dir)
        clock.mark("checkpoint_restore")
        run_tracked(cfg, fn, tune_sink=TuneSink(cfg.output_dir), clock=clock)


_DRIVER_LOADED_AT = time.time()  # in a Ray worker: when unpickling the trainable had imported this module
_TRIALS_IN_PROCESS = 0  # trials this process has started (a reused Ray worker runs more than one)


# ----------------------------------------------------------------------------------------------------
# the driver


@dataclass
class SweepResult:
    name: str
    sweep_dir: Path | None
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    plan: Plan | None
    trials: list[dict[str, Any]] = field(
        default_factory=list
    )  # trial_id, name, status, metrics, error, run_id
    skipped: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    dry_run: bool = False
    interrupted: bool = False

    @property
    def n_finished(self) -> int:
        return sum(t["status"] == "finished" for t in self.trials)

    @property
    def n_failed(self) -> int:
        return sum(t["status"] == "failed" for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sweep_dir": str(self.sweep_dir) if self.sweep_dir else None,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "parent_run_id": self.parent_run_id,
            "trials": self.trials,
            "skipped": self.skipped,
            "wall_s": round(self.wall_s, 2),
            "interrupted": self.interrupted,
        }


def _trial_fn_root(trial_fn: str) -> list[str]:
    """sys.path entry that makes the trial function's module importable in Ray workers (imports it: only
    after ``check_trial_fn`` has found the user's consent)."""
    mod = split_trial_fn(trial_fn)[0]
    load_trial_fn(trial_fn)  # fail before launch if it cannot be imported here
    m = sys.modules[mod]
    f = getattr(m, "__file__", None)
    if not f:
        return []
    root = Path(f).resolve().parent
    for _ in range(mod.count(".") + (1 if Path(f).name == "__init__.py" else 0)):
        root = root.parent
    return [str(root)]


def check_trial_fn(spec: SweepSpec, *, allowed: bool, dry_run: bool) -> str | None:
    """A sweep's own ``trial_fn`` is code the sweep runs in every trial: check it resolves (without running
    it, ``find_trial_fn``) and, unless this is a dry run, refuse it without the user's consent (``allowed``:
    ``--allow-trial-fn``, ``VITS_SCALING_ALLOW_TRIAL_FN=1`` or an explicit ``trial_fn=`` from the caller;
    never the sweep file). Returns the note a dry run prints, or None for the project's own trial."""
    if spec.trial_fn == DEFAULT_TRIAL_FN:
        return None
    where = f"{spec.where()}: trial_fn"
    try:
        origin = find_trial_fn(spec.trial_fn)
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    what = f"{spec.trial_fn!r} runs code from {origin or 'module ' + split_trial_fn(spec.trial_fn)[0]}"
    if allowed:
        return f"trial_fn {what} in every trial (allowed)"
    if dry_run:
        return f"trial_fn {what} in every trial: submitting needs --allow-trial-fn ({ALLOW_TRIAL_FN_ENV}=1)"
    raise SpecError(
        f"{where}: {what} in every trial; a sweep file cannot allow that itself: pass --allow-trial-fn to "
        f"`vits-scaling sweep submit` (or set {ALLOW_TRIAL_FN_ENV}=1 in your environment) if you trust it"
    )


def _skipped_rows(plan: Plan) -> list[dict[str, Any]]:
    return [{"trial_id": s.trial_id, "axes": s.axes, "reason": s.reason} for s in plan.skipped]


def submit_sweep(
    spec_or_path: SweepSpec | str | Path,
    address: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    *,
    trial_fn: str | None = None,
    allow_trial_fn: bool = False,
    base_roots: tuple[str | Path, ...] = (),
) -> SweepResult:
    """Validate, plan and run a sweep (or with ``dry_run`` only plan it). Re-submitting the same sweep resumes it.

    A ``trial_fn`` other than the project's own that comes from the sweep runs only with ``allow_trial_fn``
    (or ``VITS_SCALING_ALLOW_TRIAL_FN=1``); one passed here as ``trial_fn=`` is the caller's own choice.
    ``base_roots``: directory trees besides the sweep file's that its base file may be read from (a path)."""
    t0 = time.time()
    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else None
    if spec is None:
        spec = load_spec(spec_or_path, base_roots=base_roots)
    if trial_fn:
        spec.trial_fn = trial_fn
    allowed = trial_fn_allowed(allow_trial_fn or bool(trial_fn))
    trial_fn_note = check_trial_fn(spec, allowed=allowed, dry_run=dry_run)
    plan = resolve(spec)
    if trial_fn_note:
        plan.notes.append(trial_fn_note)
    if (
        spec.trial_fn == DEFAULT_TRIAL_FN
    ):  # the project's trainer: its text model and style encoder must be here
        # refused when trials run on this machine (local Ray); with --address, workers may hold what we lack
        for note in check_trial_inputs(plan, refuse=not dry_run and address is None):
            plan.notes.append(note)
    sweep_dir = plan.sweep_dir
    if dry_run:
        return SweepResult(
            spec.name,
            sweep_dir,
            plan.tracking_uri,
            spec.experiment,
            None,
            plan,
            trials=[tp.row() for tp in plan.trials],
            skipped=_skipped_rows(plan),
            wall_s=time.time() - t0,
            dry_run=True,
        )
    sys_path = _trial_fn_root(spec.trial_fn)
    trials = {tp.trial_id: tp.config.to_dict() for tp in plan.trials}
    if (sweep_dir / st.STATE_FILE).exists():
        old = st.load_trials(sweep_dir)
        if _comparable(old) != _comparable(trials):
            changed = sorted(set(old) ^ set(trials)) or [
                k for k in trials if _comparable({k: old[k]}) != _comparable({k: trials[k]})
            ]
            raise SpecError(
                f"{spec.where()}: sweep {spec.name!r} was already submitted to {sweep_dir} with different "
                f"trials (e.g. {', '.join(changed[:3])}); give the sweep a new name, or delete {sweep_dir} "
                "to start it again"
            )
        if progress:
            print(f"sweep {spec.name!r} exists in {sweep_dir}: resuming it", flush=True)
        return resume_sweep(sweep_dir, address=address, progress=progress, allow_trial_fn=allowed)

    tracker = Tracker(plan.tracking_uri)
    parent = tracker.sweep_run(spec.experiment, spec.name, tags=dict(spec.tags))
    rows = [tp.row() for tp in plan.trials]
    for tp in plan.trials:  # one child per trial, created here (serially) so workers never race to create
        rid = tracker.trial_run(
            spec.experiment,
            spec.name,
            tp.trial_id,
            parent_run_id=parent,
            run_name=tp.name,
            status="pending",
            tags={**spec.tags, **tp.config.tracking.tags},  # + stage / from_trial, branch / branch_of
        )
        tp.config.tracking.run_id = rid
        tp.config.tracking.parent_run_id = parent
        trials[tp.trial_id] = tp.config.to_dict()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if spec.source:
        shutil.copy2(spec.source, sweep_dir / "sweep.yaml")
    else:
        (sweep_dir / "sweep.yaml").write_text(json.dumps(spec.model_dump(), indent=1))
    (sweep_dir / "trial_table.json").write_text(json.dumps(rows, indent=1, default=str))
    (sweep_dir / "skipped.json").write_text(json.dumps(_skipped_rows(plan), indent=1, default=str))
    _log_parent(tracker, parent, spec, plan, sweep_dir)
    state = {
        "name": spec.name,
        "spec_path": str(spec.source) if spec.source else None,
        "spec": spec.model_dump(),
        "sweep_dir": str(sweep_dir),
        "ray_dir": str(sweep_dir / "ray"),
        "tracking_uri": plan.tracking_uri,
        "experiment": spec.experiment,
        "parent_run_id": parent,
        "trial_fn": spec.trial_fn,
        "trial_fn_allowed": allowed and spec.trial_fn != DEFAULT_TRIAL_FN,  # the consent, kept for resume
        "sys_path": sys_path,
        "cwd": os.getcwd(),
        "address": address or spec.ray_address,
        "created": time.time(),
        "status": "submitted",
    }
    st.save_state(sweep_dir, state, trials)
    result = _run(sweep_dir, restore=False, address=address or spec.ray_address, progress=progress)
    result.plan = plan
    result.skipped = _skipped_rows(plan)
    result.wall_s = time.time() - t0
    return result


def _comparable(trials: dict[str, dict]) -> dict[str, Any]:
    """Trial configs without what the driver fills in (run ids), to tell a re-submit from a changed sweep."""
    out = {}
    for k, d in trials.items():
        d = json.loads(json.dumps(d))
        d.get("tracking", {}).pop("run_id", None)
        d.get("tracking", {}).pop("parent_run_id", None)
        out[k] = d
    return out


def _log_parent(tracker: Tracker, parent: str, spec: SweepSpec, plan: Plan, sweep_dir: Path) -> None:
    params = {
        "sweep.mode": spec.mode,
        "sweep.n_trials": len(plan.trials),
        "sweep.n_skipped": len(plan.skipped),
        "sweep.axes": ",".join(sorted({k for tp in plan.trials for k in tp.axes})),
        "sweep.seeds": json.dumps(spec.seed_list(0) if spec.seeds is not None else "base"),
        "sweep.resources": json.dumps(spec.resources.model_dump()),
        "sweep.max_concurrent": spec.max_concurrent,
        "sweep.max_failures": spec.max_failures,
    }
    tracker.log_params_once(parent, params)
    for name in ("sweep.yaml", "trial_table.json", "skipped.json"):
        tracker.log_artifact(parent, sweep_dir / name, "sweep")


def resume_sweep(
    name: str | Path,
    address: str | None = None,
    progress: bool = True,
    storage: str | None = None,
    *,
    allow_trial_fn: bool = False,
) -> SweepResult:
    """``Tuner.restore``: finished trials are kept, unfinished and errored ones continue from checkpoints.

    A sweep with its own ``trial_fn`` resumes when it was submitted with consent (kept in its state as
    ``trial_fn_allowed``) or when ``allow_trial_fn`` gives it now (then recorded)."""
    t0 = time.time()
    sweep_dir = st.find_sweep(str(name), storage)
    state = st.load_state(sweep_dir)
    fn = state.get("trial_fn") or DEFAULT_TRIAL_FN
    if fn != DEFAULT_TRIAL_FN and not state.get("trial_fn_allowed"):
        if not trial_fn_allowed(allow_trial_fn):
            raise SpecError(
                f"{sweep_dir / st.STATE_FILE}: trial_fn: {fn!r} runs its own code in every trial and this "
                f"sweep was not submitted with consent: pass --allow-trial-fn to `vits-scaling sweep resume` "
                f"(or set {ALLOW_TRIAL_FN_ENV}=1) if you trust it"
            )
        st.update_state(sweep_dir, trial_fn_allowed=True)
    (sweep_dir / st.CANCEL_FILE).unlink(missing_ok=True)
    result = _run(sweep_dir, restore=True, address=address or state.get("address"), progress=progress)
    result.wall_s = time.time() - t0
    return result


def cancel_sweep(name: str | Path, storage: str | None = None) -> dict[str, Any]:
    """Ask the sweep's driver to stop (it saves Tune state: ``resume`` continues); mark unfinished runs."""
    sweep_dir = st.find_sweep(str(name), storage)
    state = st.load_state(sweep_dir)
    (sweep_dir / st.CANCEL_FILE).write_text(str(time.time()))
    alive = st.driver_alive(state)
    if alive:
        os.kill(int(state["driver"]["pid"]), signal.SIGUSR1)  # Tune's graceful stop
    else:
        _mark_unfinished(sweep_dir, state, "cancelled")
        st.update_state(sweep_dir, status="cancelled")
    return {"name": state["name"], "sweep_dir": str(sweep_dir), "driver_signalled": alive}


def _mark_unfinished(sweep_dir: Path, state: dict[str, Any], status: str) -> None:
    tracker = Tracker(state["tracking_uri"], retry_s=10)
    for d in st.load_trials(sweep_dir).values():
        rid = d["tracking"].get("run_id")
        if not rid:
            continue
        try:
            status, _ = tracker.run_state(rid, retry_s=0)
        except Exception:
            continue
        if status in UNFINISHED_STATUSES:
            tracker.set_status(rid, status)


def _connect(address: str | None, num_cpus: int | None) -> bool:
    """Join ``address`` or start a local Ray; returns True if this process started it (and must stop it)."""
    import ray  # heavy: only when a sweep runs

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    if address:
        ray.init(address=address, **kw)
        return True
    # "local": always a new instance; without it ray.init() joins any cluster `ray start` left on this host
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kw)
    return True


def _token_auth_for(address: str | None) -> None:
    """``ray start`` turns token auth on and keeps the token in ~/.ray/auth_token, but a client joining by
    address only sends it in token mode; select that mode (before Ray reads its config) when a token exists."""
    if not address or "RAY_AUTH_MODE" in os.environ:
        return
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    if not (token or (Path.home() / ".ray" / "auth_token").exists()):
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if "ray._raylet" in sys.modules:  # Ray already read its config in this process: refresh it
        try:
            from ray._raylet import Config

            Config.initialize("")
        except Exception as e:  # private API; the env var still reaches processes started later
            log.debug("could not refresh Ray config: %s", e)


def _check_capacity(res: dict[str, float], address: str | None) -> None:
    import ray  # as in _connect

    have = ray.cluster_resources()
    where = address or "the local Ray"
    if res.get("gpu", 0) > have.get("GPU", 0):
        raise SpecError(f"resources.gpu: {res['gpu']} per trial, but {where} has {have.get('GPU', 0):g} GPUs")
    if res.get("cpu", 1) > have.get("CPU", 0):
        raise SpecError(f"resources.cpu: {res['cpu']} per trial, but {where} has {have.get('CPU', 0):g} CPUs")


def _trial_name(trial) -> str:
    return str(trial.config["trial_id"])


def _cancel_watch(sweep_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        if (sweep_dir / st.CANCEL_FILE).exists():
            os.kill(os.getpid(), signal.SIGUSR1)
            return


def _run(sweep_dir: Path, *, restore: bool, address: str | None, progress: bool) -> SweepResult:
    _token_auth_for(address)
    from ray import tune  # after _token_auth_for: Ray reads its auth mode when it is first imported

    from orchestrator.progress import Progress  # a Ray Tune Callback: loads Ray, so after _token_auth_for too

    state = st.load_state(sweep_dir)
    trials = st.load_trials(sweep_dir)
    spec = state["spec"]
    res = {k: v for k, v in (("cpu", spec["resources"]["cpu"]), ("gpu", spec["resources"]["gpu"])) if v}
    settings = {
        "trial_fn": state["trial_fn"],
        "sys_path": state["sys_path"],
        "cwd": state["cwd"],
        "env": {k: os.environ[k] for k in ("VITS_SCALING_TRACKING_GIVE_UP_S",) if k in os.environ},
    }
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "10")  # experiment state saved often: kill -> resume
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment banner; our Progress lines instead
    started = _connect(address, None)
    stop = threading.Event()
    st.update_state(sweep_dir, driver=st.this_driver(), status="running")
    tracker = Tracker(state["tracking_uri"])
    try:
        _check_capacity(res, address)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, trials=trials, settings=settings), res
        )
        Progress.enabled = progress
        tracker.set_status(state["parent_run_id"], "running")
        watcher = threading.Thread(target=_cancel_watch, args=(sweep_dir, stop), daemon=True)
        watcher.start()
        grid = []
        for phase, ids in phase_groups(trials):
            if (sweep_dir / st.CANCEL_FILE).exists():
                break  # cancelled during an earlier phase: later phases stay pending (resumable)
            ray_dir = Path(state["ray_dir"]) if phase is None else sweep_dir / f"ray_{phase[1]}"
            if progress and phase is not None:
                print(f"{phase[0]} {phase[1]}: {len(ids)} trials", flush=True)
            tuner = _tuner(trainable, ray_dir, ids, trials, spec, restore=restore)
            if progress:
                grid += list(tuner.fit())
            else:  # Tune prints a few lines of its own even at verbose=0; keep stdout clean for --json
                with contextlib.redirect_stdout(sys.stderr):
                    grid += list(tuner.fit())
    finally:
        stop.set()
        if started:
            import ray  # as above

            ray.shutdown()
    cancelled = (sweep_dir / st.CANCEL_FILE).exists()
    return _collect(sweep_dir, state, trials, grid, tracker, cancelled)


def phase_groups(trials: dict[str, dict]) -> list[tuple[tuple[str, str] | None, list[str]]]:
    """[((phase axis, phase), trial ids)] in run order, e.g. ``(("stage", "pretrain"), [...])`` first;
    [(None, all ids)] for a sweep without phases. One sweep has one kind of phase (stages or branches)."""
    by: dict[tuple[str, str] | None, list[str]] = {}
    for tid, d in trials.items():
        by.setdefault(phase_of(d.get("axes") or {}), []).append(tid)
    if set(by) == {None}:
        return [(None, list(trials))]
    order = [(key, p) for key, phases in PHASES.items() for p in phases]
    unknown = set(by) - set(order)
    kinds = {k[0] for k in by if k is not None}
    if unknown or len(kinds) > 1:
        shown = sorted(f"{k[0]}={k[1]}" if k else "none" for k in (unknown or by))
        raise SpecError(f"trials.json: trials of unknown or mixed phases ({', '.join(shown)})")
    return [(k, by[k]) for k in order if k in by]


def _tuner(trainable, ray_dir: Path, ids: list[str], trials: dict[str, dict], spec: dict, *, restore: bool):
    """A new Tuner over ``ids`` in ``ray_dir``, or the one saved there (``restore``)."""
    from ray import tune  # as in _run

    from orchestrator.progress import Progress  # as in _run

    space = {"trial_id": tune.grid_search(ids)}
    if restore and tune.Tuner.can_restore(str(ray_dir)):
        # param_space again: trials Tune had not generated yet (killed early in a stage) resolve their
        # grid value from it, not from a placeholder
        return tune.Tuner.restore(
            str(ray_dir), trainable, param_space=space, resume_unfinished=True, resume_errored=True
        )
    if ray_dir.exists():  # killed before Tune saved anything: start the grid again (MLflow skips done)
        shutil.rmtree(ray_dir)
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            max_concurrent_trials=spec.get("max_concurrent"),
            reuse_actors=True,  # one worker runs trial after trial (see _trainable): no process per trial
            trial_name_creator=_trial_name,
            trial_dirname_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=ray_dir.name,
            storage_path=str(ray_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.get("max_failures", 1)),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
            callbacks=[Progress(len(ids), {k: trials[k]["name"] for k in ids})],
        ),
    )


def _collect(sweep_dir, state, trials, grid, tracker: Tracker, cancelled: bool) -> SweepResult:
    by_id = {}
    for r in grid:
        tid = (r.config or {}).get("trial_id")
        if tid:
            by_id[tid] = r
    rows = []
    for tid, d in trials.items():
        rid = d["tracking"].get("run_id")
        r = by_id.get(tid)
        tag = None
        try:
            tag, metrics = tracker.run_state(rid, retry_s=5)
        except Exception:
            metrics = dict(r.metrics or {}) if r is not None else {}
        error = None
        if r is not None and r.error is not None:
            error = f"{type(r.error).__name__}: {str(r.error)[-2000:]}"
        if cancelled and tag in (None, "pending", "running", "cancelled"):  # `sweep cancel`: resumable
            try:
                tracker.set_status(rid, "cancelled")
            except Exception:
                pass
            status = "cancelled"
        else:
            if error and tag != "failed":  # died without reaching its own handler (e.g. worker killed)
                try:
                    tracker.set_status(rid, "failed", error)
                    tag = "failed"
                except Exception:
                    pass
            status = tag or ("failed" if error else "unknown")
        rows.append(
            {
                "trial_id": tid,
                "name": d["name"],
                "status": status,
                "run_id": rid,
                "error": error,
                "metrics": metrics,
            }
        )
    n_fail = sum(r["status"] == "failed" for r in rows)
    done = all(r["status"] in ("finished", "diverged", "failed") for r in rows)
    sweep_status = (
        "cancelled" if cancelled else ("failed" if n_fail else "finished") if done else "interrupted"
    )
    try:
        tracker.set_status(state["parent_run_id"], sweep_status if done or cancelled else "running")
    except Exception as e:
        log.warning("could not update the sweep run: %s", e)
    st.update_state(sweep_dir, status=sweep_status, driver=None, finished=time.time())
    return SweepResult(
        state["name"],
        sweep_dir,
        state["tracking_uri"],
        state["experiment"],
        state["parent_run_id"],
        None,
        trials=rows,
        interrupted=not done,
    )
