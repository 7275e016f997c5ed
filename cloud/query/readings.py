"""The read side: a device's raw readings page by page, the device registry, totals."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime, timedelta

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field

from cloud.db.pool import Conn
from cloud.exceptions import BadCursorError
from shared.schemas import GatewayId, Origin, Reading
from shared.times import as_utc

MAX_PAGE = 5000
_CURSOR = re.compile(r"^(-?\d{1,20})\.([0-9a-f]{8,32})\.(\d{1,10})$")


class StoredReading(Reading):
    """A reading as the cloud holds it: the wire reading plus the gateway that synced it."""

    gateway: GatewayId


class ReadingsPage(BaseModel):
    """One page of a device's readings in (ts, boot, seq) order."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(description="device id the page belongs to")
    readings: list[StoredReading] = Field(description="at most `limit` readings")
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class DeviceInfo(BaseModel):
    """A registry entry: registered on the first sync that carried one of its readings."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(description="device id")
    type: str = Field(description="sensor profile name, from its latest reading")
    gateway: str = Field(description="gateway that last synced it")
    first_seen_at: datetime = Field(description="time of its earliest reading")
    last_seen_at: datetime = Field(description="time of its latest reading")
    readings: int = Field(description="readings stored")
    state: str = Field(default="online", description="online/offline as its gateway last saw")


class DeviceList(BaseModel):
    """The device registry."""

    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceInfo] = Field(description="every registered device, by id")


class Stats(BaseModel):
    """Totals the demo polls to show progress and prove there are no duplicates."""

    model_config = ConfigDict(extra="forbid")

    readings: int = Field(description="rows stored in the readings table")
    distinct_readings: int = Field(description="distinct (device, boot, seq) stored")
    devices: int = Field(description="registered devices")
    per_device: dict[str, int] = Field(description="device id -> readings stored")


def encode_cursor(ts_us: int, boot: str, seq: int) -> str:
    """An opaque cursor naming the last row of a page."""
    return base64.urlsafe_b64encode(f"{ts_us}.{boot}.{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int]:
    """(ts in µs, boot, seq) of a cursor from encode_cursor; BadCursorError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadCursorError("cursor is not one this service issued") from exc
    m = _CURSOR.match(raw)
    if m is None or len(cursor) > 100:
        raise BadCursorError("cursor is not one this service issued")
    return int(m.group(1)), m.group(2), int(m.group(3))


def _ms(column: str) -> sql.Composable:
    # extract() is numeric since PostgreSQL 14: the epoch milliseconds come back exact.
    return sql.SQL("(extract(epoch FROM {}) * 1000)::bigint").format(sql.Identifier(column))


