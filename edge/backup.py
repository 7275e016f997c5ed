"""The gateway's database, backed up while the gateway runs (SQLite's online backup API)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from edge.exceptions import GatewayError

Progress = Callable[[int, int], None]  # (pages copied, pages in total)
_PAGES_PER_STEP = 1024  # ~4 MB a step: the gateway's writers wait at most one step


class BackupError(GatewayError):
    """A gateway backup or restore could not be made; the message says what to do."""


def _check(path: Path) -> None:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        result = conn.execute("PRAGMA integrity_check").fetchone()
    if result is None or result[0] != "ok":
        raise BackupError(f"{path} fails SQLite's integrity check: {result}")


def backup_database(db: Path, out: Path, progress: Progress = lambda _d, _t: None) -> int:
    """Copy the live database ``db`` to ``out`` consistently; returns the bytes written."""
    if not db.exists():
        raise BackupError(f"no gateway database at {db}: check SMAINT_GATEWAY_STORAGE__PATH")
    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(partial)
        try:
            # Step-wise, so the running gateway keeps committing readings between steps;
            # SQLite restarts the copy by itself if a write lands in pages already copied.
            src.backup(dst, pages=_PAGES_PER_STEP,
                       progress=lambda _s, remaining, total: progress(total - remaining, total))
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        finally:
            dst.close()
    finally:
        src.close()
    _check(partial)
    partial.replace(out)
    return out.stat().st_size


def restore_database(backup: Path, db: Path, *, replace: bool = False) -> None:
    """Put ``backup`` in place as the gateway's database (the gateway must be stopped)."""
    if not backup.exists():
        raise BackupError(f"no backup file at {backup}")
    _check(backup)
    if db.exists() and not replace:
        raise BackupError(f"{db} exists: stop the gateway and pass --replace to overwrite it")
    staged = db.with_name(db.name + ".restoring")
    staged.write_bytes(backup.read_bytes())
    # The old database's write-ahead log would be replayed onto the restored file.
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    staged.replace(db)
