"""Evaluation metrics: DNSMOS / UTMOS, log-F0 and V/UV, MCD (DTW-aligned), ELBO terms."""