def readings_page(
    conn: Conn,
    device: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
    after: str | None = None,
    origin: Origin | None = None,
) -> ReadingsPage:
    """Readings of ``device`` with since <= ts < until, after the cursor, at most ``limit``;
    only those of ``origin`` if given."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be within 1..{MAX_PAGE}")
    # Only the conditions in use are written out, so every query shape gets a plan that
    # walks readings_device_ts instead of a generic plan full of "param IS NULL OR ...".
    where = [sql.SQL("device_id = %(device)s")]
    params: dict[str, object] = {"device": device, "limit": limit + 1}
    if since is not None:
        since = as_utc(since)
        where.append(sql.SQL("ts >= %(since)s"))
        params["since"] = since
    if until is not None:
        until = as_utc(until)
        where.append(sql.SQL("ts < %(until)s"))
        params["until"] = until
    if after is not None:
        ts_us, boot, seq = decode_cursor(after)
        where.append(sql.SQL(
            "(ts, boot_id, seq) > (timestamptz 'epoch' + %(a_ts)s::bigint * interval '1 us',"
            " %(a_boot)s, %(a_seq)s)"
        ))
        params.update(a_ts=ts_us, a_boot=boot, a_seq=seq)
    if origin is not None:
        # Manual entries are few: the partial index readings_manual serves them.
        where.append(sql.SQL("origin = %(origin)s"))
        params["origin"] = origin
    query = sql.SQL(
        "SELECT device_id, boot_id, seq, type, {ts}, {dts}, {rts}, metrics, score, scorer,"
        " model_version, anomalous, replay, gateway_id,"
        " (extract(epoch FROM ts) * 1000000)::bigint, origin, note"
        " FROM readings WHERE {where} ORDER BY ts, boot_id, seq LIMIT %(limit)s"
    ).format(
        ts=_ms("ts"), dts=_ms("device_ts"), rts=_ms("received_at"),
        where=sql.SQL(" AND ").join(where),
    )
    rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    # Rows were validated on their way in and the table's types hold them: not validated
    # again one by one (that was most of a page's time).
    readings = [
        StoredReading.model_construct(
            device=r[0], boot=r[1], seq=r[2], type=r[3], ts_ms=r[4], device_ts_ms=r[5],
            received_ms=r[6], metrics=r[7], score=r[8], scorer=r[9], model_version=r[10],
            anomalous=r[11], replay=r[12], gateway=r[13], origin=r[15], note=r[16],
        )
        for r in rows
    ]
    last = rows[-1] if rows else None
    return ReadingsPage(
        device=device,
        readings=readings,
        next=encode_cursor(last[14], last[1], last[2]) if more and last else None,
    )


def list_devices(conn: Conn) -> DeviceList:
    """Every registered device with its reading count (kept by ingest, not counted here)."""
    rows = conn.execute(
        "SELECT d.device_id, d.type, d.gateway_id, d.first_seen_at, d.last_seen_at,"
        " coalesce(c.n, 0), d.state"
        " FROM devices d LEFT JOIN"
        " (SELECT device_id, sum(n_rows)::bigint AS n FROM readings_hwm GROUP BY device_id) c"
        " USING (device_id) ORDER BY d.device_id"
    ).fetchall()
    return DeviceList(
        devices=[
            DeviceInfo(
                device=r[0], type=r[1], gateway=r[2], first_seen_at=r[3], last_seen_at=r[4],
                readings=r[5], state=r[6],
            )
            for r in rows
        ]
    )


# Per device: the rows ingest stored (its counters), and the distinct identities it holds
# (0..mark less the gaps, per boot). Two independent tallies: if a reading were ever stored
# twice, the first would exceed the second.
_STATS = """
SELECT h.device_id, sum(h.n_rows)::bigint, sum(h.max_seq + 1 - g.missing)::bigint,
       (SELECT count(*) FROM devices)
FROM readings_hwm h, LATERAL (
    SELECT coalesce(sum(least(g.hi, h.max_seq) - g.lo + 1), 0) AS missing
    FROM readings_seq_gaps g
    WHERE g.device_id = h.device_id AND g.boot_id = h.boot_id AND g.lo <= h.max_seq) g
GROUP BY h.device_id HAVING sum(h.n_rows) > 0 ORDER BY h.device_id
"""


def stats(conn: Conn) -> Stats:
    """Totals from the per-(device, boot) registry ingest maintains: no scan of readings."""
    # One statement, so every figure comes from one snapshot: separate statements could see
    # a batch commit in between.
    rows = conn.execute(_STATS).fetchall()
    devices = rows[0][3] if rows else (conn.execute("SELECT count(*) FROM devices").fetchone()
                                       or (0,))[0]
    per_device = {r[0]: r[1] for r in rows}
    return Stats(
        readings=sum(per_device.values()),
        distinct_readings=sum(r[2] for r in rows),
        devices=devices,
        per_device=per_device,
    )


class Bucket(BaseModel):
    """One time bucket of one device's metric: min, max, mean and count of its values."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(description="device id")
    start: datetime = Field(description="bucket start (UTC)")
    min: float = Field(description="smallest value in the bucket")
    max: float = Field(description="largest value in the bucket")
    avg: float = Field(description="mean of the values in the bucket")
    count: int = Field(description="values in the bucket")


class BucketSeries(BaseModel):
    """A metric bucketed for charts, served from the 1-minute or 1-hour rollups."""

    model_config = ConfigDict(extra="forbid")

    metric: str = Field(description="metric name")
    width_s: int = Field(description="bucket width in seconds")
    source: str = Field(description="rollup table the buckets were computed from")
    buckets: list[Bucket] = Field(description="by device, then time")


