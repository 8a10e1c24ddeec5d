"""Inside one trial: run the trial function with the MLflow sink (and, under Ray Tune, the Tune sink), so
the trial's params, status and error end up in its MLflow run; ``run_tracked`` returns a ``TrialOutcome``.

Used by the Ray trainable of the driver (``orchestrator.driver``) and by ``vits-scaling train``; only the
Tune sink touches Ray, and only when a trial runs under Tune.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import DONE_STATUSES, TAG_STATUS
from model.config import TrialConfig, flatten
from model.sink import MultiSink
from orchestrator.plan import SpecError, parent_of, phase_of
from orchestrator.tracking import MlflowSink, Tracker, TrackingUnavailable, format_error

log = logging.getLogger(__name__)

REPORT_EVERY_S = 10.0  # metrics-only Tune reports are rate limited; checkpoints and the end always report
CKPT_META = "vits_scaling_checkpoint.json"
STARTUP_FILE = "startup.json"  # one trial's start-up seconds by phase (StartupClock), in its output directory
PARAM_SKIP = ("tracking.", "axes.")
PARAM_SKIP_TOP = {"name", "trial_id", "sweep", "output_dir"}


DEFAULT_TRIAL_FN = "model.train:run_trial"  # the project's own trial: needs no consent
ALLOW_TRIAL_FN_ENV = "VITS_SCALING_ALLOW_TRIAL_FN"  # the user's standing consent (1), outside any sweep file


def split_trial_fn(spec: str) -> tuple[str, str]:
    """``"package.module:function"`` (or dotted ``package.module.function``) -> (module, function)."""
    mod, _, fn = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not (mod and fn.isidentifier() and all(p.isidentifier() for p in mod.split("."))):
        raise SpecError(f"trial_fn {spec!r}: expected 'package.module:function'")
    return mod, fn


def load_trial_fn(spec: str):
    """``"package.module:function"`` (or dotted ``package.module.function``) -> the callable (imports it)."""
    mod, fn = split_trial_fn(spec)
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise SpecError(f"trial_fn {spec!r}: cannot import ({type(e).__name__}: {e})") from None


def trial_fn_allowed(allow: bool = False) -> bool:
    """Whether the user consents to a sweep's own ``trial_fn``: ``--allow-trial-fn`` (``allow``) or
    ``VITS_SCALING_ALLOW_TRIAL_FN=1`` in the environment; never anything the sweep file itself says."""
    return allow or os.environ.get(ALLOW_TRIAL_FN_ENV, "") == "1"


def find_trial_fn(spec: str) -> str | None:
    """Check that ``trial_fn`` resolves **without running any of its code**; returns the module's file.

    The module is looked up on ``sys.path`` with ``importlib.machinery.PathFinder`` one package at a time
    (``importlib.util.find_spec`` would import, i.e. run, the parent packages), and the function is looked
    for as a top-level name (``def``, ``class``, assignment or import) in the module's source, parsed with
    ``ast``, not executed. A module without Python source (an extension) is found but its attribute is not
    checked; a module already imported is checked by attribute. A name the module only creates at run time
    (``globals()[...]``, ``from x import *``) is not seen, so it is refused (the error says how it looked).
    """
    mod, fn = split_trial_fn(spec)
    if mod in sys.modules:
        if not hasattr(sys.modules[mod], fn):
            raise SpecError(f"trial_fn {spec!r}: module {mod!r} has no attribute {fn!r}")
        return getattr(sys.modules[mod], "__file__", None)
    parts, path, found = mod.split("."), None, None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        loaded = sys.modules.get(name)
        if loaded is not None and loaded.__spec__:
            found = loaded.__spec__
        else:  # by its last part in the parent's directories: a dotted name would make importlib look the
            # parent up in sys.modules (for a namespace package's path), i.e. need it imported
            found = PathFinder.find_spec(parts[i], path)
        if found is None:
            raise SpecError(f"trial_fn {spec!r}: no module {name!r} on the Python path")
        locations = found.submodule_search_locations
        path = list(locations) if locations is not None else None
        if path is None and i < len(parts) - 1:
            raise SpecError(f"trial_fn {spec!r}: {name!r} is a module, not a package")
    origin = found.origin if found.has_location else None
    if not origin or not origin.endswith(".py"):
        return origin
    try:
        tree = ast.parse(Path(origin).read_bytes(), filename=origin)
    except (OSError, SyntaxError, ValueError) as e:
        raise SpecError(f"trial_fn {spec!r}: cannot read {origin} ({type(e).__name__})") from None
    if fn not in top_level_names(tree.body):
        raise SpecError(
            f"trial_fn {spec!r}: {origin} defines no top-level {fn!r} (looked for def, class, assignment or "
            "import, without running the module)"
        )
    return origin


def top_level_names(body: list[ast.stmt]) -> set[str]:
    """Names a module body binds at import (also inside top-level ``if``/``try``/``with`` blocks)."""
    out: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            out |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody"):
                out |= top_level_names(getattr(node, block, []))
            for h in getattr(node, "handlers", []):
                out |= top_level_names(h.body)
    return out


def trial_params(cfg: TrialConfig) -> dict[str, Any]:
    """MLflow params of a trial: the flattened config (``model.hidden_channels``...) and ``axis.<name>``."""
    d = cfg.to_dict()
    out = {
        k: v
        for k, v in flatten(d).items()
        if k not in PARAM_SKIP_TOP and not k.startswith(PARAM_SKIP) and k != "axes"
    }
    out.update({f"axis.{k}": v for k, v in cfg.axes.items()})
    return out


class StartupClock:
    """Seconds of one trial's start-up and end, by phase, written to ``<output_dir>/startup.json``.

    Phases are marked in order (``mark(name)`` books the time since the previous mark); the Ray trainable
    starts the clock when Tune calls it and adds ``worker_start`` (process start, Ray worker boot, the
    imports of unpickling the trainable: 0 in a reused worker); ``run_tracked`` marks ``mlflow_setup``
    (run lookup, status and params), ``trial_to_step1`` (the trial function's own start-up: data,
    FLOP counting, nets, up to its first logged training step) and ``teardown`` (after the trial returns:
    the last flush and the final report), plus ``started_at`` / ``ended_at`` (epoch seconds).
    ``bench/orchestration_overhead.py`` reads the files."""

    def __init__(self, **first: float):
        self.phases: dict[str, float] = {k: round(v, 4) for k, v in first.items()}
        self.started_at = time.time()  # epoch seconds: the bench reads the gaps between trials from these
        self._t = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(self.phases.get(name, 0.0) + now - self._t, 4)
        self._t = now

    def skip(self) -> None:
        """Start the next phase now (the time since the last mark is not start-up: training steps)."""
        self._t = time.perf_counter()

    def write(self, output_dir: str | Path) -> None:
        try:
            times = {"started_at": self.started_at, "ended_at": time.time()}
            (Path(output_dir) / STARTUP_FILE).write_text(json.dumps({**self.phases, **times}, indent=1))
        except OSError as e:  # a record for the benchmark, never a reason to fail the trial
            log.debug("could not write %s: %s", STARTUP_FILE, e)


def process_start_time() -> float | None:
    """When this process started (epoch seconds, to 10 ms), from ``/proc`` (None where there is none)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def seed_all(seed: int) -> None:
    """Seed Python's ``random`` and, where the process has loaded them, numpy's and torch's global streams:
    a reused worker gives each trial the streams its own seed gives, never the previous trial's leftovers.
    The Ray trainable calls it after importing the trial function, so whatever that function's module
    imports is seeded in a fresh worker as in a reused one; a module the trial imports only later, inside
    the function, starts from its import-time state in a fresh worker (torch's fixed default seed, numpy's
    OS entropy). The project's trainer seeds all three itself (``model.train.loop.seed_everything``)."""
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


