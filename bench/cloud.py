"""Cloud data-path benchmark: ``.venv/bin/python -m bench.cloud --json``.

Against a private, durable (fsync on) PostgreSQL it measures, in one run:

- ``bytes_per_reading``: upload bytes per motor reading (3 metrics) replaying the bundled NAB
  machine-temperature series with vibration and current synthesised from it, at the series'
  real 5-minute spacing, values at sensor resolution (0.01 °C, 0.001 g, 0.01 A; score to
  0.001 as the gateway's scorer rounds it). Row JSON and gzip'd row JSON are reported beside.
- ``ingest_per_s``: readings/s through the real HTTP sync endpoint (``python -m cloud serve``
  under uvicorn, batches of 5,000, 4 concurrent gateways); ``copy_ceiling_per_s``: binary COPY
  of the very same rows into the same table, 4 concurrent sessions, one commit per 5,000;
  ``ingest_ratio`` = the first over the second. Ingest time includes folding the rollup
  deltas it left pending. The two alternate for ``--rounds`` rounds (15 batches per gateway
  each) and the medians are reported, with each round's ratio.
- ``query_1000_ms``: p95 of fetching 1,000 raw readings of one device (cloud.query.readings) from a
  table of 10 million rows loaded with generate_series (then a CHECKPOINT, and autovacuum
  left to finish: the queries are timed on a settled database).
- ``rollup_24h_ms``: p95 of hourly buckets of one metric over 24 h for 100 devices
  (cloud.query.readings.bucketed over readings_1h, filled by generate_series for the 10M-row fleet).

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from cloud.access.gateway_tokens import create_gateway
from cloud.db.migrate import migrate
from cloud.db.pool import configure
from cloud.ingest.batch import ensure_partitions
from cloud.ingest.rollup import fold_pending
from cloud.query.readings import bucketed, readings_page
from devstack.ports import free_port, wait_for_port
from devstack.postgres import PrivatePostgres
from devstack.process import ServiceProcess
from shared import batchcodec
from shared.schemas import Reading, SyncBatch
from simulator.signals import nab_machine_temperature_f

BATCH = 5000
GATEWAYS = 4
GATEWAY_IDS = [f"gw-{g}" for g in range(GATEWAYS)]
T0 = 1_704_067_200_000  # 2024-01-01 UTC
FIVE_MIN_MS = 300_000


def motor_readings(n: int, devices: int, *, step_ms: int, seed: int = 1,
                   prefix: str = "motor", t0: int = T0) -> list[Reading]:
    """``n`` readings of ``devices`` motors replaying NAB at sensor resolution."""
    temps = nab_machine_temperature_f()
    rng = random.Random(seed)
    per = n // devices
    out: list[Reading] = []
    for d in range(devices):
        window: list[float] = []
        for k in range(per):
            temp = round((temps[(d * 997 + k) % len(temps)] - 32.0) * 5.0 / 9.0, 2)
            load = max(temp, 0.0)
            vib = round(0.15 + 0.012 * load + rng.gauss(0.0, 0.02), 3)
            cur = round(6.0 + 0.2 * load + rng.gauss(0.0, 0.3), 2)
            window = [*window[-29:], temp]
            med = statistics.median(window)
            mad = statistics.median(abs(x - med) for x in window) or 1.0
            ts = t0 + k * step_ms
            out.append(Reading(
                device=f"{prefix}-{d:03d}", boot="0123abcd", seq=k, type="motor", ts_ms=ts,
                device_ts_ms=ts, received_ms=ts + rng.randint(3, 40),
                metrics={"temperature_c": temp, "vibration_rms_g": max(vib, 0.0),
                         "current_a": max(cur, 0.0)},
                score=round(abs(temp - med) / (1.4826 * mad), 3), scorer="stat",
                anomalous=False))
    return out


def measure_bytes() -> dict[str, float]:
    """Bytes per reading of one 5,000-reading batch in each encoding."""
    batch = SyncBatch(gateway="gw-bench", batch_seq=1, created_ms=T0,
                      readings=motor_readings(BATCH, 10, step_ms=FIVE_MIN_MS))
    row = batch.model_dump_json().encode()
    n = len(batch.readings)
    return {
        "bytes_per_reading": round(len(batchcodec.encode(batch)) / n, 2),
        "row_json_bytes_per_reading": round(len(row) / n, 1),
        "row_json_gzip_bytes_per_reading": round(len(gzip.compress(row, 6)) / n, 2),
    }


def _bodies(gw: int, first: int, n_batches: int) -> list[bytes]:
    """Pre-encoded batches ``first``.. of gateway ``gw``: 100 devices, 1 reading/s, 50 each."""
    out = []
    devices = 100
    per = BATCH // devices
    for b in range(first, first + n_batches):
        readings = motor_readings(BATCH, devices, step_ms=1000, seed=gw * 1000 + b,
                                  prefix=f"g{gw}-m", t0=T0 + b * per * 1000)
        readings = [r.model_copy(update={"seq": r.seq + b * per}) for r in readings]
        out.append(batchcodec.encode(SyncBatch(gateway=f"gw-{gw}", batch_seq=b + 1,
                                               created_ms=T0, readings=readings)))
    return out


def _post_all(url: str, tokens: list[str], bodies: list[list[bytes]]) -> float:
    """Seconds for the gateways to upload their bodies concurrently, each one after another."""
    errors: list[str] = []

    def gateway(g: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[g]}", "Content-Encoding": "zstd",
                   "Content-Type": batchcodec.MEDIA_TYPE}
        with httpx.Client(timeout=120) as client:
            for body in bodies[g]:
                r = client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=gateway, args=(g,)) for g in range(len(bodies))]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    if errors:
        raise RuntimeError(f"ingest failed: {errors[:3]}")
    return elapsed


def _take_back(dsn: str, first: int, n_batches: int) -> list[list[bytes]]:
    """The rows of batches ``first``.. as binary COPY data per gateway and batch; then deleted
    (and the table vacuumed) so that the ceiling stores exactly what ingest stored."""
    chunks: list[list[bytes]] = [[] for _ in range(GATEWAYS)]
    seqs = (first + 1, first + n_batches)
    with psycopg.connect(dsn) as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM readings WHERE gateway_id = ANY(%s)"
            " AND batch_seq BETWEEN %s AND %s", (GATEWAY_IDS, *seqs)).fetchone() or (0,)
        if stored != GATEWAYS * n_batches * BATCH:
            raise RuntimeError(f"{stored} rows stored, {GATEWAYS * n_batches * BATCH} sent")
        for g in range(GATEWAYS):
            for b in range(seqs[0], seqs[1] + 1):
                buf = bytearray()
                with conn.cursor().copy(
                        "COPY (SELECT * FROM readings WHERE gateway_id = %s AND batch_seq = %s)"
                        " TO STDOUT (FORMAT binary)", (f"gw-{g}", b)) as copy:
                    for data in copy:
                        buf += data
                chunks[g].append(bytes(buf))
        conn.execute("DELETE FROM readings WHERE gateway_id = ANY(%s)"
                     " AND batch_seq BETWEEN %s AND %s", (GATEWAY_IDS, *seqs))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM readings")
    return chunks


def measure_ingest(dsn: str, tokens: list[str], n_batches: int,
                   rounds: int) -> dict[str, Any]:
    """HTTP ingest with 4 gateways, then binary COPY of the same rows into the same table.

    The two alternate for ``rounds`` rounds and the medians are reported: on a shared
    machine a slow spell then hits both sides of the ratio, not one.
    """
    bodies = [_bodies(g, 0, n_batches * rounds) for g in range(GATEWAYS)]
    port = free_port()
    env = {"SMAINT_CLOUD_LOGGING__LEVEL": "WARNING", "SMAINT_CLOUD_DB__POOL_MAX": "8"}
    cloud = ServiceProcess(["-m", "cloud", "serve", "--port", str(port), "--dsn", dsn], env,
                           port=port, name="cloud").spawn()
    ingest: list[float] = []
    ceiling: list[float] = []
    try:
        wait_for_port(port, timeout_s=60)
        url = f"http://127.0.0.1:{port}/api/v1/sync/batches"
        # Warm-up: partitions, plans and the pool, outside the timed part.
        with psycopg.connect(dsn) as conn:
            warm_token = create_gateway(conn, "gw-9")
        _post_all(url, [warm_token], [_bodies(9, 0, 1)])
        rows = GATEWAYS * n_batches * BATCH
        with psycopg.connect(dsn, autocommit=True) as folder:
            for r in range(rounds):
                part = [b[r * n_batches:(r + 1) * n_batches] for b in bodies]
                t = time.perf_counter()
                _post_all(url, tokens, part)
                # Rollup deltas the server has not folded yet are ingest's work too.
                while fold_pending(folder):
                    pass
                ingest.append(rows / (time.perf_counter() - t))
                chunks = _take_back(dsn, r * n_batches, n_batches)
                ceiling.append(rows / copy_ceiling_s(dsn, chunks))
    finally:
        cloud.stop(timeout_s=30)
    ratios = [i / c for i, c in zip(ingest, ceiling, strict=True)]
    return {"ingest_per_s": round(statistics.median(ingest)),
            "copy_ceiling_per_s": round(statistics.median(ceiling)),
            "ingest_ratio": round(statistics.median(ratios), 3),
            "ingest_ratio_rounds": [round(x, 3) for x in ratios],
            "ingest_per_s_rounds": [round(x) for x in ingest],
            "copy_ceiling_per_s_rounds": [round(x) for x in ceiling],
            "ingest_rows": rows * rounds}


def copy_ceiling_s(dsn: str, chunks: list[list[bytes]]) -> float:
    """Seconds to binary-COPY the chunks, one session per gateway, one commit per chunk."""

    def copier(g: int) -> None:
        with psycopg.connect(dsn) as c:
            for data in chunks[g]:
                with c.cursor().copy("COPY readings FROM STDIN (FORMAT binary)") as copy:
                    copy.write(data)
                c.commit()

    threads = [threading.Thread(target=copier, args=(g,)) for g in range(GATEWAYS)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t


def load_fleet(dsn: str, devices: int, per_device: int) -> None:
    """``devices`` x ``per_device`` readings at 5-minute spacing, plus their hourly rollups."""
    end = T0 + per_device * FIVE_MIN_MS
    with psycopg.connect(dsn) as conn:
        ensure_partitions(conn, [T0, end])

    def part(lo: int, hi: int) -> None:
        with psycopg.connect(dsn) as c:
            c.execute(
                "INSERT INTO readings (device_id, boot_id, seq, ts, device_ts, received_at,"
                " gateway_id, batch_seq, type, metrics, score, scorer, anomalous)"
                " SELECT 'q-' || lpad(d::text, 4, '0'), '0123abcd', k, t, t, t, 'gw-q', 1,"
                " 'motor', jsonb_build_object('temperature_c', round((60 + 10 * sin(k / 50.0)"
                " )::numeric, 2), 'vibration_rms_g', round((0.5 + (k %% 7) / 100.0)::numeric, 3),"
                " 'current_a', round((10 + d %% 5)::numeric, 2)), 0.5, 'stat', false"
                " FROM generate_series(0, %s - 1) k,"
                " LATERAL (SELECT timestamptz 'epoch' + (%s + k * 300000::bigint)"
                " * interval '1 ms' AS t) tt, generate_series(%s, %s - 1) d",
                (per_device, T0, lo, hi))
            c.commit()

    half = devices // 2
    threads = [threading.Thread(target=part, args=(0, half)),
               threading.Thread(target=part, args=(half, devices))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    hours = per_device * FIVE_MIN_MS // 3_600_000
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO readings_1h (device_id, metric, bucket, min, max, sum, count)"
            " SELECT 'q-' || lpad(d::text, 4, '0'), m,"
            " timestamptz 'epoch' + (%s + h * 3600000::bigint) * interval '1 ms',"
            " 50 + h %% 10, 70 + h %% 10, 12 * (60 + h %% 10), 12"
            " FROM generate_series(0, %s - 1) h, generate_series(0, %s - 1) d,"
            " unnest(array['temperature_c', 'vibration_rms_g', 'current_a']) m",
            (T0, hours, devices))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("VACUUM ANALYZE readings_1h")
        quiesce(conn)


def quiesce(conn: psycopg.Connection[Any]) -> None:
    """Flush the gigabytes just written and let autovacuum finish, so that the latencies
    measured next are the queries' own, not a checkpoint's or a vacuum's running beside them."""
    conn.execute("CHECKPOINT")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    ).fetchone() or (0,))[0]:
        time.sleep(0.5)