MAX_BUCKET_DEVICES = 1000
# Widths a chart reads easily, and the most buckets per device a range is cut into when the
# caller names no width: an hour of recent data gets minute buckets, a year daily ones.
NICE_WIDTHS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 31_536_000)
MAX_DEFAULT_BUCKETS = 300
DEFAULT_SPAN = timedelta(hours=1)


def default_width(since: datetime, until: datetime) -> int:
    """The narrowest nice width that cuts [since, until) into at most 300 buckets."""
    span_s = (as_utc(until) - as_utc(since)).total_seconds()
    for width in NICE_WIDTHS_S:
        if span_s <= width * MAX_DEFAULT_BUCKETS:
            return width
    return NICE_WIDTHS_S[-1]


def bucketed(
    conn: Conn, devices: list[str], metric: str, *, since: datetime | None = None,
    until: datetime | None = None, width_s: int | None = None,
) -> BucketSeries:
    """Buckets of ``width_s`` (a multiple of 60; None: ``default_width``) starting in
    [since, until) (None: now and an hour before ``until``), from the coarsest rollup."""
    until = as_utc(until) if until is not None else datetime.now(UTC)
    since = as_utc(since) if since is not None else until - DEFAULT_SPAN
    if width_s is None:
        width_s = default_width(since, until)
    if width_s < 60 or width_s % 60:
        raise ValueError("width_s must be a positive multiple of 60")
    if not 1 <= len(devices) <= MAX_BUCKET_DEVICES:
        raise ValueError(f"give 1..{MAX_BUCKET_DEVICES} devices")
    # An hour-aligned width reads the hourly rollup: 60x fewer rows than the minute one.
    # Deltas not folded yet (at most a second or two of ingest) are added, binned the same
    # way, so that a chart never misses what was just acknowledged.
    table, unit = ("readings_1h", "1 hour") if width_s % 3600 == 0 else ("readings_1m",
                                                                          "1 minute")
    rows = conn.execute(
        sql.SQL(
            "SELECT device_id, date_bin(%(w)s * interval '1 s', bucket, timestamptz 'epoch') b,"
            " min(min), max(max), sum(sum) / sum(count), sum(count)::bigint FROM ("
            " SELECT device_id, bucket, min, max, sum, count FROM {}"
            " WHERE device_id = ANY(%(d)s) AND metric = %(m)s"
            " AND bucket >= %(lo)s AND bucket < %(hi)s"
            " UNION ALL SELECT device_id, bucket, min, max, sum, count FROM rollup_pending"
            " WHERE device_id = ANY(%(d)s) AND metric = %(m)s"
            " AND date_bin(%(u)s::interval, bucket, timestamptz 'epoch') >= %(lo)s"
            " AND date_bin(%(u)s::interval, bucket, timestamptz 'epoch') < %(hi)s) r"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(sql.Identifier(table)),
        {"w": width_s, "d": devices, "m": metric, "lo": since, "hi": until, "u": unit},
    ).fetchall()
    return BucketSeries(
        metric=metric, width_s=width_s, source=table,
        buckets=[Bucket(device=r[0], start=r[1], min=r[2], max=r[3], avg=r[4], count=r[5])
                 for r in rows],
    )


class GatewayInfo(BaseModel):
    """A gateway registry entry with its reported (actual) state."""

    model_config = ConfigDict(extra="forbid")

    gateway: str = Field(description="gateway id")
    site: str | None = Field(description="site the gateway belongs to")
    revoked: bool = Field(description="its token was revoked")
    last_seen_at: datetime | None = Field(description="last sync")
    online: bool = Field(description="synced within the last 5 minutes")
    reported_state: dict[str, object] | None = Field(description="actual state it reported")


def list_gateways(conn: Conn) -> list[GatewayInfo]:
    """Every registered gateway, with last-seen time and reported state."""
    rows = conn.execute(
        "SELECT gateway_id, site_id, revoked_at IS NOT NULL, last_seen_at,"
        " coalesce(last_seen_at > now() - interval '5 minutes', false), reported_state"
        " FROM gateways ORDER BY gateway_id").fetchall()
    return [GatewayInfo(gateway=r[0], site=r[1], revoked=r[2], last_seen_at=r[3], online=r[4],
                        reported_state=r[5]) for r in rows]
