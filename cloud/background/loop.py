"""A step run over and over in a daemon thread: the job worker and the rollup folder both use it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from psycopg_pool import PoolTimeout

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Runs ``step`` in a daemon thread until :meth:`stop`.

    ``step`` returns True when it did work (it runs again at once) and False when idle (the
    loop waits ``interval_s``). A database outage is logged and waited out; any other error
    is logged with its traceback, because the loop must outlive one bad step. With
    ``final_step`` the step runs once more after ``stop`` (e.g. fold what is pending).
    """

    def __init__(self, name: str, step: Callable[[], bool], interval_s: float, *,
                 final_step: bool = False) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.final_step = final_step
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop in a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()
        log.info("%s started", self.name)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the loop to end after the step in hand, and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("%s still busy after %.0f s", self.name, timeout_s)
        log.info("%s stopped", self.name)

    def _safe_step(self) -> bool:
        try:
            return self.step()
        except (psycopg.Error, PoolTimeout) as exc:
            # The database is away (restart, failover): wait and look again.
            log.warning("%s: database unavailable, retrying in %.1f s: %s", self.name,
                        self.interval_s, exc)
        except Exception:  # the loop must outlive any one failure
            log.exception("%s: unexpected error", self.name)
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._safe_step():
                self._stop.wait(self.interval_s)
        if self.final_step:
            self._safe_step()
