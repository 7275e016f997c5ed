"""Helpers to run a real gateway inside a test's event loop (used by tests, not by the service)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from edge.service import run_gateway
from edge.settings import GatewaySettings


class RunningGateway:
    """A gateway task plus an HTTP client for its status page."""

    def __init__(self, settings: GatewaySettings, task: asyncio.Task[None],
                 stop: asyncio.Event, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.task = task
        self.stop = stop
        self.http = http

    @property
    def base_url(self) -> str:
        """Root URL of the gateway's HTTP server."""
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    async def status(self) -> dict[str, Any]:
        """GET /api/status."""
        resp = await self.http.get(f"{self.base_url}/api/status")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data

    async def wait_status(self, check: Callable[[dict[str, Any]], bool],
                          timeout_s: float = 10.0) -> dict[str, Any]:
        """Poll /api/status until ``check`` holds; TimeoutError with the last status if not."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while True:
            if self.task.done():
                self.task.result()  # surface the gateway's own failure
                raise RuntimeError("gateway stopped")
            with contextlib.suppress(httpx.HTTPError):
                last = await self.status()
                if check(last):
                    return last
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway status never matched; last: {last}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[RunningGateway]:
    """Start a gateway, wait until its MQTT session is up, stop it cleanly on exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_gateway(settings, stop))
    async with httpx.AsyncClient(timeout=5.0) as http:
        gw = RunningGateway(settings, task, stop, http)
        try:
            await gw.wait_status(lambda s: bool(s.get("mqtt_connected")), timeout_s=15.0)
            yield gw
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=15.0)


class Publisher:
    """A blocking paho-mqtt publisher standing in for devices (QoS 1, waits for each PUBACK)."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        # Imported here: only tests publish as devices.
        import paho.mqtt.client as mqtt  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.connect(host, port)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        """Publish at QoS 1 and wait until the broker has it."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=10)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
