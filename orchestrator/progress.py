"""One line per trial event while a sweep runs (Ray Tune's own table is turned off: ``verbose=0``)."""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

SHOW = ("loss_g_total", "loss_mel", "val_mel_l1", "val_nelbo", "dnsmos_ovrl", "loss")


def _metrics(result: dict) -> str:
    parts = [f"{k}={result[k]:.4g}" for k in SHOW if isinstance(result.get(k), int | float)]
    return " ".join(parts[:3])


class Progress(Callback):
    enabled = True  # set by the driver (the callback itself is pickled with the Tune experiment)

    def __init__(self, total: int, names: dict[str, str] | None = None, every_s: float = 30.0):
        self.total = total
        self.names = names or {}
        self.every_s = every_s
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self._last: dict[str, float] = {}
        self._t0 = time.time()

    def _say(self, text: str) -> None:
        if Progress.enabled:
            el = time.time() - self._t0
            sys.stdout.write(f"[{el:6.0f}s {len(self.done)}/{self.total} done] {text}\n")
            sys.stdout.flush()

    def _id(self, trial) -> str:
        return str(trial.config.get("trial_id", trial))

    def on_trial_start(self, iteration, trials, trial, **info):
        tid = self._id(trial)
        self._say(f"start  {tid}  {self.names.get(tid, '')}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        tid = self._id(trial)
        now = time.time()
        if now - self._last.get(tid, 0) >= self.every_s:
            self._last[tid] = now
            self._say(f"       {tid}  step {result.get('step', '?')}  {_metrics(result)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        tid = self._id(trial)
        self.done.add(tid)
        res = trial.last_result or {}
        self._say(f"done   {tid}  {_metrics(res)}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"retry  {self._id(trial)}  (failed; resuming from its last checkpoint)")

    def on_trial_error(self, iteration, trials, trial, **info):
        tid = self._id(trial)
        self.done.add(tid)
        self.failed.add(tid)
        self._say(f"FAILED {tid}  (error in its MLflow run and {trial.path})")
