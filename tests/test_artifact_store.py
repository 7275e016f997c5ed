"""The artifact store: the same behaviour from local files and from a real S3 server (SeaweedFS).

Every test that applies to both runs against both: the ``store`` fixture is parametrized over
the backends, each opened from an ArtifactStoreConfig the way the cloud settings will.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from cloud.artifacts import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactRangeError,
    ArtifactStore,
    ArtifactStoreConfig,
    ArtifactStoreError,
    InvalidArtifactKeyError,
    LocalArtifactStore,
    PresignNotSupportedError,
    open_artifact_store,
)
from cloud.artifacts.local import HEADER
from cloud.artifacts.s3 import S3ArtifactStore
from devstack.ports import free_port
from tests.fixtures.s3 import S3Server

MODEL_KEY = "models/motor/v1/model.onnx"


def _blob(n: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes."""
    return random.Random(seed).randbytes(n)


# The S3 backend's first test waits for SeaweedFS to start (5-12 s).
@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """An empty store of each backend (the S3 one under a key prefix of this test's own)."""
    if request.param == "local":
        config = ArtifactStoreConfig(local_root=tmp_path / "artifacts")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        config = ArtifactStoreConfig(
            backend="s3", s3_bucket=request.getfixturevalue("s3_session_bucket"),
            s3_prefix=request.getfixturevalue("s3_prefix"),
            s3_endpoint_url=server.endpoint_url, s3_region=server.region,
            s3_access_key_id=server.access_key_id,
            s3_secret_access_key=server.secret_access_key)
    return open_artifact_store(config)


def tamper(store: ArtifactStore, key: str, data: bytes) -> None:
    """Replace an artifact's bytes behind the store's back, keeping its recorded sha256."""
    if isinstance(store, LocalArtifactStore):
        path = store.root / "objects" / key
        header = path.read_bytes()[:HEADER]
        path.write_bytes(header + data)
    else:
        assert isinstance(store, S3ArtifactStore)
        recorded = store.head(key).sha256
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data,
                                Metadata={"sha256": recorded})


def test_round_trip_of_bytes_and_files(store: ArtifactStore, tmp_path: Path) -> None:
    data = _blob(50_000)
    info = store.put_bytes(MODEL_KEY, data)
    assert (info.key, info.size, info.sha256) == (MODEL_KEY, 50_000,
                                                 hashlib.sha256(data).hexdigest())
    assert store.get_bytes(MODEL_KEY) == data
    assert store.head(MODEL_KEY) == info
    assert store.exists(MODEL_KEY)
    # 9 MiB: above boto3's 8 MiB threshold, so S3 takes it as a multipart upload.
    big = _blob(9 * 1024 * 1024, seed=1)
    src = tmp_path / "bundle.zip"
    src.write_bytes(big)
    file_info = store.put_file("bundles/motor/v1.zip", src)
    assert file_info.size == len(big)
    assert store.head("bundles/motor/v1.zip").sha256 == hashlib.sha256(big).hexdigest()
    assert store.get_bytes("bundles/motor/v1.zip") == big
    assert store.put_bytes("empty", b"").size == 0
    assert store.get_bytes("empty") == b""


def test_overwrite_replaces_bytes_and_checksum(store: ArtifactStore) -> None:
    store.put_bytes(MODEL_KEY, b"first version")
    info = store.put_bytes(MODEL_KEY, b"second, longer version")
    assert store.get_bytes(MODEL_KEY) == b"second, longer version"
    assert store.head(MODEL_KEY) == info
    assert info.sha256 == hashlib.sha256(b"second, longer version").hexdigest()
    assert store.list("models/") == [MODEL_KEY]


def test_readers_see_whole_versions_while_a_writer_overwrites(store: ArtifactStore) -> None:
    versions = [_blob(256 * 1024, seed=10), _blob(200 * 1024, seed=11)]
    store.put_bytes(MODEL_KEY, versions[0])
    done = threading.Event()
    errors: list[BaseException] = []

    def overwrite() -> None:
        try:
            for i in range(30):
                store.put_bytes(MODEL_KEY, versions[i % 2])
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            errors.append(e)
        finally:
            done.set()

    writer = threading.Thread(target=overwrite)
    writer.start()
    reads = 0
    while not done.is_set() or reads == 0:
        # Never a mix of two versions, never bytes paired with the other version's sha256.
        assert store.get_bytes(MODEL_KEY) in versions
        reads += 1
    writer.join()
    assert errors == []
    assert store.get_bytes(MODEL_KEY) == versions[1]


def test_missing_key_raises_not_found_naming_the_key(store: ArtifactStore) -> None:
    store.put_bytes("models/other", b"x")
    for read in (store.get_bytes, store.head, lambda k: store.get_range(k, 0),
                 lambda k: store.get_range(k, 3, 3)):
        with pytest.raises(ArtifactNotFoundError, match="models/nothing-here"):
            read("models/nothing-here")
    assert not store.exists("models/nothing-here")
    assert store.delete("models/nothing-here") is False


