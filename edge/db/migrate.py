"""Apply the ordered ``migrations/*.sql`` files once each, recorded in ``schema_migrations``.

The SQLite counterpart of cloud/db/migrate.py (the gateway never imports the cloud): every
pending migration and its record run in one ``BEGIN IMMEDIATE`` transaction, so two processes
opening the database at once apply each exactly once, and a failing one leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

from edge.exceptions import GatewayError

log = logging.getLogger(__name__)

# Columns the start-up code before versioned migrations added by ALTER TABLE to databases it
# had made earlier still: a database of that age gets them before 0001 adopts it.
_LEGACY_COLUMNS = (
    ("readings", "time_source", "TEXT NOT NULL DEFAULT 'device'"),
    ("sync_batches", "kind", "TEXT NOT NULL DEFAULT 'live'"),
    ("sync_batches", "backfill_id", "INTEGER"),
    ("sync_batches", "backfill_done", "TEXT"),
)


class MigrationError(GatewayError):
    """The gateway database cannot be brought to this version's schema."""

    def __init__(self, message: str, migration: str | None = None) -> None:
        where = f"migration {migration}: " if migration else ""
        super().__init__(f"gateway database schema: {where}{message}")
        self.migration = migration


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema change: its file name (the version) and its SQL text."""

    name: str
    sql: str

    @property
    def sha256(self) -> str:
        """Checksum recorded when applied, to notice a migration edited afterwards."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> Iterator[str]:
        """The SQL statements of the file, one at a time (sqlite3 runs one per execute)."""
        *parts, tail = self.sql.split(";")
        buf = ""
        for part in parts:
            buf += part + ";"
            # A ';' inside a string literal or a comment does not end a statement.
            if sqlite3.complete_statement(buf):
                yield buf
                buf = ""
        rest = [ln for ln in (buf + tail).splitlines()
                if ln.strip() and not ln.strip().startswith("--")]
        if rest:
            raise MigrationError(f"statement without a closing ';': {rest[0].strip()!r}",
                                 self.name)


def available() -> list[Migration]:
    """The migrations shipped with this package, in the order they must run."""
    folder = resources.files("edge.db.migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    return [Migration(f.name, f.read_text(encoding="utf-8")) for f in files]


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _adopt_legacy(conn: sqlite3.Connection) -> None:
    """Give a database made before versioned migrations the columns its code would have added."""
    tables = _tables(conn)
    for table, column, decl in _LEGACY_COLUMNS:
        if table not in tables:
            continue  # 0001 creates it whole
        have = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
        if column not in have:
            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN {column} {decl}')
            log.info("legacy gateway database: added %s.%s", table, column)


def _recorded(conn: sqlite3.Connection) -> dict[str, str] | None:
    """name -> sha256 of the applied migrations; None before the first."""
    if "schema_migrations" not in _tables(conn):
        return None
    return dict(conn.execute("SELECT name, sha256 FROM schema_migrations"))


def _apply_pending(conn: sqlite3.Connection, known: list[Migration]) -> list[str]:
    """Inside the caller's transaction: run and record the migrations not applied yet."""
    done = _recorded(conn)  # again under the lock: another process may have migrated
    if done is None:
        _adopt_legacy(conn)
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, "
                     "sha256 TEXT NOT NULL, applied_ms INTEGER NOT NULL)")
        done = {}
    unknown = sorted(set(done) - {m.name for m in known})
    if unknown:
        raise MigrationError(f"the database has migrations this gateway does not know "
                             f"({', '.join(unknown)}): it was made by a newer version; "
                             f"run that version or restore a backup")
    applied: list[str] = []
    for mig in known:
        if mig.name in done:
            if done[mig.name] != mig.sha256:
                raise MigrationError("changed after it was applied; add a new one", mig.name)
            continue
        try:
            for statement in mig.statements():
                conn.execute(statement)
        except sqlite3.Error as exc:
            raise MigrationError(str(exc), mig.name) from exc
        conn.execute("INSERT INTO schema_migrations (name, sha256, applied_ms) "
                     "VALUES (?, ?, ?)", (mig.name, mig.sha256, time.time_ns() // 10**6))
        applied.append(mig.name)
    return applied


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Bring the database on ``conn`` (autocommit mode) up to date; returns migrations applied."""
    if conn.in_transaction:
        raise MigrationError("the connection is inside a transaction; migrate right after "
                             "connecting")
    known = available()
    if _recorded(conn) == {m.name: m.sha256 for m in known}:
        # Up to date (every start but the first after an upgrade): no write lock, so a status
        # command opening the database does not wait for the running gateway's transactions.
        return []
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise MigrationError(f"cannot lock the database for migration: {exc}") from exc
    try:
        applied = _apply_pending(conn, known)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    for name in applied:
        log.info("applied gateway migration %s", name)
    return applied


def version(conn: sqlite3.Connection) -> str | None:
    """Name of the newest migration applied to the database, or None before the first."""
    if "schema_migrations" not in _tables(conn):
        return None
    row = conn.execute("SELECT max(name) FROM schema_migrations").fetchone()
    return str(row[0]) if row and row[0] is not None else None
