"""The gateway's SQLite schema: ordered migrations, applied once each when the store opens."""

from edge.db.migrate import MigrationError, available, migrate, version

__all__ = ["MigrationError", "available", "migrate", "version"]