def p95(samples: list[float]) -> float:
    """95th percentile in ms, rounded."""
    return round(statistics.quantiles(samples, n=20)[-1] * 1000, 2)


def measure_queries(dsn: str, devices: int, per_device: int) -> dict[str, float]:
    """p95 of a 1,000-reading raw page and of a 24 h hourly rollup for 100 devices."""
    rng = random.Random(7)
    span_ms = per_device * FIVE_MIN_MS
    raw: list[float] = []
    roll: list[float] = []
    with psycopg.connect(dsn) as conn:
        configure(conn)  # as the API's pool sets up each connection
        for _ in range(60):
            dev = f"q-{rng.randrange(devices):04d}"
            since = datetime.fromtimestamp(
                (T0 + rng.randrange(span_ms - 1000 * FIVE_MIN_MS)) / 1000, tz=UTC)
            t = time.perf_counter()
            page = readings_page(conn, dev, since=since, limit=1000)
            raw.append(time.perf_counter() - t)
            conn.rollback()
            if len(page.readings) != 1000:
                raise RuntimeError(f"page of {len(page.readings)} readings")
        for _ in range(40):
            first = rng.randrange(devices - 99)
            devs = [f"q-{d:04d}" for d in range(first, first + 100)]
            since = datetime.fromtimestamp(
                (T0 + rng.randrange(span_ms - 86_400_000) // 3_600_000 * 3_600_000) / 1000,
                tz=UTC)
            t = time.perf_counter()
            series = bucketed(conn, devs, "temperature_c", since=since,
                              until=since + timedelta(hours=24), width_s=3600)
            roll.append(time.perf_counter() - t)
            conn.rollback()
            if len(series.buckets) != 2400:
                raise RuntimeError(f"{len(series.buckets)} buckets, expected 2,400")
    return {"query_1000_ms": p95(raw), "rollup_24h_ms": p95(roll),
            "query_1000_ms_median": round(statistics.median(raw) * 1000, 2),
            "rollup_24h_ms_median": round(statistics.median(roll) * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    """Run every measurement; print the results (one JSON line last with --json)."""
    ap = argparse.ArgumentParser(prog="python -m bench.cloud", description=__doc__)
    ap.add_argument("--json", action="store_true", help="print only the JSON result line")
    ap.add_argument("--batches", type=int, default=15, help="batches per gateway (ingest)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="alternating ingest / ceiling rounds (medians reported)")
    ap.add_argument("--devices", type=int, default=1000, help="devices in the query table")
    ap.add_argument("--per-device", type=int, default=10_000, help="readings per device")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    result: dict[str, Any] = {"storage": "native partitions (no timescaledb)"}
    result.update(measure_bytes())
    pg = PrivatePostgres().start(durable=True)
    try:
        dsn = {}
        for db in ("fleet", "ingest"):
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {db}")
            dsn[db] = f"host=127.0.0.1 port={pg.port} user=postgres dbname={db}"
            migrate(dsn[db])
        # Queries first, on a settled database of their own: the gigabytes the ingest rounds
        # write would otherwise still be flushing while they are timed.
        with psycopg.connect(dsn["fleet"]) as conn:
            create_gateway(conn, "gw-q")
        t = time.perf_counter()
        load_fleet(dsn["fleet"], args.devices, args.per_device)
        result["fleet_rows"] = args.devices * args.per_device
        result["fleet_load_s"] = round(time.perf_counter() - t, 1)
        result.update(measure_queries(dsn["fleet"], args.devices, args.per_device))
        with psycopg.connect(dsn["ingest"]) as conn:
            tokens = [create_gateway(conn, g) for g in GATEWAY_IDS]
        result.update(measure_ingest(dsn["ingest"], tokens, args.batches, args.rounds))
    finally:
        pg.cleanup()
    result["targets_met"] = {
        "ingest_ratio": result["ingest_ratio"] >= 0.5,
        "query_1000_ms": result["query_1000_ms"] <= 50,
        "rollup_24h_ms": result["rollup_24h_ms"] <= 200,
        "bytes_per_reading": result["bytes_per_reading"] <= 12,
    }
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    if not args.json:
        for k, v in result.items():
            print(f"{k:>34}: {v}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
