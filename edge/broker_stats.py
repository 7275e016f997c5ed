"""The broker's own counters ($SYS), read by the gateway and exported on its /metrics.

Mosquitto publishes its statistics under ``$SYS/broker/...`` every ``sys_interval`` seconds
(retained). The gateway subscribes with its own account (the gateway ACL allows
``$SYS/broker/#``, edge/broker_config.py) on a connection of its own (client id
``<gateway>-sys``), so these QoS 0 messages never mix with the acknowledged readings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aiomqtt

from edge.mqtt_session import keep_connected, settle_disconnect

log = logging.getLogger(__name__)

# $SYS topic -> (metric name after smaint_broker_, help). Mosquitto 2.0.11 has no counter for
# oversize publishes: over max_packet_size it disconnects the client instead (mosquitto.conf).
SYS_TOPICS: dict[str, tuple[str, str]] = {
    "$SYS/broker/publish/messages/dropped": (
        "publish_messages_dropped",
        "messages the broker dropped because a client's queue was full (max_queued_messages)"),
    "$SYS/broker/publish/messages/received": (
        "publish_messages_received", "PUBLISH messages the broker received"),
    "$SYS/broker/clients/connected": ("clients_connected", "clients connected to the broker"),
    "$SYS/broker/clients/disconnected": (
        "clients_disconnected", "persistent sessions whose client is away"),
    "$SYS/broker/clients/expired": (
        "clients_expired", "persistent sessions the broker expired (persistent_client_expiration)"),
    "$SYS/broker/messages/stored": (
        "messages_stored", "messages held by the broker (retained and queued)"),
    "$SYS/broker/store/messages/bytes": (
        "store_messages_bytes", "bytes of the messages held by the broker"),
}


class BrokerStats:
    """The latest value of each $SYS counter in :data:`SYS_TOPICS`."""

    def __init__(self, host: str, port: int, gateway_id: str, *, keepalive_s: int = 30,
                 login: Mapping[str, Any] | None = None) -> None:
        self.host, self.port = host, port
        self.identifier = f"{gateway_id}-sys"
        self.keepalive_s = keepalive_s
        self.login = dict(login or {})
        self.values: dict[str, float] = {}

    def gauges(self) -> dict[str, float]:
        """Metric name -> value, for the counters the broker has reported so far."""
        return dict(self.values)

    def take(self, topic: str, payload: bytes) -> None:
        """Record one $SYS message (ignores topics not listed and non-numeric payloads)."""
        known = SYS_TOPICS.get(topic)
        if known is None:
            return
        try:
            self.values[known[0]] = float(payload.decode())
        except (UnicodeDecodeError, ValueError):
            log.warning("broker statistic %s is not a number: %r", topic, payload[:40])

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the broker's counters until ``stop``; reconnects with back-off."""
        await keep_connected(lambda: self._session(stop), stop, retry_on=(aiomqtt.MqttError,),
                             name=f"broker statistics {self.host}:{self.port}")

    async def _session(self, stop: asyncio.Event) -> None:
        async with aiomqtt.Client(self.host, self.port, identifier=self.identifier,
                                  keepalive=self.keepalive_s, **self.login) as client:
            await client.subscribe([(topic, 0) for topic in SYS_TOPICS])
            reader = asyncio.ensure_future(self._read(client))
            stopping = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({reader, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                reader.cancel()
                settle_disconnect(client)
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if isinstance(payload, bytes | bytearray):
                self.take(str(message.topic), bytes(payload))
