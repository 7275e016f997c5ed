"""The outbox uploader against a real (tiny) HTTP receiver: contents, retries, rejections."""

from __future__ import annotations

import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.retention import Retention
from edge.settings import GatewaySettings
from edge.store import Store
from edge.sync import Uploader
from shared import batchcodec
from shared.schemas import SyncBatch
from tests.fixtures.gateway import GATEWAY, ingest_through_pipeline

TOKEN = "s3cret-token"


@dataclass
class Receiver:
    """Records every request and answers from a script: (status, headers, body) per request."""

    script: list[tuple[int, dict[str, str], bytes | None]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        """Next scripted answer; a SyncAck for the batch by default."""
        if self.script:
            status, headers, payload = self.script.pop(0)
            if payload is not None:
                return status, headers, payload
        else:
            status, headers = 200, {}
        ack = {"gateway": body["gateway"], "batch_seq": body["batch_seq"], "first_time": True,
               "readings_inserted": len(body["readings"]), "readings_duplicate": 0,
               "alerts_upserted": len(body["alerts"])}
        return status, headers, json.dumps(ack).encode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on a free port, in a thread."""
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            if self.headers.get("Content-Encoding") == "zstd":
                decoded = batchcodec.decode(batchcodec.decompress(raw, 1 << 26))
                body = SyncBatch(
                    gateway=decoded.gateway, batch_seq=decoded.batch_seq,
                    created_ms=decoded.created_ms, readings=decoded.readings.to_readings(),
                    alerts=decoded.alerts, events=decoded.events, state=decoded.state,
                    backfill_done=decoded.backfill_done,
                    aggregates=decoded.aggregates).model_dump(mode="json")
            else:
                body = json.loads(raw)
            rec.requests.append({"path": self.path, "headers": dict(self.headers),
                                 "body": body})
            status, headers, payload = rec.answer(body)
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()
    thread.join()


def make_settings(url: str, db: Path) -> GatewaySettings:
    """Settings with quick retries so tests stay fast."""
    return GatewaySettings(
        gateway_id=GATEWAY,
        sync={"cloud_url": url, "token": TOKEN, "batch_max": 4, "retry_attempts": 3,
              "retry_max_s": 0.02},
        storage={"path": str(db)}, scoring={"warmup": 4})


def seqs_of(request: dict[str, Any]) -> list[int]:
    """The reading seqs a request carried, in order."""
    return [r["seq"] for r in request["body"]["readings"]]


async def test_batches_carry_alerts_and_the_oldest_readings_then_count_as_synced(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    ingest_through_pipeline(store, settings, range(6), spike_from=5)  # seq 5 opens an alert
    up = Uploader(settings, Outbox(store))
    first = await up.sync_once()
    assert first.outcome == "acked"
    req = receiver.requests[0]
    assert req["path"] == "/api/v1/sync/batches"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["Content-Encoding"] == "zstd"
    body = req["body"]
    assert (body["gateway"], body["batch_seq"]) == (GATEWAY, 1)
    assert seqs_of(req) == [0, 1, 2, 3]
    assert [a["state"] for a in body["alerts"]] == ["open"]
    assert body["alerts"][0]["explanation"]["temperature_c"] == 1.0  # the spiked metric, alone
    assert (await up.sync_once()).outcome == "acked"
    assert seqs_of(receiver.requests[1]) == [4, 5]
    assert receiver.requests[1]["body"]["alerts"] == []  # sent once, not again
    assert (await up.sync_once()).outcome == "idle"
    assert store.counters["synced"] == 6
    # Bytes synced: the two upload bodies as sent (compressed), counted once acknowledged.
    assert store.counters["sync_bytes"] == sum(
        int(r["headers"]["Content-Length"]) for r in receiver.requests)
    assert Outbox(store).backlog() == 0
    await up.aclose()
    store.close()


async def test_a_failed_upload_is_retried_with_the_same_batch_even_after_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    ingest_through_pipeline(store, settings, range(3))
    receiver.script = [(503, {"Retry-After": "0"}, b"busy"), (500, {}, b"oops"),
                       (429, {}, b"slow down")]
    up = Uploader(settings, Outbox(store))
    result = await up.sync_once()
    assert result.outcome == "failed"
    assert len(receiver.requests) == 3
    assert store.counters["synced"] == 0  # nothing counts as synced before a 200 ack
    await up.aclose()
    store.close()

    # "Restart": new readings arrive, but the recorded batch goes first and unchanged.
    store = Store.open(settings.storage.path)
    ingest_through_pipeline(store, settings, range(3, 5))
    receiver.script = [(200, {}, b'{"not": "an ack"}')]
    up = Uploader(settings, Outbox(store))
    assert (await up.sync_once()).outcome == "acked"  # bad ack retried, then a real one
    bodies = [r["body"] for r in receiver.requests]
    assert [b["batch_seq"] for b in bodies] == [1, 1, 1, 1, 1]
    # Identical but for the reported actual state (backlog), which is not part of a batch.
    assert all({**b, "state": None} == {**bodies[0], "state": None} for b in bodies)
    assert seqs_of(receiver.requests[0]) == [0, 1, 2]
    assert store.counters["synced"] == 3
    assert (await up.sync_once()).outcome == "acked"
    assert receiver.requests[-1]["body"]["batch_seq"] == 2
    assert seqs_of(receiver.requests[-1]) == [3, 4]
    await up.aclose()
    store.close()


@pytest.mark.expected_errors("edge.sync", "batch 1 rejected")
async def test_a_refused_batch_is_dead_lettered_and_sync_moves_on(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    ingest_through_pipeline(store, settings, range(6))
    receiver.script = [(422, {}, b'{"detail": "readings.0.metrics: bad"}')]
    up = Uploader(settings, Outbox(store))
    rejected = await up.sync_once()
    assert (rejected.outcome, rejected.batch_seq) == ("rejected", 1)
    assert len(receiver.requests) == 1  # not retried
    letters = store.conn.execute(
        "SELECT batch_seq, status, reason FROM sync_dead_letters").fetchall()
    assert letters == [(1, 422, 'HTTP 422: {"detail": "readings.0.metrics: bad"}')]
    assert (await up.sync_once()).outcome == "acked"
    assert receiver.requests[-1]["body"]["batch_seq"] == 2
    assert seqs_of(receiver.requests[-1]) == [4, 5]
    assert store.counters["synced"] == 2
    assert store.counters["sync_rejected_readings"] == 4
    assert Outbox(store).backlog() == 0
    # An operator can send the refused readings again once the cause is fixed.
    assert Outbox(store).requeue_rejected() == 4
    assert (await up.sync_once()).outcome == "acked"
    assert seqs_of(receiver.requests[-1]) == [0, 1, 2, 3]
    assert receiver.requests[-1]["body"]["batch_seq"] == 3
    await up.aclose()
    store.close()


@pytest.mark.expected_errors("edge.sync", "refused this gateway's token")
async def test_a_refused_token_keeps_the_batch_and_pauses(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    ingest_through_pipeline(store, settings, range(2))
    receiver.script = [(401, {}, b'{"detail": "revoked"}')]
    up = Uploader(settings, Outbox(store))
    assert (await up.sync_once()).outcome == "auth"
    assert store.count("sync_dead_letters", "status = 401") == 1
    assert (await up.sync_once()).outcome == "acked"
    assert [r["body"]["batch_seq"] for r in receiver.requests] == [1, 1]
    assert store.counters["synced"] == 2
    await up.aclose()
    store.close()


def fold_all(store: Store) -> int:
    """Run retention with a budget nothing fits in: every foldable unsent reading is folded."""
    result = Retention(store, 1).enforce(force=True)
    assert result is not None
    return result.aggregated


def aggregates_of(request: dict[str, Any]) -> dict[str, tuple[int, float, int]]:
    """metric -> (n, sum, updated_ms) of the aggregates a request carried (one minute here)."""
    return {a["metric"]: (a["n"], a["sum"], a["updated_ms"])
            for a in request["body"]["aggregates"]}


# A budget nothing fits in: retention says so, on purpose.
@pytest.mark.expected_errors("edge.retention", "still over the disk budget")
async def test_folded_readings_are_uploaded_and_a_later_merge_goes_out_again(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    outbox = Outbox(store)
    ingest_through_pipeline(store, settings, range(6))  # one device, one minute, three metrics
    assert fold_all(store) == 6
    assert store.count("reading_aggregates") == 3
    assert outbox.backlog() == 3  # no raw reading left, three aggregate rows to send
    ingest_through_pipeline(store, settings, range(6, 8))
    up = Uploader(settings, outbox)
    assert (await up.sync_once()).outcome == "acked"
    first = receiver.requests[0]
    assert seqs_of(first) == [6, 7]
    sent = aggregates_of(first)
    assert {m: n for m, (n, _, _) in sent.items()} == {
        "temperature_c": 6, "vibration_rms_g": 6, "current_a": 6}
    assert sent["current_a"][1] == pytest.approx(30.0)
    assert outbox.backlog() == 0
    assert store.counters["synced_aggregates"] == 3
    assert (await up.sync_once()).outcome == "idle"  # acked rows are not sent again

    # Two more readings of the same minute folded later: the merged rows go out again, newer.
    ingest_through_pipeline(store, settings, range(8, 10))
    assert fold_all(store) == 2
    assert outbox.backlog() == 3
    assert (await up.sync_once()).outcome == "acked"
    again = aggregates_of(receiver.requests[-1])
    assert {m: n for m, (n, _, _) in again.items()} == {
        "temperature_c": 8, "vibration_rms_g": 8, "current_a": 8}
    assert again["current_a"][1] == pytest.approx(40.0)
    assert all(again[m][2] > sent[m][2] for m in sent)  # last writer wins upstream
    assert outbox.backlog() == 0
    await up.aclose()
    store.close()


# A budget nothing fits in: retention says so, on purpose.
@pytest.mark.expected_errors("edge.retention", "still over the disk budget")
async def test_a_fold_never_changes_aggregates_frozen_in_a_batch_being_retried(
    receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(receiver.url, tmp_path / "gw.db")
    store = Store.open(settings.storage.path)
    outbox = Outbox(store)
    ingest_through_pipeline(store, settings, range(6))
    fold_all(store)
    receiver.script = [(503, {}, b"busy")] * settings.sync.retry_attempts
    up = Uploader(settings, outbox)
    assert (await up.sync_once()).outcome == "failed"  # batch 1 frozen with 3 aggregates
    # More readings of that minute while the batch waits: retention must leave them raw.
    ingest_through_pipeline(store, settings, range(6, 10))
    assert fold_all(store) == 0
    assert store.count("readings", "batch_seq IS NULL") == 4
    assert outbox.backlog() == 4 + 3
    assert (await up.sync_once()).outcome == "acked"
    bodies = [r["body"] for r in receiver.requests]
    assert [b["batch_seq"] for b in bodies] == [1] * (settings.sync.retry_attempts + 1)
    assert all({**b, "state": None} == {**bodies[0], "state": None} for b in bodies)
    assert {a["n"] for a in bodies[-1]["aggregates"]} == {6}
    # Acked: now the waiting readings fold into the rows, which go out again.
    assert fold_all(store) == 4
    assert (await up.sync_once()).outcome == "acked"
    assert {n for n, _, _ in aggregates_of(receiver.requests[-1]).values()} == {10}
    assert outbox.backlog() == 0
    await up.aclose()
    store.close()
