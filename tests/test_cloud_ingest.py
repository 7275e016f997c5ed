"""Cloud ingest against a real PostgreSQL: migrations, tokens, exactly-once batches."""

from __future__ import annotations

import threading

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.access.gateway_tokens import authenticate, create_gateway, revoke_gateway
from cloud.db.migrate import available, migrate
from cloud.db.pool import Conn
from cloud.exceptions import (
    AuthError,
    BadCursorError,
    ForbiddenGatewayError,
    GatewayNotFoundError,
    IngestError,
    InvalidBatchError,
    MigrationError,
)
from cloud.ingest.batch import apply_batch
from cloud.query.readings import decode_cursor, encode_cursor, readings_page, stats
from tests.fixtures.factories import T0, alert, batch, reading


def count(conn: Conn, table: str) -> int:
    """Rows in ``table`` (committed state as this connection sees it)."""
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    conn.rollback()
    assert row is not None
    return int(row[0])


def test_migrate_applies_each_file_once(pg_dsn: str) -> None:
    names = [m.name for m in available()]
    assert names[0] == "0001_init.sql"
    assert migrate(pg_dsn) == names
    assert migrate(pg_dsn) == []


def test_concurrent_migrations_are_serialised(pg_dsn: str) -> None:
    results: list[list[str]] = []
    threads = [threading.Thread(target=lambda: results.append(migrate(pg_dsn))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(len, results)) == [0, 0, 0, len(available())]


def test_edited_migration_is_refused(pg_dsn: str) -> None:
    migrate(pg_dsn)
    with psycopg.connect(pg_dsn) as c:
        c.execute("UPDATE schema_migrations SET sha256 = 'x'")
    with pytest.raises(MigrationError, match=r"0001_init\.sql"):
        migrate(pg_dsn)


def test_tokens_issue_check_reissue_revoke(conn: Conn) -> None:
    token = create_gateway(conn, "gw-2")
    assert authenticate(conn, token) == "gw-2"
    newer = create_gateway(conn, "gw-2")
    with pytest.raises(AuthError):
        authenticate(conn, token)  # re-issuing replaced the old token
    assert authenticate(conn, newer) == "gw-2"
    revoke_gateway(conn, "gw-2")
    with pytest.raises(AuthError, match="revoked"):
        authenticate(conn, newer)
    stored = conn.execute("SELECT token_sha256 FROM gateways WHERE gateway_id = 'gw-2'").fetchone()
    assert stored is not None
    assert newer.encode() not in bytes(stored[0])  # only the digest is kept
    with pytest.raises(AuthError):
        authenticate(conn, "")
    with pytest.raises(AuthError):
        authenticate(conn, "x" * 10_000)
    with pytest.raises(GatewayNotFoundError):
        revoke_gateway(conn, "nobody")
    with pytest.raises(ValueError, match="must match"):
        create_gateway(conn, "Bad Id!")


def test_batch_applied_twice_changes_nothing(conn: Conn) -> None:
    b = batch(1, [reading(i) for i in range(50)], [alert("a1b2c3d4", T0)])
    first = apply_batch(conn, b, "gw-1")
    assert (first.first_time, first.readings_inserted, first.readings_duplicate) == (True, 50, 0)
    assert first.alerts_upserted == 1
    again = apply_batch(conn, b, "gw-1")
    assert again.first_time is False
    assert again.model_dump(exclude={"first_time"}) == first.model_dump(exclude={"first_time"})
    assert count(conn, "readings") == 50
    assert count(conn, "sync_batches") == 1


def test_reading_resent_in_another_batch_is_not_doubled(conn: Conn) -> None:
    apply_batch(conn, batch(1, [reading(i) for i in range(10)]), "gw-1")
    # Readings 5..9 again (a lost ack) plus 10..14 new, and one repeated inside the batch.
    resent = [reading(i) for i in range(5, 15)] + [reading(12)]
    ack = apply_batch(conn, batch(2, resent), "gw-1")
    assert (ack.readings_inserted, ack.readings_duplicate) == (5, 6)
    assert count(conn, "readings") == 15
    # Same seq after a reboot is a new reading: the boot id tells them apart.
    ack = apply_batch(conn, batch(3, [reading(0, boot="0badb007")]), "gw-1")
    assert ack.readings_inserted == 1
    s = stats(conn)
    assert s.readings == s.distinct_readings == 16
    assert s.per_device == {"dev-1": 16}


def test_devices_register_and_track_last_seen(conn: Conn) -> None:
    apply_batch(conn, batch(1, [reading(5), reading(0, device="dev-2")]), "gw-1")
    apply_batch(conn, batch(2, [reading(1), reading(9)]), "gw-1")  # older and newer
    row = conn.execute(
        "SELECT type, gateway_id, first_seen_at, last_seen_at FROM devices"
        " WHERE device_id = 'dev-1'"
    ).fetchone()
    assert row is not None
    assert row[0:2] == ("motor", "gw-1")
    assert int(row[2].timestamp() * 1000) == T0 + 100
    assert int(row[3].timestamp() * 1000) == T0 + 900
    gw = conn.execute("SELECT last_seen_at FROM gateways WHERE gateway_id = 'gw-1'").fetchone()
    assert gw is not None
    assert gw[0] is not None
    assert stats(conn).devices == 2


def test_alerts_last_writer_wins(conn: Conn) -> None:
    apply_batch(conn, batch(1, alerts=[alert("a1b2c3d4", T0 + 20, "acknowledged")]), "gw-1")
    stale = apply_batch(conn, batch(2, alerts=[alert("a1b2c3d4", T0 + 10, "resolved")]), "gw-1")
    assert stale.alerts_upserted == 0
    # Two copies in one batch: the newer one is applied, once.
    newer = [alert("a1b2c3d4", T0 + 30, "open"), alert("a1b2c3d4", T0 + 40, "resolved")]
    assert apply_batch(conn, batch(3, alerts=newer), "gw-1").alerts_upserted == 1
    row = conn.execute("SELECT state, updated_ms FROM alerts").fetchone()
    assert row == ("resolved", T0 + 40)


def test_batch_of_another_gateway_is_forbidden(conn: Conn) -> None:
    create_gateway(conn, "gw-2")
    with pytest.raises(ForbiddenGatewayError):
        apply_batch(conn, batch(1, [reading(0)], gateway="gw-2"), "gw-1")
    assert count(conn, "sync_batches") == 0


def test_values_postgres_cannot_hold_are_refused(conn: Conn) -> None:
    # model_copy skips validation: the cloud must not trust that a client validated.
    nan_score = reading(0).model_copy(update={"score": float("nan")})
    with pytest.raises(InvalidBatchError, match="finite"):
        apply_batch(conn, batch(1, [nan_score]), "gw-1")
    bad_type = reading(0).model_copy(update={"type": "mo\x00tor"})
    with pytest.raises(InvalidBatchError, match="NUL"):
        apply_batch(conn, batch(1, [bad_type]), "gw-1")
    with pytest.raises(InvalidBatchError, match="batch_seq"):
        apply_batch(conn, batch(1).model_copy(update={"batch_seq": 2**63}), "gw-1")
    assert count(conn, "sync_batches") == 0


def test_apply_refuses_to_run_inside_a_callers_transaction(conn: Conn) -> None:
    conn.execute("SELECT 1")  # opens a transaction
    with pytest.raises(IngestError, match="outside a transaction"):
        apply_batch(conn, batch(1, [reading(0)]), "gw-1")
    conn.rollback()


def test_pages_cover_every_reading_once(conn: Conn) -> None:
    # Two boots share timestamps, so the (ts, boot, seq) tie-breakers matter.
    rows = [reading(i, ts_ms=T0 + i // 3) for i in range(40)]
    rows += [reading(i, boot="0badb007", ts_ms=T0 + i // 3) for i in range(40)]
    apply_batch(conn, batch(1, rows), "gw-1")
    seen: list[tuple[int, str, int]] = []
    after = None
    while True:
        page = readings_page(conn, "dev-1", limit=7, after=after)
        seen += [(r.ts_ms, r.boot, r.seq) for r in page.readings]
        if page.next is None:
            break
        after = page.next
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == 80


@given(st.integers(-(2**62), 2**62), st.from_regex(r"\A[0-9a-f]{8,32}\Z"),
       st.integers(0, 2**32 - 1))
def test_cursor_round_trip(ts_us: int, boot: str, seq: int) -> None:
    assert decode_cursor(encode_cursor(ts_us, boot, seq)) == (ts_us, boot, seq)


@pytest.mark.parametrize("cursor", ["", "!!!", "bm9wZQ", "MS4yLjM", "é", "A" * 200])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadCursorError):
        decode_cursor(cursor)
