"""One trial: ``run_trial(config, sink)`` — budget -> steps, train, evaluate, checkpoint, resume."""

from model.train.budget import Budget, plan_budget
from model.train.evaluate import EvalResult, evaluate
from model.train.loop import TrialResult, run_trial

__all__ = ["Budget", "EvalResult", "TrialResult", "evaluate", "plan_budget", "run_trial"]
