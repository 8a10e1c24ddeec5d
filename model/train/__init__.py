"""One trial: ``run_trial(config, sink)`` — budget -> steps, train, evaluate, checkpoint, resume."""
