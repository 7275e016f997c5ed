"""The private services the tests and the demo stand on really start, serve and stop."""

from __future__ import annotations

import socket

import psycopg

from devstack.mosquitto import PrivateMosquitto


def test_postgres_database_is_usable(pg_dsn: str) -> None:
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute("SELECT current_database(), 1 + 1").fetchone()
    assert row is not None
    assert row[0].startswith("t_")
    assert row[1] == 2


def test_mosquitto_stops_and_frees_port() -> None:
    b = PrivateMosquitto().start()
    port = b.port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    b.cleanup()
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0
