"""Apply the ordered ``migrations/*.sql`` files once each, recorded in ``schema_migrations``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import psycopg

from cloud.exceptions import MigrationError

log = logging.getLogger(__name__)

# Any fixed 64-bit key: every cloud process that migrates takes the same lock.
_LOCK_KEY = 0x736D61696E74  # "smaint"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its file name (the version) and its SQL text."""

    name: str
    sql: str

    @property
    def sha256(self) -> str:
        """Checksum recorded when applied, to notice a migration edited afterwards."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with this package, in the order they must run."""
    folder = resources.files("cloud.db.migrations")
    files = sorted(
        (f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name
    )
    return [Migration(f.name, f.read_text(encoding="utf-8")) for f in files]


def migrate(dsn: str) -> list[str]:
    """Bring the schema at ``dsn`` up to date; returns the names of the migrations applied.

    Everything runs in one transaction under an advisory lock, so two processes starting at
    once apply each migration exactly once, and a failing migration leaves nothing half done.
    """
    try:
        conn = psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise MigrationError(f"cannot connect to the database: {exc}") from exc
    with conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, sha256 text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = conn.execute("SELECT name, sha256 FROM schema_migrations").fetchall()
        done: dict[str, str] = dict(rows)
        applied: list[str] = []
        for mig in available():
            if mig.name in done:
                if done[mig.name] != mig.sha256:
                    raise MigrationError("changed after it was applied; add a new one", mig.name)
                continue
            try:
                conn.execute(mig.sql.encode())
            except psycopg.Error as exc:
                raise MigrationError(str(exc).strip(), mig.name) from exc
            conn.execute(
                "INSERT INTO schema_migrations (name, sha256) VALUES (%s, %s)",
                (mig.name, mig.sha256),
            )
            log.info("applied migration %s", mig.name)
            applied.append(mig.name)
    return applied