class trial_scope:
    """Context of one trial in a process that may run more (a reused Ray worker, ``reuse_actors=True``).

    On entry the random streams are seeded from the trial's own ``train.seed`` (``seed_all``) and the
    environment and working directory are remembered; on exit a fluent MLflow run the trial function left
    open is ended (FINISHED, or FAILED when the trial raised; MLflow's fluent run stack is per thread and
    Tune runs each trial in a new thread, so the next trial could not end it), and the environment
    (e.g. ``MLFLOW_RUN_ID``) and working directory are put back. The trial's config is rebuilt from the
    sweep's trial table for every trial, so nothing of it carries over. Not reset: module globals of the
    trial's own code and MLflow's process-wide fluent tracking URI (``mlflow.set_tracking_uri``; the
    project never uses it: every client is built from the trial's explicit URI)."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self) -> trial_scope:
        self._env = dict(os.environ)
        self._cwd = os.getcwd()
        seed_all(self.seed)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if "mlflow" in sys.modules:  # only a trial that imported MLflow can have left a fluent run
            import mlflow  # already loaded: no import cost

            try:
                while mlflow.active_run() is not None:
                    mlflow.end_run("FAILED" if exc_type is not None else "FINISHED")
            except Exception as e:  # the store may be down; the run then stays as the trial left it
                log.warning("could not end the MLflow run the trial left open: %s", e)
        for k in set(os.environ) - set(self._env):
            del os.environ[k]
        for k, v in self._env.items():
            if os.environ.get(k) != v:
                os.environ[k] = v
        with contextlib.suppress(OSError):
            os.chdir(self._cwd)


class TuneSink:
    """Reports a trial's latest metrics (and checkpoints) to Ray Tune."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.latest: dict[str, float] = {}
        self.step = 0
        self._last = 0.0

    def log_params(self, params):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def set_status(self, status, message=""):
        pass

    def log_metrics(self, metrics, step):
        for k, v in metrics.items():
            try:
                self.latest[k] = float(v)
            except (TypeError, ValueError):
                continue
        self.step = max(self.step, int(step))
        if time.monotonic() - self._last > REPORT_EVERY_S:
            self.report()

    def report(self, checkpoint=None, **extra) -> None:
        from ray import tune  # Ray only under Tune (`vits-scaling train` runs without it)

        self._last = time.monotonic()
        tune.report({**self.latest, "step": self.step, **extra}, checkpoint=checkpoint)

    def log_checkpoint(self, path, step):
        from ray import tune  # as above

        src = Path(path)
        try:
            rel = src.resolve().relative_to(self.output_dir.resolve())
        except ValueError:
            rel = Path(src.name)
        with tempfile.TemporaryDirectory(prefix="vits_ckpt_") as tmp:
            dst = Path(tmp) / "payload" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                try:
                    os.link(src, dst)  # same filesystem: no copy; Ray copies into storage
                except OSError:
                    shutil.copy2(src, dst)
            (Path(tmp) / CKPT_META).write_text(json.dumps({"step": int(step), "rel": str(rel)}))
            self.step = max(self.step, int(step))
            self.report(checkpoint=tune.Checkpoint.from_directory(tmp))


