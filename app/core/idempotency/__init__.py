"""Idempotency-Key handling for every POST that moves Tokens or creates a job."""
