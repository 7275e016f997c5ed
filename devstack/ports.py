"""Free loopback ports and waiting for a server to accept connections."""

from __future__ import annotations

import logging
import socket

from tenacity import (
    RetryError,
    Retrying,
    after_log,
    before_log,
    retry_if_exception_type,
    stop_after_delay,
    wait_fixed,
)

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``host:port`` accepts a TCP connection right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until ``host:port`` accepts TCP connections; TimeoutError after ``timeout_s``."""

    def connect() -> None:
        with socket.create_connection((host, port), timeout=0.5):
            pass

    retrying = Retrying(
        stop=stop_after_delay(timeout_s), wait=wait_fixed(0.05),
        retry=retry_if_exception_type(OSError),
        before=before_log(log, logging.DEBUG), after=after_log(log, logging.DEBUG))
    try:
        retrying(connect)
    except RetryError:
        raise TimeoutError(f"nothing accepted connections on {host}:{port}") from None
