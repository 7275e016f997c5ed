"""Console sign-ins: which browser acts as which user, until when.

A session holds the user's API key (or, after a password sign-in, the session key the API
issued, which expires by itself) in this process's memory only (never in the browser: the
browser keeps just NiceGUI's signed browser-id cookie). It ends at sign-out, after
``session_s`` (SMAINT_CLOUD_CONSOLE__SESSION_HOURS), or as soon as the API answers 401 for
its key (revoked). A restart of the cloud signs everyone out; several cloud replicas need
sticky sessions for the console.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

ROLES = ("viewer", "operator", "admin")


@dataclass
class Session:
    """One signed-in browser."""

    key: str
    name: str
    role: str
    expires_at: float  # time.monotonic()
    # Signed in with a password: the key is a session key the API revokes at sign-out.
    password: bool = False

    def may(self, role: str) -> bool:
        """Whether this user's role is ``role`` or above (what the API will check anyway)."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass
class Sessions:
    """Signed-in browsers by NiceGUI browser id."""

    lifetime_s: float
    _by_browser: dict[str, Session] = field(default_factory=dict)

    def start(self, browser: str, key: str, name: str, role: str, *, password: bool = False
              ) -> Session:
        """Sign ``browser`` in as ``name`` for ``lifetime_s`` (``password``: with a session
        key from a password sign-in)."""
        session = Session(key, name, role, time.monotonic() + self.lifetime_s, password)
        self._by_browser[browser] = session
        return session

    def get(self, browser: str | None) -> Session | None:
        """The browser's live session, or None (never signed in, signed out, expired)."""
        if browser is None:
            return None
        session = self._by_browser.get(browser)
        if session is not None and session.expires_at < time.monotonic():
            del self._by_browser[browser]
            return None
        return session

    def end(self, browser: str | None) -> None:
        """Sign the browser out."""
        if browser is not None:
            self._by_browser.pop(browser, None)
