"""Mosquitto password files, written by the gateway, and the reload that applies them.

The broker (mosquitto 2.0's built-in ``password_file``) checks hashes in its ``$7$`` format:
``user:$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512>``, as ``mosquitto_passwd``
writes them. Writing them here needs no broker tool on the gateway. A SIGHUP makes mosquitto
re-read the files without dropping connected clients; a client whose account is gone is
disconnected by that reload (measured on 2.0.11; tests/test_broker_security.py checks it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import signal
from pathlib import Path

# mosquitto_passwd's count. The passwords are 128-bit random tokens, not human choices, so a
# higher count would only slow every device connect without making a guess any likelier.
ITERATIONS = 101
SALT_BYTES = 12


class BrokerReloadError(RuntimeError):
    """The broker could not be told to reload its accounts."""


def new_password() -> str:
    """A random password for a machine account (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``$7$`` hash mosquitto checks ``password`` against."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return (f"$7${ITERATIONS}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def check_password(password: str, hashed: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a mosquitto $7$ hash")
    salt, want = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(got, want)


class PasswordFile:
    """One mosquitto password file: ``username:hash`` per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        """Username -> hash (empty if the file does not exist yet)."""
        if not self.path.exists():
            return {}
        entries: dict[str, str] = {}
        for line in self.path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                user, _, hashed = line.partition(":")
                entries[user] = hashed
        return entries

    def _write(self, entries: dict[str, str]) -> None:
        # Written aside and renamed: the broker never reads half a file on a reload.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{u}:{h}\n" for u, h in sorted(entries.items()))
        tmp.replace(self.path)

    def set(self, username: str, password: str) -> None:
        """Add or replace an account."""
        # One account per line, split at the first ':' by mosquitto, and a line starting with
        # '#' is a comment to it: nothing else is safe.
        if not username or ":" in username or username.startswith("#") or any(
                c.isspace() or not c.isprintable() for c in username):
            raise ValueError(f"username {username!r} must be non-empty, without ':', spaces "
                             "or control characters, and not start with '#'")
        entries = self.read()
        entries[username] = hash_password(password)
        self._write(entries)

    def remove(self, username: str) -> bool:
        """Remove an account; False if it was not there."""
        entries = self.read()
        if entries.pop(username, None) is None:
            return False
        self._write(entries)
        return True

    def ensure(self) -> None:
        """Create the file empty if missing (mosquitto refuses to start without it)."""
        if not self.path.exists():
            self._write({})


def reload_broker(pid_file: Path) -> None:
    """SIGHUP the broker whose pid is in ``pid_file`` (its ``pid_file`` setting)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError) as exc:
        raise BrokerReloadError(
            f"cannot read the broker's pid from {pid_file} ({exc}); set "
            "SMAINT_GATEWAY_BROKER__PID_FILE to mosquitto's pid_file, or reload it yourself "
            "(kill -HUP <mosquitto pid>)") from exc
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise BrokerReloadError(f"cannot signal the broker (pid {pid} from {pid_file}): {exc}"
                                ) from exc
