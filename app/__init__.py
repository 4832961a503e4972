"""SwapMeter HTTP service: settings, database, errors, the FastAPI app and the CLI."""
