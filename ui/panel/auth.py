"""The panel's local password and its logins: scrypt hashes, a first-start setup code, sessions.

The password comes from provisioning (``SMAINT_GATEWAY_PANEL__PASSWORD_HASH``, made with
``smaint panel hash-password``) or is chosen on the panel at first start. At first start the
gateway writes a one-time setup code to a file beside the password file (mode 0600) and logs
where it is: only someone who can read the gateway's disk or log can choose the password, not
the first person on the network to open the page. Sessions live in memory, keyed by the
browser id NiceGUI keeps in a signed cookie: a restart of the gateway signs everyone out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.private_file import write_private

log = logging.getLogger(__name__)

# scrypt cost: 16 MiB and about 50 ms on a Raspberry Pi 4 class CPU per check.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_SCHEME = "scrypt"
MIN_PASSWORD = 8


class PanelAuthError(ValueError):
    """A password or setup step the panel refuses; the message says what to do."""


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64) of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"{_SCHEME}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    parts = encoded.strip().split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise PanelAuthError("not a panel password hash (scrypt$N$r$p$salt$hash); make one "
                             "with `smaint panel hash-password`")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(
            parts[5], validate=True)
    except ValueError as exc:
        raise PanelAuthError(f"panel password hash unreadable ({exc}); make a new one with "
                             "`smaint panel hash-password`") from exc
    if n < 2**10 or n > 2**20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16 or \
            len(digest) < 16:
        raise PanelAuthError("panel password hash has implausible scrypt parameters")
    return n, r, p, salt, digest


def check_hash(encoded: str) -> None:
    """PanelAuthError unless ``encoded`` is a usable password hash."""
    _parse(encoded)


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches the hash (constant-time comparison)."""
    n, r, p, salt, digest = _parse(encoded)
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest),
                         maxmem=n * r * 129 + 1024 * 1024)
    return hmac.compare_digest(got, digest)


@dataclass
class PanelAuth:
    """Who may use the panel: the password (provisioned or set here) and signed-in browsers."""

    password_file: Path
    provisioned_hash: str = ""
    session_s: float = 12 * 3600
    _sessions: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.provisioned_hash:
            check_hash(self.provisioned_hash)  # a typo must stop the start, not every login

    @property
    def setup_code_file(self) -> Path:
        """Where the one-time code to choose the first password is written."""
        return self.password_file.with_name(self.password_file.name + ".setup-code")

    def _hash(self) -> str | None:
        if self.provisioned_hash:
            return self.provisioned_hash
        try:
            text = self.password_file.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    @property
    def configured(self) -> bool:
        """True once a password exists (provisioned or chosen at first start)."""
        return self._hash() is not None

    def prepare(self) -> None:
        """At start: without a password, write a one-time setup code and say where it is."""
        if self.configured:
            self.setup_code_file.unlink(missing_ok=True)
            return
        if not self.setup_code_file.exists():
            write_private(self.setup_code_file, secrets.token_hex(4))
        log.warning("panel: no password yet; open the panel and enter the setup code from %s "
                    "to choose one (or provision SMAINT_GATEWAY_PANEL__PASSWORD_HASH)",
                    self.setup_code_file)

    def set_first_password(self, code: str, password: str) -> None:
        """Choose the password at first start with the setup code; PanelAuthError if refused."""
        if self.configured:
            raise PanelAuthError("the panel password is set already; sign in with it")
        try:
            expected = self.setup_code_file.read_text().strip()
        except FileNotFoundError as exc:
            raise PanelAuthError("no setup code on this gateway; restart it to make one") from exc
        if not hmac.compare_digest(code.strip().encode(), expected.encode()):
            raise PanelAuthError(f"wrong setup code; it is in {self.setup_code_file}")
        if len(password) < MIN_PASSWORD:
            raise PanelAuthError(f"choose a password of at least {MIN_PASSWORD} characters")
        write_private(self.password_file, hash_password(password))
        self.setup_code_file.unlink(missing_ok=True)
        log.info("panel: password chosen at first start (%s)", self.password_file)

    def check(self, password: str) -> bool:
        """True if ``password`` is the panel's password."""
        encoded = self._hash()
        return encoded is not None and verify_password(password, encoded)

    # -- sessions -------------------------------------------------------------------------

    def sign_in(self, browser: str) -> None:
        """Start a session for this browser (after a successful :meth:`check`)."""
        self._sessions[browser] = time.monotonic() + self.session_s

    def sign_out(self, browser: str) -> None:
        """End this browser's session."""
        self._sessions.pop(browser, None)

    def signed_in(self, browser: str | None) -> bool:
        """True while this browser has a session that has not expired."""
        if browser is None:
            return False
        until = self._sessions.get(browser)
        if until is None:
            return False
        if until < time.monotonic():
            del self._sessions[browser]
            return False
        return True