def test_range_reads_resume_a_download_from_an_offset(store: ArtifactStore) -> None:
    data = _blob(300_001, seed=2)
    store.put_bytes(MODEL_KEY, data)
    assert store.get_range(MODEL_KEY, 0, 10) == data[:10]
    assert store.get_range(MODEL_KEY, 1000, 2000) == data[1000:2000]
    # A download broken off after 123,457 bytes resumes there and ends with the same sha256.
    got = bytearray(store.get_range(MODEL_KEY, 0, 123_457))
    while len(got) < len(data):
        got += store.get_range(MODEL_KEY, len(got), len(got) + 65_536)
    assert hashlib.sha256(got).hexdigest() == store.head(MODEL_KEY).sha256
    assert store.get_range(MODEL_KEY, 299_990) == data[299_990:]
    assert store.get_range(MODEL_KEY, 299_990, 10**9) == data[299_990:]  # end clamps
    assert store.get_range(MODEL_KEY, len(data)) == b""  # resuming a finished download
    assert store.get_range(MODEL_KEY, 5, 5) == b""
    with pytest.raises(ArtifactRangeError, match="beyond its 300001 bytes"):
        store.get_range(MODEL_KEY, len(data) + 1)
    with pytest.raises(ArtifactRangeError, match="malformed"):
        store.get_range(MODEL_KEY, 10, 5)
    with pytest.raises(ArtifactRangeError, match="malformed"):
        store.get_range(MODEL_KEY, -1)


def test_list_by_prefix(store: ArtifactStore) -> None:
    keys = ["models/motor/v1/model.onnx", "models/motor/v2/model.onnx",
            "models/mill/v1/model.onnx", "bundles/motor/v1.zip", "top"]
    for k in keys:
        store.put_bytes(k, k.encode())
    assert store.list() == sorted(keys)
    assert store.list("models/motor/") == keys[:2]
    assert store.list("models/m") == sorted(keys[:3])  # a string prefix, as S3 has it
    assert store.list("models/motor/v2") == ["models/motor/v2/model.onnx"]
    assert store.list("to") == ["top"]
    assert store.list("nothing/") == []


def test_delete_removes_the_artifact(store: ArtifactStore) -> None:
    store.put_bytes(MODEL_KEY, b"model")
    store.put_bytes("models/motor/v2/model.onnx", b"model 2")
    assert store.delete(MODEL_KEY) is True
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes(MODEL_KEY)
    assert store.list("models/") == ["models/motor/v2/model.onnx"]
    assert store.delete(MODEL_KEY) is False
    store.put_bytes(MODEL_KEY, b"again")  # the key is usable after its folder was emptied
    assert store.get_bytes(MODEL_KEY) == b"again"


def test_sha256_is_recorded_and_checked(store: ArtifactStore) -> None:
    data = b"onnx model bytes"
    digest = hashlib.sha256(data).hexdigest()
    assert store.put_bytes(MODEL_KEY, data, sha256=digest).sha256 == digest
    assert store.head(MODEL_KEY).sha256 == digest
    # A wrong expected digest (damaged in transfer) stores nothing and keeps the old artifact.
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.put_bytes(MODEL_KEY, b"damaged bytes", sha256=digest)
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.put_bytes("models/new", b"damaged bytes", sha256=digest)
    assert store.get_bytes(MODEL_KEY) == data
    assert not store.exists("models/new")
    with pytest.raises(ArtifactIntegrityError, match="64 lowercase hex"):
        store.put_bytes("models/new", data, sha256="abc")
    # Bytes changed behind the store's back no longer match what was recorded.
    tamper(store, MODEL_KEY, b"onnx model bytez")
    with pytest.raises(ArtifactIntegrityError, match="recorded sha256"):
        store.get_bytes(MODEL_KEY)


def test_put_file_checks_the_expected_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(b"file bytes")
    with pytest.raises(ArtifactIntegrityError, match="expected"):
        store.put_file(MODEL_KEY, src, sha256=hashlib.sha256(b"other").hexdigest())
    assert not store.exists(MODEL_KEY)
    with pytest.raises(ArtifactStoreError, match=r"missing\.onnx"):
        store.put_file(MODEL_KEY, tmp_path / "missing.onnx")


BAD_KEYS = ["", "/etc/passwd", "../escape", "models/../../escape", "a//b", "a/", "./a",
            "a/./b", "a\\b", "with space", "x" * 1025, "tab\there", "caf\u00e9"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_keys_are_refused_naming_the_key(store: ArtifactStore, key: str,
                                                 tmp_path: Path) -> None:
    calls: list[Callable[[], object]] = [
        lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key),
        lambda: store.get_range(key, 0), lambda: store.head(key),
        lambda: store.delete(key), lambda: store.exists(key)]
    for call in calls:
        with pytest.raises(InvalidArtifactKeyError) as err:
            call()
        assert repr(key)[:40] in str(err.value)
        assert err.value.key == key
    if key not in ("", "a/"):  # these are fine as listing prefixes
        with pytest.raises(InvalidArtifactKeyError):
            store.list(key)
    assert store.list() == []
    assert not (tmp_path / "escape").exists()


