"""A service run as its own process, the way it runs in production: for the demo, tests and bench.

One class starts ``python -m edge run``, ``python -m cloud serve`` (or any command), waits
until it serves, and stops or kills it; the demo, the kill/restart tests and the benchmarks
all use it, so they start services the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tenacity import (
    RetryError,
    Retrying,
    after_log,
    before_log,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from devstack.ports import accepts

log = logging.getLogger(__name__)


class ServiceNotReadyError(RuntimeError):
    """A started service exited, or did not become ready in time; the message has its log."""


class ServiceProcess:
    """A subprocess that can be started, stopped, SIGKILLed and started again.

    ``argv`` runs with this interpreter when it starts with ``-m`` or a script (``python`` is
    prepended); ``env`` is added to this process's environment. Output of every run is appended
    to ``log`` (discarded by default). ``start`` returns once the process listens on ``port``
    (if given) and ``ready()`` (if given) holds.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None,
                 log: Path = Path(os.devnull), port: int | None = None,
                 ready: Callable[[], bool] | None = None, *, cwd: Path | None = None,
                 name: str | None = None) -> None:
        self.argv = list(argv) if argv[0] != "-m" else [sys.executable, *argv]
        self.env = dict(env or {})
        self.log, self.port, self.ready, self.cwd = log, port, ready, cwd
        self.name = name or " ".join(self.argv[1:4])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's id."""
        if self.proc is None:
            raise ServiceNotReadyError(f"{self.name} was never started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs (or was never started), else its exit status."""
        return None if self.proc is None else self.proc.poll()

    def tail(self, chars: int = 3000) -> str:
        """The end of the log, for failure messages."""
        if not self.log.is_file():
            return ""
        return self.log.read_text(errors="replace")[-chars:]

    def spawn(self) -> ServiceProcess:
        """Start the process without waiting for it to serve."""
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            # Its own session: a Ctrl-C in the terminal reaches the parent only, which then
            # stops its children in order (the gateway must not stop before its devices).
            self.proc = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, cwd=self.cwd, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def start(self, timeout_s: float = 30.0) -> ServiceProcess:
        """Start the process and wait until it serves; ServiceNotReadyError if it does not."""
        self.spawn()
        try:
            if self.port is not None:
                port = self.port  # a process that exits early fails at once, not after timeout_s
                self.wait_until(lambda: accepts(port), timeout_s)
            if self.ready is not None:
                self.wait_until(self.ready, timeout_s)
        except TimeoutError as exc:
            raise ServiceNotReadyError(
                f"{self.name} never became ready ({exc}); its log:\n{self.tail()}") from exc
        return self

    def wait_until(self, check: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``check`` until it holds; ServiceNotReadyError if the process exits first."""

        def holds() -> bool:
            if self.returncode is not None:
                raise ServiceNotReadyError(
                    f"{self.name} exited with {self.returncode}; its log:\n{self.tail()}")
            return check()

        retrying = Retrying(
            stop=stop_after_delay(timeout_s), wait=wait_fixed(0.05),
            retry=retry_if_result(lambda ok: not ok),
            before=before_log(log, logging.DEBUG), after=after_log(log, logging.DEBUG))
        try:
            retrying(holds)
        except RetryError as exc:
            raise TimeoutError(f"{self.name}: condition not met within {timeout_s:g} s") from exc

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, no final commit, no last ack."""
        if self.proc is None:
            raise ServiceNotReadyError(f"{self.name} was never started")
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """Send SIGTERM without waiting (to stop several processes at once)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL if it will not go within ``timeout_s``."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout_s)
            self.proc.kill()
            self.proc.wait()

