"""The kernel: what every domain shares (database, settings, errors, idempotency,
audit log, HTTP plumbing, metrics). It imports no domain."""