def restore_checkpoint(checkpoint, output_dir: str | Path) -> Path | None:
    """Put the checkpoint Ray hands a retried trial back where the trial function looks for it."""
    with checkpoint.as_directory() as d:
        meta_p = Path(d) / CKPT_META
        if not meta_p.exists():
            return None
        meta = json.loads(meta_p.read_text())
        src = Path(d) / "payload" / meta["rel"]
        dst = Path(output_dir) / meta["rel"]
        if dst.exists():
            return dst
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
        log.info("restored checkpoint of step %s to %s", meta["step"], dst)
        return dst


class _Watch:
    """Remembers the last status the trial function set, and when it logged its first training step."""

    status: str | None = None

    def __init__(self, clock: StartupClock | None = None):
        self.clock = clock

    def log_params(self, params):
        pass

    def log_metrics(self, metrics, step):
        if self.clock is not None and int(step) >= 1:
            self.clock.mark("trial_to_step1")  # the trial function's own start-up (data, FLOPs, nets)
            self.clock = None

    def log_artifact(self, path, artifact_path=None):
        pass

    def log_checkpoint(self, path, step):
        pass

    def set_status(self, status, message=""):
        self.status = status


def _stored_run(tracker: Tracker, run_id: str):
    """The trial's run as MLflow holds it (None if unreachable now: the sink buffers and retries)."""
    try:
        return tracker.call(lambda: tracker.client.get_run(run_id), what="get run", retry_s=5.0)
    except TrackingUnavailable:
        return None


