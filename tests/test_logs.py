"""Log lines carry the gateway and device ids from the shared filter, as text or JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from shared.logs import TEXT_FORMAT, ContextFilter, JsonLinesFormatter, bind_context


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(ContextFilter({"service": "test"}))
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out, handler
    finally:
        logger.removeHandler(handler)


def test_json_lines_carry_bound_gateway_and_per_call_device(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, out, handler = captured
    handler.setFormatter(JsonLinesFormatter())

    async def gateway(name: str) -> None:
        bind_context(gateway=name)
        await asyncio.sleep(0)  # the other gateway's task runs in between
        logger.info("alert=%s opened", "a1", extra={"device": "esp-1"})

    async def both() -> None:
        await asyncio.gather(gateway("gw-a"), gateway("gw-b"))

    asyncio.run(both())
    logger.info("outside any gateway")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d.get("gateway"), d.get("device"), d["message"]) for d in lines] == [
        ("gw-a", "esp-1", "alert=a1 opened"),
        ("gw-b", "esp-1", "alert=a1 opened"),
        (None, None, "outside any gateway"),
    ]
    assert all(d["service"] == "test" and d["level"] == "INFO" for d in lines)


def test_text_lines_show_context_once(
    captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]],
) -> None:
    logger, out, handler = captured
    handler.setFormatter(logging.Formatter(TEXT_FORMAT))

    async def run() -> None:
        bind_context(gateway="gw-t")
        logger.warning("broker lost", extra={"device": "esp-9"})

    asyncio.run(run())
    line = out.getvalue().strip()
    assert line.endswith("tests.logs [service=test gateway=gw-t device=esp-9] broker lost")
    assert line.count("gw-t") == 1