def test_presigned_url_downloads_the_artifact(store: ArtifactStore) -> None:
    data = _blob(70_000, seed=3)
    store.put_bytes(MODEL_KEY, data)
    if not store.supports_presigned_urls:
        with pytest.raises(PresignNotSupportedError, match="serve the bytes"):
            store.presigned_url(MODEL_KEY)
        return
    url = store.presigned_url(MODEL_KEY, expires_s=300)
    with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 (our own http URL)
        assert resp.read() == data
    with pytest.raises(ArtifactNotFoundError):
        store.presigned_url("models/nothing-here")
    with pytest.raises(ArtifactStoreError, match="1 to 604800"):
        store.presigned_url(MODEL_KEY, expires_s=0)


def test_local_writes_leave_no_temp_files_and_name_key_collisions(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    store.put_bytes("a/b", b"file")
    with pytest.raises(ArtifactIntegrityError):
        store.put_bytes("a/b", b"new", sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ArtifactStoreError, match="'a/b/c' collides"):
        store.put_bytes("a/b/c", b"beneath a file")
    store.put_bytes("x/y/z", b"deep")
    with pytest.raises(ArtifactStoreError, match="'x/y' collides"):
        store.put_bytes("x/y", b"over a folder")
    assert store.get_bytes("a/b") == b"file"
    assert os.listdir(tmp_path / "artifacts" / "tmp") == []
    store.delete("x/y/z")
    assert not (tmp_path / "artifacts" / "objects" / "x").exists()  # empty folders pruned


def test_local_store_refuses_files_it_did_not_write(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    (tmp_path / "artifacts" / "objects" / "stray.bin").write_bytes(b"copied in by hand")
    with pytest.raises(ArtifactIntegrityError, match="not an artifact written by this store"):
        store.head("stray.bin")


@pytest.mark.slow
def test_s3_prefix_keeps_keys_inside_it(s3_server: S3Server, s3_bucket: str) -> None:
    store = open_artifact_store(ArtifactStoreConfig(
        backend="s3", s3_bucket=s3_bucket, s3_prefix="smaint",
        s3_endpoint_url=s3_server.endpoint_url, s3_access_key_id="k", s3_secret_access_key="s"))
    assert isinstance(store, S3ArtifactStore)
    store.put_bytes(MODEL_KEY, b"m")
    raw = s3_server.client().list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in raw["Contents"]] == [f"smaint/{MODEL_KEY}"]
    assert store.list() == [MODEL_KEY]
    assert store.get_bytes(MODEL_KEY) == b"m"


@pytest.mark.slow
def test_s3_errors_say_what_to_fix(s3_server: S3Server) -> None:
    no_bucket = S3ArtifactStore("no-such-bucket-here", endpoint_url=s3_server.endpoint_url,
                                access_key_id="k", secret_access_key="s")
    # AWS says NoSuchBucket, SeaweedFS AccessDenied: either way the message names the bucket.
    with pytest.raises(ArtifactStoreError, match="'no-such-bucket-here'") as err:
        no_bucket.put_bytes(MODEL_KEY, b"x")
    assert "create it" in str(err.value) or "exists" in str(err.value)
    no_bucket.create_bucket()
    no_bucket.create_bucket()  # idempotent
    no_bucket.put_bytes(MODEL_KEY, b"x")
    assert no_bucket.get_bytes(MODEL_KEY) == b"x"
    no_bucket.delete(MODEL_KEY)
    no_bucket.client.delete_bucket(Bucket="no-such-bucket-here")
    dead = S3ArtifactStore("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}",
                           access_key_id="k", secret_access_key="s")
    with pytest.raises(ArtifactStoreError, match="check the endpoint URL"):
        dead.head(MODEL_KEY)


def test_config_validation_and_backend_choice(tmp_path: Path) -> None:
    assert isinstance(open_artifact_store(ArtifactStoreConfig(local_root=tmp_path)),
                      LocalArtifactStore)
    with pytest.raises(ValidationError, match="needs s3_bucket"):
        ArtifactStoreConfig(backend="s3")
    with pytest.raises(ValidationError, match="both"):
        ArtifactStoreConfig(backend="s3", s3_bucket="models", s3_access_key_id="k")
    with pytest.raises(ValidationError):
        ArtifactStoreConfig(backend="s3", s3_bucket="models", s3_endpoint_url="localhost:9000")
    secret = ArtifactStoreConfig(backend="s3", s3_bucket="models", s3_access_key_id="k",
                                 s3_secret_access_key="hunter2")
    assert "hunter2" not in repr(secret)
