"""A table in, answers out: power-law fits, compute-optimal allocation, plots, the HTML report. Never trains."""
