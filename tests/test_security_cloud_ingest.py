"""Issue 13, cloud ingest: bounded batches, implausible timestamps dead-lettered, a partition
budget per upload. Real PostgreSQL, the real app (biz fixture: gateways gw-1, gw-2)."""

from __future__ import annotations

import time
from typing import Any

import zstandard

from cloud.ingest.limits import IngestLimits
from shared import batchcodec
from shared.schemas import SyncAck, SyncBatch
from tests.fixtures.cloud import Biz
from tests.fixtures.factories import T0, batch, reading

SYNC = "/api/v1/sync/batches"
DAY_MS = 86_400_000


def _post(biz: Biz, b: SyncBatch, gateway: str = "gw-1") -> Any:
    return biz.client.post(SYNC, content=b.model_dump_json().encode(), headers={
        "Authorization": f"Bearer {biz.gateway_tokens[gateway]}",
        "Content-Type": "application/json"})


def _partitions(biz: Biz) -> int:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(biz.dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pg_inherits"
                           " WHERE inhparent = 'readings'::regclass").fetchone()
    assert row is not None
    return int(row[0])


def _unbounded(schema: dict[str, Any], defs: dict[str, Any], where: str,
               seen: set[str]) -> list[str]:
    """Places in a JSON schema where a list, map or string has no size bound."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        return _unbounded(defs[name], defs, f"{where}<{name}>", seen | {name})
    found: list[str] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key, [])):
            found += _unbounded(sub, defs, f"{where}|{i}", seen)
    kind = schema.get("type")
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}[] has no maxItems")
        found += _unbounded(schema.get("items", {}), defs, f"{where}[]", seen)
    elif kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}{{}} has no maxProperties")
            found += _unbounded(extra, defs, f"{where}{{value}}", seen)
            names = schema.get("propertyNames", {"type": "string"})
            found += _unbounded({"type": "string", **names}, defs, f"{where}{{key}}", seen)
        for name, sub in schema.get("properties", {}).items():
            found += _unbounded(sub, defs, f"{where}.{name}", seen)
    elif kind == "string" and not {"maxLength", "enum", "const"} & set(schema) and (
            not _bounded_pattern(schema.get("pattern"))):
        found.append(f"{where} is a string without maxLength")
    return found


def _bounded_pattern(pattern: str | None) -> bool:
    return pattern is not None and "*" not in pattern and "+" not in pattern


def test_security_every_list_map_and_string_of_a_sync_batch_is_bounded() -> None:
    schema = SyncBatch.model_json_schema()
    assert _unbounded(schema, schema.get("$defs", {}), "SyncBatch", set()) == []


def test_security_millions_of_backfill_ids_are_refused_not_applied(biz: Biz) -> None:
    # The batch of the issue: 3.5 million completed-backfill ids in one upload, in both body
    # forms; the body limit is raised so that the schema's list bound is what refuses it.
    ids = ",".join(str(i + 1) for i in range(3_500_000))
    raw = (f'{{"v":1,"gateway":"gw-1","batch_seq":1,"created_ms":{T0},'
           f'"backfill_done":[{ids}]}}').encode()
    auth = {"Authorization": f"Bearer {biz.gateway_tokens['gw-1']}"}
    row = biz.client.post(SYNC, content=raw, headers={**auth,
                                                      "Content-Type": "application/json"})
    assert row.status_code in (413, 422), row.text
    columnar = biz.client.post(SYNC, content=zstandard.ZstdCompressor().compress(raw), headers={
        **auth, "Content-Type": batchcodec.MEDIA_TYPE, "Content-Encoding": "zstd"})
    assert columnar.status_code in (413, 422), columnar.text
    ok = _post(biz, batch(1, [reading(0)]))
    assert ok.status_code == 200, ok.text  # nothing of the refused upload was kept


def test_security_implausible_timestamps_are_dead_lettered_counted_and_listed(biz: Biz) -> None:
    now = int(time.time() * 1000)
    rows = [
        reading(0, ts_ms=T0),                       # plausible: stored
        reading(1, ts_ms=0),                        # 1970
        reading(2, ts_ms=1_262_304_000_000),        # 2010, before 2015-01-01
        reading(3, ts_ms=now + 2 * DAY_MS),         # two days ahead of the cloud clock
        reading(4, ts_ms=T0 + 1000),                # plausible
    ]
    before = _partitions(biz)
    resp = _post(biz, batch(1, rows))
    assert resp.status_code == 200, resp.text
    ack = SyncAck.model_validate(resp.json())
    assert (ack.readings_inserted, ack.readings_duplicate, ack.readings_dead_lettered) == (
        2, 0, 3)
    again = SyncAck.model_validate(_post(biz, batch(1, rows)).json())  # a retry adds up too
    assert (again.first_time, again.readings_inserted, again.readings_duplicate,
            again.readings_dead_lettered) == (False, 2, 0, 3)
    assert _partitions(biz) == before + 1  # T0's day only; none for 1970, 2010 or next week
    listed = biz.get("operator", "/api/v1/dead-letters", gateway="gw-1")
    assert listed.status_code == 200, listed.text
    seqs = {d["reading"]["seq"]: d["reason"] for d in listed.json()}
    assert set(seqs) == {1, 2, 3}
    assert "before 2015-01-01" in seqs[1]
    assert "before 2015-01-01" in seqs[2]
    assert "ahead of the cloud clock" in seqs[3]
    assert biz.get("viewer", "/api/v1/dead-letters").status_code == 403
    stored = biz.get("viewer", "/api/v1/stats").json()
    assert stored["readings"] == 2
    metrics = biz.client.get("/metrics").text
    assert 'smaint_cloud_ingest_dead_letters{reason="timestamp before 2015-01-01' in metrics


def test_security_a_batch_creates_at_most_a_few_partitions(biz: Biz) -> None:
    """Two batches over 1,000 plausible days each made 2,000 partitions before."""
    budget = IngestLimits().max_new_partitions
    start = T0 - 1500 * DAY_MS  # 2019
    before = _partitions(biz)
    for seq, first_day in ((1, 0), (2, 1000)):
        rows = [reading(i, ts_ms=start + (first_day + i) * DAY_MS) for i in range(1000)]
        resp = _post(biz, batch(seq, rows))
        assert resp.status_code == 429, resp.text
        assert resp.headers["Retry-After"] == "1"
        assert "max_new_partitions" in resp.json()["detail"]
    assert _partitions(biz) - before == 2 * budget
    # A batch within the days already made goes through.
    made = [reading(i, ts_ms=start + i * DAY_MS) for i in range(budget)]
    assert _post(biz, batch(3, made)).status_code == 200
