"""Which address a request came from: the peer, or X-Forwarded-For behind a named proxy only.

Throttles count per client address, so a client must not choose its own: ``X-Forwarded-For``
is read only when the peer is one of the proxies the settings name
(``SMAINT_CLOUD_API__TRUSTED_PROXIES``), and then from the right, skipping trusted hops: the
first address a trusted proxy did not vouch for is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> list[Network]:
    """Networks from addresses or CIDRs (``10.0.0.0/8``, ``::1``); ValueError names a bad one."""
    out: list[Network] = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"trusted proxy {v!r} is not an IP address or network") from exc
    return out


def _trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None,
                   proxies: Sequence[Network]) -> str:
    """The client's address for throttling and logs."""
    if peer is None:
        return "unknown"
    if not forwarded_for or not _trusted(peer, proxies):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, proxies):
            return hop[:64]
    return hops[0][:64] if hops else peer
