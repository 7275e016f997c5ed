"""A private PostgreSQL cluster made with ``initdb`` in a temp dir, on a free loopback port.

PostgreSQL refuses to run as root; on these machines everything runs as root, so the cluster
is created and run as the ``postgres`` system user (Debian's package creates it). As a normal
user (a developer's laptop, a Pi) it simply runs as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from devstack.ports import free_port, wait_for_port


class PostgresNotFoundError(RuntimeError):
    """initdb/pg_ctl are missing: install Debian's ``postgresql`` package."""


def find_pg_bin() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl`` (Debian keeps them off the PATH)."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise PostgresNotFoundError("initdb not found; run: apt-get install postgresql")
    return Path(candidates[-1]).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster. ``dsn`` connects as superuser ``postgres``."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.bin = find_pg_bin()
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="smaint-pg-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.datadir = self.workdir / "data"
        self.port = port or free_port()
        # The prefix that runs a command as the cluster's owner (runuser when we are root).
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
            # mkdtemp makes 0700 dirs under /tmp; the postgres user must be able to enter it.
            os.chmod(self.workdir, 0o755)  # noqa: S103 - a private temp dir, readable is fine

    @property
    def dsn(self) -> str:
        """libpq connection string for the superuser's ``postgres`` database."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, *args: str) -> None:
        res = subprocess.run([*self.as_user, *args], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")

    def start(self, durable: bool = False) -> PrivatePostgres:
        """initdb (first time only) and start; ``durable`` keeps fsync on (benchmarks)."""
        if not (self.datadir / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--no-sync",
            )
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
            "-l", str(self.workdir / "postgres.log"), "-w", "start",
        )
        wait_for_port(self.port)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode`` is pg_ctl's: smart, fast or immediate)."""
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.datadir),
                 "-m", mode, "-w", "stop"],
                capture_output=True, check=False,
            )

    def cleanup(self) -> None:
        """Stop and delete the cluster if this object created its directory."""
        self.stop("immediate")
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
