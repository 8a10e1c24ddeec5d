"""MLflow run lifecycle: one parent run per sweep, one nested child run per trial, and the trial's sink.

Rules this module keeps (each one is a known MLflow trap):

* Every client is an ``MlflowClient(tracking_uri=...)`` built from an explicit URI; nothing relies on the
  process-global ``mlflow.set_tracking_uri`` (which Ray workers do not inherit).
* A run is found by its tags (``vits_scaling.sweep`` + ``vits_scaling.trial_id``) or a stored run id
  *before* one is created, so a retried or resumed trial logs into the same run; an existing experiment of
  the same name is used, never deleted or recreated.
* Params are logged once; on a retry only keys the run does not hold yet are sent (MLflow refuses to change
  a param value), a changed value is reported in a tag instead of crashing the trial.
* A WSD cooldown branch (a run tagged ``vits_scaling.branch_of``) that reports where it branched
  (``branch_step``, as a metric or a param) gets the ``vits_scaling.branch_step`` tag too, so runs can be filtered by it without reading metrics.
* Metrics go out in ``log_batch`` calls (no per-scalar round trips). Every metric row is also appended to
  ``metrics.jsonl`` in the trial directory; rows not yet confirmed by the server are kept and replayed by
  the next sink on the same directory. If the server stays down the trial fails with a message naming the
  URI and the local file.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from analysis.mlflow_contract import (  # the one home of the layout this module writes
    ROLE_SWEEP,
    ROLE_TRIAL,
    TAG_BRANCH_OF,
    TAG_BRANCH_STEP,
    TAG_ERROR,
    TAG_PARAM_CONFLICTS,
    TAG_PARENT,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    TERMINAL,
    default_tracking_uri,
    search_runs,
    sqlite_path,
    tag_filter,
)

log = logging.getLogger(__name__)


# MLflow's own limits (mlflow.utils.validation); kept here so we never send a batch it rejects.
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
BRANCH_STEP_KEY = "branch_step"  # the metric / param a cooldown branch's trainer logs its branch step as


class TrackingUnavailable(RuntimeError):
    """The tracking store could not be reached for longer than we are willing to wait."""


class TrackingError(RuntimeError):
    """The tracking store answered, but refused (e.g. the sweep's experiment was deleted)."""


def local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts live next to the database (not in ``./mlruns`` of whatever cwd)."""
    db = sqlite_path(uri)
    if db is not None:
        return (db.parent / "mlartifacts").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri:
        return None  # the file store chooses its own layout next to its runs
    return None  # a server decides (proxied artifacts)


def _quick_http_failures() -> None:
    # MLflow's HTTP client retries for minutes by default; we buffer and retry ourselves.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # keeps `--json` stdout clean


def _is_refusal(e: BaseException) -> bool:
    """An answer from the store (bad request, missing resource) as opposed to it being unreachable."""
    from mlflow.exceptions import MlflowException

    if not isinstance(e, MlflowException):
        return False
    code = getattr(e, "error_code", "")
    return code in {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_STATE",
        "BAD_REQUEST",
    }


def _param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s[:MAX_PARAM_VAL_LENGTH]


# ----------------------------------------------------------------------------------------------------
# the client


class Tracker:
    """An ``MlflowClient`` bound to one explicit tracking URI, with retry and the sweep/trial run lookups."""

    def __init__(self, uri: str | None = None, *, retry_s: float = 30.0):
        self.uri = uri or default_tracking_uri()
        self.retry_s = retry_s
        db = sqlite_path(self.uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        _quick_http_failures()
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = self.call(lambda: MlflowClient(tracking_uri=self.uri), what="connect")
        return self._client

    def call(self, fn, *, what: str, retry_s: float | None = None):
        """Run ``fn`` retrying transient failures for up to ``retry_s`` seconds."""
        deadline = time.monotonic() + (self.retry_s if retry_s is None else retry_s)
        delay = 0.2
        while True:
            try:
                return fn()
            except Exception as e:
                if _is_refusal(e):
                    raise
                if time.monotonic() + delay > deadline:
                    raise TrackingUnavailable(
                        f"MLflow tracking store {self.uri} unreachable ({what}): {type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}"
                    ) from e
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- experiments and runs ---

    def experiment_id(self, name: str, *, create: bool = True) -> str | None:
        from mlflow.exceptions import MlflowException

        exp = self.call(lambda: self.client.get_experiment_by_name(name), what=f"get experiment {name!r}")
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise TrackingError(
                    f"experiment {name!r} in {self.uri} is deleted; restore it "
                    f"(`mlflow experiments restore --experiment-id {exp.experiment_id}`) or use another "
                    "`experiment:` name in the sweep file"
                )
            return exp.experiment_id
        if not create:
            return None
        try:
            return self.call(
                lambda: self.client.create_experiment(name, artifact_location=local_artifact_root(self.uri)),
                what=f"create experiment {name!r}",
            )
        except MlflowException as e:  # created concurrently by another process: use theirs
            if getattr(e, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def search(self, experiment_id: str, tags: dict[str, str], *, order_by=None) -> list:
        """All active runs of ``experiment_id`` whose tags equal ``tags`` (paged)."""
        return search_runs(
            self.client,
            [experiment_id],
            tag_filter(tags),
            order_by=order_by,
            call=lambda fn: self.call(fn, what="search runs"),
        )

    def sweep_run(
        self, experiment: str, sweep: str, *, create: bool = True, tags: dict[str, str] | None = None
    ) -> str | None:
        """The parent run of ``sweep`` (found by tag; created once)."""
        eid = self.experiment_id(experiment, create=create)
        if eid is None:
            return None
        found = self.search(
            eid, {TAG_SWEEP: sweep, TAG_ROLE: ROLE_SWEEP}, order_by=["attributes.start_time ASC"]
        )
        if found:
            return found[0].info.run_id
        if not create:
            return None
        all_tags = {TAG_SWEEP: sweep, TAG_ROLE: ROLE_SWEEP, TAG_STATUS: "running", **(tags or {})}
        run = self.call(
            lambda: self.client.create_run(eid, tags=all_tags, run_name=sweep), what="create sweep run"
        )
        return run.info.run_id

    def trial_run(
        self,
        experiment: str,
        sweep: str,
        trial_id: str,
        *,
        parent_run_id: str | None = None,
        run_name: str | None = None,
        run_id: str | None = None,
        status: str = "pending",
        tags: dict[str, str] | None = None,
    ) -> str:
        """The child run of one trial: the stored ``run_id`` if it still exists, else found by tags, else new."""
        if run_id:
            try:
                run = self.call(lambda: self.client.get_run(run_id), what=f"get run {run_id}")
                if run.info.lifecycle_stage == "active":
                    return run_id
            except TrackingUnavailable:
                raise
            except Exception:  # deleted or unknown id: fall back to the tag lookup
                pass
        eid = self.experiment_id(experiment)
        found = self.search(
            eid, {TAG_SWEEP: sweep, TAG_TRIAL: trial_id}, order_by=["attributes.start_time ASC"]
        )
        if found:
            if len(found) > 1:
                log.warning("trial %s of sweep %s has %d runs; using the oldest", trial_id, sweep, len(found))
            return found[0].info.run_id
        all_tags = {TAG_SWEEP: sweep, TAG_TRIAL: trial_id, TAG_ROLE: ROLE_TRIAL, TAG_STATUS: status}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        all_tags.update(tags or {})
        run = self.call(
            lambda: self.client.create_run(eid, tags=all_tags, run_name=run_name or trial_id),
            what="create trial run",
        )
        if status == "pending":
            self.call(lambda: self.client.update_run(run.info.run_id, status="SCHEDULED"), what="update run")
        return run.info.run_id

    @staticmethod
    def status_tags(status: str, message: str = "") -> list:
        """The tags ``set_status`` writes (``RunTag`` list), for a caller that batches them with params."""
        from mlflow.entities import RunTag

        tags = [RunTag(TAG_STATUS, status)]
        if message:
            tags.append(RunTag(TAG_ERROR, message[-MAX_TAG_VAL_LENGTH:]))
        return tags

    def set_status(
        self,
        run_id: str,
        status: str,
        message: str = "",
        *,
        tags_sent: bool = False,
        has_error_tag: bool | None = None,
    ) -> None:
        """Status tag (+ error message) and the matching MLflow run state; a new attempt clears old errors.

        ``tags_sent``: the caller already wrote ``status_tags`` (in its own batch); ``has_error_tag=False``:
        the caller knows the run holds no error tag, so none is deleted (one round trip less)."""
        if not tags_sent:
            tags = self.status_tags(status, message)
            self.call(lambda: self.client.log_batch(run_id, tags=tags), what="set status")
        if status in ("running", "finished") and not message and has_error_tag is not False:
            try:
                self.client.delete_tag(run_id, TAG_ERROR)
            except Exception:  # no error tag to clear
                pass
        if status in TERMINAL:
            self.call(lambda: self.client.set_terminated(run_id, TERMINAL[status]), what="terminate run")
        elif status == "running":
            self.call(lambda: self.client.update_run(run_id, status="RUNNING"), what="update run")

    def run_state(
        self, run_id: str, *, what: str = "get run", retry_s: float | None = None
    ) -> tuple[str | None, dict[str, float]]:
        """(status tag, latest metrics) of a run; ``retry_s=0`` asks once."""
        run = self.call(lambda: self.client.get_run(run_id), what=what, retry_s=retry_s)
        return run.data.tags.get(TAG_STATUS), dict(run.data.metrics)

    def log_params_once(self, run_id: str, params: dict[str, Any]) -> None:
        """Log the params the run does not have yet (MLflow params are write-once: a resume re-logs none)."""
        from mlflow.entities import Param

        have = self.call(lambda: self.client.get_run(run_id), what="get run").data.params
        new = [Param(k, str(v)) for k, v in params.items() if k not in have]
        if new:
            self.call(lambda: self.client.log_batch(run_id, params=new), what="log params")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file to the run's artifacts."""
        self.call(lambda: self.client.log_artifact(run_id, str(path), artifact_path), what="log artifact")


# ----------------------------------------------------------------------------------------------------
# the sink of one trial


class MlflowSink:
    """``model.sink.Sink`` writing one trial's params, metrics, artifacts and status to its MLflow run.

    ``local_dir`` receives ``metrics.jsonl`` (every row, always), ``params.json`` and ``tracking.json``
    (run id, URI, rows confirmed by the server). A new sink on the same directory replays unconfirmed rows.
    """

    def __init__(
        self,
        tracker: Tracker | str | None,
        run_id: str | None = None,
        *,
        local_dir: str | Path | None = None,
        resolve_run=None,
        flush_every_s: float = 5.0,
        flush_rows: int = 200,
        give_up_s: float | None = None,
        log_checkpoints: bool = False,
        tag_branch_step: bool = False,
    ):
        self.tracker = tracker if isinstance(tracker, Tracker) else Tracker(tracker)
        self.run_id = run_id
        self._resolve_run = resolve_run  # called lazily when run_id is None
        self.local_dir = Path(local_dir) if local_dir else None
        self.flush_every_s = flush_every_s
        self.flush_rows = flush_rows
        if give_up_s is None:
            give_up_s = float(os.environ.get("VITS_SCALING_TRACKING_GIVE_UP_S", "300"))
        self.give_up_s = give_up_s
        self.log_checkpoints = log_checkpoints
        self.tag_branch_step = tag_branch_step  # a cooldown branch: its logged branch_step becomes a tag
        self._pending_rows: list[dict] = []
        self._pending_params: dict[str, str] = {}
        self._pending_artifacts: list[tuple[str, str | None]] = []
        self._pending_status: tuple[str, str] | None = None
        self._pending_tags: dict[str, str] = {}
        self._known_params: dict[str, str] | None = None
        self._has_error_tag: bool | None = None  # unknown until the run has been read
        self._conflicts: dict[str, tuple[str, str]] = {}
        self._synced = 0
        self._rows = 0
        self._last_flush = time.monotonic()
        self._down_since: float | None = None
        if self.local_dir is not None:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            self._load_local()

    @classmethod
    def for_trial(cls, cfg, *, local_dir: str | Path | None = None, **kw) -> MlflowSink:
        """Sink for a ``model.config.TrialConfig``: uses ``cfg.tracking.run_id`` or finds/creates the run."""
        tr = cfg.tracking
        tracker = Tracker(tr.uri)
        sweep = cfg.sweep or "adhoc"

        def resolve() -> str:
            return tracker.trial_run(
                tr.experiment,
                sweep,
                str(cfg.trial_id),
                parent_run_id=tr.parent_run_id,
                run_name=tr.run_name or cfg.name,
                run_id=getattr(tr, "run_id", None),
                status="running",
                tags=dict(tr.tags),
            )

        return cls(
            tracker,
            getattr(tr, "run_id", None),
            local_dir=local_dir or cfg.output_dir,
            resolve_run=resolve,
            log_checkpoints=tr.log_checkpoint,
            tag_branch_step=TAG_BRANCH_OF in tr.tags,  # a trunk logs a branch_step per branch point
            **kw,
        )

    # --- local record ---

    def _state_path(self) -> Path:
        return self.local_dir / "tracking.json"

    def _load_local(self) -> None:
        state = {}
        if self._state_path().exists():
            state = json.loads(self._state_path().read_text())
        jl = self.local_dir / "metrics.jsonl"
        rows = []
        if jl.exists():
            for line in jl.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a torn last line from a killed process
                    continue
        self._rows = len(rows)
        same_run = self.run_id is None or state.get("run_id") in (None, self.run_id)
        self._synced = min(int(state.get("synced_rows", 0)), self._rows) if same_run else 0
        self._pending_rows = rows[self._synced :]
        if self.run_id is None and state.get("run_id") and state.get("uri") == self.tracker.uri:
            self.run_id = state["run_id"]
        if self._pending_rows:
            log.info(
                "replaying %d metric rows not yet confirmed by %s", len(self._pending_rows), self.tracker.uri
            )

    def _save_state(self) -> None:
        if self.local_dir is None:
            return
        tmp = self._state_path().with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"run_id": self.run_id, "uri": self.tracker.uri, "synced_rows": self._synced})
        )
        tmp.replace(self._state_path())

    # --- Sink protocol ---

    def _branch_tag(self, values: dict[str, Any]) -> None:
        v = values.get(BRANCH_STEP_KEY) if self.tag_branch_step else None
        if v is not None:
            self._pending_tags[TAG_BRANCH_STEP] = str(int(float(v)))

    def log_params(self, params: dict[str, Any]) -> None:
        self._branch_tag(params)
        self._pending_params.update({k: _param_str(v) for k, v in params.items() if v is not None})
        if self.local_dir is not None:
            p = self.local_dir / "params.json"
            old = json.loads(p.read_text()) if p.exists() else {}
            old.update(self._pending_params)
            p.write_text(json.dumps(old, indent=1, ensure_ascii=False))
        self.flush(force=True)

    def start(self, params: dict[str, Any], *, run=None) -> None:
        """A trial's start in one batched write: status ``running`` and its params (``log_batch``).

        ``run``: the trial's MLflow run as the caller just read it (``client.get_run``), so the params it
        already holds (a retry) and whether it carries an old error tag are known without a second read."""
        if run is not None and run.info.run_id == self.run_id:
            self._known_params = dict(run.data.params)
            self._has_error_tag = TAG_ERROR in run.data.tags
        if self.local_dir is not None:
            (self.local_dir / "status.json").write_text(json.dumps({"status": "running", "message": ""}))
        self._pending_status = ("running", "")
        self.log_params(params)  # flushes: params and the status tag in one batch

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        vals = {}
        for k, v in metrics.items():
            if v is None:
                continue
            try:
                vals[k] = float(v)
            except (TypeError, ValueError):
                continue
        if not vals:
            return
        self._branch_tag(vals)
        row = {"step": int(step), "t": int(time.time() * 1000), "m": vals}
        if self.local_dir is not None:
            with open(self.local_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        self._rows += 1
        self._pending_rows.append(row)
        if (
            len(self._pending_rows) >= self.flush_rows
            or time.monotonic() - self._last_flush > self.flush_every_s
        ):
            self.flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._pending_artifacts.append((str(path), artifact_path))
        self.flush()

    def log_checkpoint(self, path: str | Path, step: int) -> None:
        if self.log_checkpoints:
            self._pending_artifacts.append((str(path), "checkpoints"))
        self.flush(force=True)  # what MLflow holds is never behind the checkpoint a retry resumes from

    def set_status(self, status: str, message: str = "") -> None:
        if self.local_dir is not None:
            (self.local_dir / "status.json").write_text(json.dumps({"status": status, "message": message}))
        self._pending_status = (status, message)
        self.flush(force=True)

    def close(self) -> None:
        """Flush everything; if the store is still unreachable, raise with the URI and the local file."""
        self.flush(force=True, wait=True)

    # --- sending ---

    def _ensure_run(self) -> str:
        if self.run_id is None:
            if self._resolve_run is None:
                raise ValueError("MlflowSink needs a run_id or a resolve_run callable")
            self.run_id = self._resolve_run()
            if self.local_dir is not None:
                self._save_state()
        return self.run_id

    def flush(self, *, force: bool = False, wait: bool = False) -> None:
        if not (force or wait) and time.monotonic() - self._last_flush < 0.5:
            return
        self._last_flush = time.monotonic()
        waited = time.monotonic() - self._down_since if self._down_since else 0.0
        budget = max(min(5.0, self.give_up_s), self.give_up_s - waited) if wait else 0.0
        retry_s, self.tracker.retry_s = self.tracker.retry_s, budget
        try:
            self._send()
            self._down_since = None
        except TrackingUnavailable as e:
            now = time.monotonic()
            self._down_since = self._down_since or now
            if wait or now - self._down_since >= self.give_up_s:
                where = f"{self.local_dir / 'metrics.jsonl'}" if self.local_dir else "(no local dir)"
                raise TrackingUnavailable(
                    f"MLflow tracking store {self.tracker.uri} unreachable for "
                    f"{now - self._down_since:.0f}s ({e}); {len(self._pending_rows)} unsent metric rows are "
                    f"kept locally in {where} and are replayed when this trial is resumed"
                ) from e
            log.warning("tracking store %s unreachable, buffering (%s)", self.tracker.uri, e)
        finally:
            self.tracker.retry_s = retry_s

    def _send(self) -> None:
        from mlflow.entities import Metric, Param, RunTag

        t = self.tracker
        run_id = t.call(self._ensure_run, what="find run")
        client = t.client
        status_sent = False
        if self._pending_params:
            if self._known_params is None:
                run = t.call(lambda: client.get_run(run_id), what="get run")
                self._known_params = dict(run.data.params)
            new = {}
            for k, v in self._pending_params.items():
                old = self._known_params.get(k)
                if old is None:
                    new[k] = v
                elif old != v:
                    self._conflicts[k] = (old, v)
            items = list(new.items())
            for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
                chunk = [Param(k, v) for k, v in items[i : i + MAX_PARAMS_PER_BATCH]]
                tags = []  # the status of a starting trial rides with its last params chunk
                if self._pending_status is not None and i + MAX_PARAMS_PER_BATCH >= len(items):
                    tags = t.status_tags(*self._pending_status)
                t.call(lambda c=chunk, g=tags: client.log_batch(run_id, params=c, tags=g), what="log params")
                self._known_params.update(items[i : i + MAX_PARAMS_PER_BATCH])
                if tags:
                    status_sent = True
            self._pending_params = {}
            if self._conflicts:
                log.warning(
                    "run %s keeps its first value for params %s (MLflow params cannot change)",
                    run_id,
                    sorted(self._conflicts),
                )
                msg = json.dumps({k: {"logged": a, "new": b} for k, (a, b) in self._conflicts.items()})
                tag = [RunTag(TAG_PARAM_CONFLICTS, msg[:MAX_TAG_VAL_LENGTH])]
                t.call(lambda: client.log_batch(run_id, tags=tag), what="log tags")
        while self._pending_rows:
            metrics, n_rows = [], 0
            for row in self._pending_rows:
                if metrics and len(metrics) + len(row["m"]) > MAX_METRICS_PER_BATCH:
                    break
                metrics.extend(Metric(k, v, row["t"], row["step"]) for k, v in row["m"].items())
                n_rows += 1
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):  # a single over-wide row
                chunk = metrics[i : i + MAX_METRICS_PER_BATCH]
                t.call(lambda c=chunk: client.log_batch(run_id, metrics=c), what="log metrics")
            del self._pending_rows[:n_rows]
            self._synced += n_rows
            self._save_state()
        if self._pending_tags:
            tags = [RunTag(k, v) for k, v in self._pending_tags.items()]
            t.call(lambda: client.log_batch(run_id, tags=tags), what="log tags")
            self._pending_tags = {}
        while self._pending_artifacts:
            path, apath = self._pending_artifacts[0]
            if Path(path).exists():
                fn = client.log_artifacts if Path(path).is_dir() else client.log_artifact
                t.call(lambda f=fn, p=path, a=apath: f(run_id, p, a), what="log artifact")
            self._pending_artifacts.pop(0)
        if self._pending_status is not None:
            status, message = self._pending_status
            t.set_status(run_id, status, message, tags_sent=status_sent, has_error_tag=self._has_error_tag)
            self._pending_status = None
            if message:
                self._has_error_tag = True
            elif status in ("running", "finished"):
                self._has_error_tag = False  # cleared by set_status


def format_error(e: BaseException) -> str:
    """The error text stored in a failed trial's run: type, message and the last frames."""
    tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return f"{type(e).__name__}: {e}\n\n{tb[-6000:]}"
