"""Alembic migrations of the enrollment store; run with `tmcaldav db upgrade`."""
