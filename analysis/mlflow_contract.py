"""The MLflow layout of a sweep: the one home of its tag names, statuses, default store and run lookups.

``orchestrator`` writes this layout (``orchestrator.tracking``) and ``analysis`` reads it
(``analysis.table``); both import the names from here, so a writer and a reader can never disagree on a tag.
It lives in ``analysis/`` because that is the lower of the two packages (``orchestrator`` imports
``analysis``, never the reverse).

Layout:

* one **parent run** per sweep, tagged ``vits_scaling.sweep=<name>`` and ``vits_scaling.role=sweep``;
* one **child run** per trial, tagged ``vits_scaling.sweep``, ``vits_scaling.trial_id``,
  ``vits_scaling.role=trial``, ``vits_scaling.status`` (see ``STATUSES``) and ``mlflow.parentRunId``;
  sweeps with stages add ``vits_scaling.stage`` (pretrain | finetune) and ``vits_scaling.from_trial``
  (the pretrain trial a fine-tune started from, or ``scratch``);
  sweeps with ``wsd_branches`` add ``vits_scaling.branch`` (``trunk`` | ``cooldown``) on both kinds of trial,
  and on each cooldown branch ``vits_scaling.branch_of`` (its trunk's trial id) and ``vits_scaling.branch_step``
  (the trunk step it starts from, set once the plan has counted it).

The default store is ``$MLFLOW_TRACKING_URI``, else the SQLite file ``runs/mlflow.db`` below the current
directory, written as an absolute URI so a Ray worker started in another directory finds the same file.

mlflow is imported only inside the functions that need it (a heavy optional dependency for the callers that
only want the tag names).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

TAG_SWEEP = "vits_scaling.sweep"
TAG_TRIAL = "vits_scaling.trial_id"
TAG_STATUS = "vits_scaling.status"
TAG_ROLE = "vits_scaling.role"  # ROLE_SWEEP (the parent run) | ROLE_TRIAL
TAG_ERROR = "vits_scaling.error"
TAG_PARAM_CONFLICTS = "vits_scaling.param_conflicts"
TAG_STAGE = "vits_scaling.stage"  # pretrain | finetune (sweeps with stages)
TAG_FROM = "vits_scaling.from_trial"  # the pretrain trial a fine-tune started from, or "scratch"
TAG_BRANCH = "vits_scaling.branch"  # BRANCH_TRUNK | BRANCH_COOLDOWN (sweeps with wsd_branches)
TAG_BRANCH_OF = "vits_scaling.branch_of"  # the trunk trial id a cooldown branch starts from
TAG_BRANCH_STEP = "vits_scaling.branch_step"  # the trunk step (checkpoint) a cooldown branch starts from
TAG_PARENT = "mlflow.parentRunId"
TAG_RUN_NAME = "mlflow.runName"

ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"

BRANCH_TRUNK = "trunk"  # constant-lr run that serves several budgets; its end point is not a fit point
BRANCH_COOLDOWN = "cooldown"  # one budget's cooldown from a trunk checkpoint: an ordinary trial for fits

STATUSES = ("pending", "running", "finished", "failed", "diverged", "cancelled")
DONE_STATUSES = ("finished", "diverged")  # a trial in one of these is not run again
UNFINISHED_STATUSES = ("pending", "running")
USABLE_STATUS = ("finished",)  # the trials an analysis fits on
# our status -> the MLflow run state it ends in
TERMINAL = {"finished": "FINISHED", "diverged": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}

DEFAULT_STORE_ROOT = "runs"


def default_tracking_uri(root: str | Path = DEFAULT_STORE_ROOT) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite file ``<abs root>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(root).resolve() / 'mlflow.db')}"


def tracking_uri(uri: str | None = None) -> str:
    """``uri`` (``--tracking-uri``) if given, else ``default_tracking_uri()``."""
    return uri or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    return None


SCALING_TARGET = (
    "val_nelbo"  # the metric every command ranks and fits by default (README: the scaling target)
)


class StoreNotFound(FileNotFoundError):
    """A read-only command was pointed at a tracking store that does not exist."""


def existing_store(uri: str) -> str:
    """``uri`` for a command that only reads: a ``sqlite:///`` file that does not exist is refused, because
    opening it would create an empty database (and print MLflow's migration log) where nothing was tracked."""
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise StoreNotFound(
            f"no tracking store at {db}: nothing has been tracked there (submit a sweep first, "
            "or give --tracking-uri / set MLFLOW_TRACKING_URI to the store that has it)"
        )
    return uri


def tag_filter(tags: dict[str, str]) -> str:
    """An MLflow search filter matching runs whose tags equal ``tags``."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def run_status(run) -> str:
    """Our status of a run: its ``vits_scaling.status`` tag, else MLflow's own run state, lower-case."""
    return (run.data.tags.get(TAG_STATUS) or run.info.status or "").lower()


def is_sweep_run(run) -> bool:
    """The parent run of a sweep (older writers left the role out but never gave it a trial id)."""
    return run.data.tags.get(TAG_ROLE) == ROLE_SWEEP or TAG_TRIAL not in run.data.tags


def search_runs(
    client,
    experiment_ids: list[str],
    filter_string: str,
    *,
    order_by: list[str] | None = None,
    call: Callable[[Callable[[], Any]], Any] | None = None,
) -> list:
    """Every active run of ``experiment_ids`` matching ``filter_string``, all pages.

    ``call`` wraps each request (a retrying caller such as ``Tracker.call``); None calls it directly.
    """
    call = call or (lambda fn: fn())
    out, token = [], None
    while experiment_ids:
        page = call(
            lambda t=token: client.search_runs(
                experiment_ids, filter_string=filter_string, max_results=1000, order_by=order_by, page_token=t
            )
        )
        out.extend(page)
        token = page.token
        if not token:
            break
    return out


def active_experiment_ids(client) -> list[str]:
    """The ids of every active experiment of the store (a sweep's runs are looked up across all of them)."""
    from mlflow.entities import ViewType  # heavy optional dependency: only when a store is read

    return [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