@dataclass
class TrialOutcome:
    """How ``run_tracked`` ended: ``status`` (the trial's last status), ``result`` (what the trial function
    returned), or, for a trial MLflow already holds as done, ``skipped`` with its final ``metrics``.

    ``outcome["status"]`` reads like ``outcome.status`` (callers written against the earlier dict)."""

    status: str
    result: Any = None
    metrics: dict[str, float] | None = None
    skipped: bool = False

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def run_tracked(
    cfg: TrialConfig, trial_fn, *, tune_sink: TuneSink | None = None, clock: StartupClock | None = None
) -> TrialOutcome:
    """Run one trial with MLflow (+ Tune) sinks; the trial's status and error end up in its run.

    The run is read once (a finished trial is not re-run; its params seed the sink, so nothing is read
    twice) and the trial's start (status ``running`` + all params) goes out in one batched write.
    ``clock`` (a ``StartupClock``) books the start-up phases; ``startup.json`` is written either way."""
    clock = clock or StartupClock()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ml = MlflowSink.for_trial(cfg, local_dir=out / "tracking")
    run = _stored_run(ml.tracker, ml.run_id) if ml.run_id else None
    if run is not None and run.data.tags.get(TAG_STATUS) in DONE_STATUSES:
        log.info("trial %s already finished in MLflow; not re-running", cfg.trial_id)
        done = dict(run.data.metrics)
        if tune_sink is not None:
            tune_sink.latest.update(done)
            tune_sink.report(already_finished=1)
        return TrialOutcome("finished", metrics=done, skipped=True)
    ml.start(trial_params(cfg), run=run)
    clock.mark("mlflow_setup")
    watch = _Watch(clock)
    sink = MultiSink(ml, watch, tune_sink)
    try:
        result = trial_fn(cfg, sink, resume=True)
        if watch.clock is None:
            clock.skip()  # from the first step to here the trial trained: not start-up
        else:
            clock.mark("trial_to_step1")  # it never logged a step: all of it counts as its start-up
    except (SystemExit, KeyboardInterrupt) as e:  # stopped by Tune (cancel, Ctrl+C): resumable, not failed
        try:
            ml.set_status("cancelled", f"stopped: {type(e).__name__}")
            ml.close()
        except TrackingUnavailable:
            pass
        raise
    except BaseException as e:
        try:
            ml.set_status("failed", format_error(e))
            ml.close()
        except TrackingUnavailable as te:
            raise te from e
        raise
    if watch.status not in ("finished", "diverged", "failed"):
        ml.set_status("finished")
    ml.close()
    clock.mark("teardown")
    clock.write(out)
    if tune_sink is not None:
        tune_sink.report(done=1)
    return TrialOutcome(watch.status or "finished", result=result)


def check_parent(cfg: TrialConfig, trials: dict[str, dict]) -> None:
    """A fine-tune trial or a WSD cooldown branch starts only from a parent (pretrain trial, trunk) that
    finished (its checkpoints are all written); otherwise it is not trained and fails with the reason."""
    parent = parent_of(cfg)
    if parent is None or parent not in trials:
        return
    rid = trials[parent]["tracking"].get("run_id")
    status = None
    if rid:
        status, _ = Tracker(cfg.tracking.uri).run_state(rid, what="get parent run", retry_s=30.0)
    if status != "finished":
        kind = f"{phase[1]} trial" if (phase := phase_of(cfg.axes)) else "trial"
        raise RuntimeError(
            f"{kind} {cfg.trial_id} starts from trial {parent}, which is {status or 'unknown'} (not finished): "
            "not trained; resume the sweep once it has finished"
        )
