"""A private Mosquitto broker using the repository's ``mosquitto/mosquitto.conf``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from devstack.ports import free_port, wait_for_port

REPO_CONF = Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf"


class MosquittoNotFoundError(RuntimeError):
    """The mosquitto binary is missing: install Debian's ``mosquitto`` package."""


class PrivateMosquitto:
    """Mosquitto on a free 127.0.0.1 port with persistence in a temp dir.

    Use as a context manager, or call ``start()`` / ``stop()``. ``restart()`` keeps the
    persistence directory, so queued QoS 1 messages and sessions survive it.
    """

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(self.binary).exists():
            raise MosquittoNotFoundError("mosquitto not found; run: apt-get install mosquitto")
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="smaint-mqtt-"))
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            REPO_CONF.read_text(),
            "# --- private instance (devstack/mosquitto.py) ---",
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            f"persistence_location {data}/",
            f"log_dest file {self.log_path}",
        ]
        if os.geteuid() == 0:
            # As root Mosquitto would drop to the 'mosquitto' user and then be unable to write
            # our temp dirs; this private instance has no reason to switch users.
            lines.append("user root")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> PrivateMosquitto:
        """Start the broker and wait until it accepts connections."""
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout_s=10)
        except TimeoutError:
            self.stop()
            log = self.log_path.read_text() if self.log_path.exists() else ""
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{log}") from None
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves its persistence file; ``kill`` uses SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the temp dir if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrivateMosquitto:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
