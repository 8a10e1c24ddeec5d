"""A trial module with a side effect on import: the bad-input tests check that a sweep naming it is refused
(or only resolved, in a dry run) without this file's code ever running."""

from pathlib import Path

Path("IMPORTED_evil_trial").write_text("this module's code ran\n")


def run_trial(cfg, sink, resume=True):  # never reached by the tests
    raise AssertionError("evil_trial.run_trial ran")
