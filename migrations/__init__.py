"""Alembic migrations; ``swapmeter migrate`` runs them to head."""
