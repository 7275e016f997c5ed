"""The model bundle: an ONNX model, its manifest and an Ed25519 signature, in one zip file.

The cloud signs, the gateway verifies before loading: a bundle whose signature, checksum or
manifest does not hold is refused with a reason (and the gateway keeps its current scorer).

    manifest.json   what the model is: profile, version, feature spec, threshold, reference
                    statistics for drift checks, sha256 of model.onnx
    model.onnx      the model (skl2onnx export; input "X" float32 [n, features])
    manifest.sig    Ed25519 signature of manifest.json's exact bytes
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shared.exceptions import SmaintError
from shared.features import FeatureSpec

BUNDLE_FORMAT = 1
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


class BundleError(SmaintError):
    """A model bundle is corrupt, unsigned, signed by an unknown key or not for this code."""


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of a verified bundle."""

    profile: str
    version: str
    spec: FeatureSpec
    threshold: float
    created_ms: int
    onnx_sha256: str
    extra: dict[str, Any]

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys): what is signed."""
        body = {
            "format": BUNDLE_FORMAT,
            "profile": self.profile,
            "version": self.version,
            "feature_spec": self.spec.to_dict(),
            "threshold": self.threshold,
            "created_ms": self.created_ms,
            "onnx_sha256": self.onnx_sha256,
            **self.extra,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        """Parse manifest bytes; BundleError naming what is wrong."""
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise BundleError(f"manifest.json is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise BundleError("manifest.json must be an object")
        if body.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"bundle format {body.get('format')!r}; this gateway reads "
                              f"{BUNDLE_FORMAT}")
        try:
            spec = FeatureSpec.from_dict(body["feature_spec"])
            threshold = float(body["threshold"])
            known = {"format", "profile", "version", "feature_spec", "threshold",
                     "created_ms", "onnx_sha256"}
            return cls(
                profile=str(body["profile"]), version=str(body["version"]), spec=spec,
                threshold=threshold, created_ms=int(body["created_ms"]),
                onnx_sha256=str(body["onnx_sha256"]),
                extra={k: v for k, v in body.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"manifest.json is incomplete or malformed: {exc!r}") from exc


def generate_key(path: Path) -> Ed25519PublicKey:
    """Create a signing key file (raw 32-byte seed, base64) and return its public key."""
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64encode(key.private_bytes_raw()))
    path.chmod(0o600)
    return key.public_key()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a signing key written by :func:`generate_key`."""
    return Ed25519PrivateKey.from_private_bytes(base64.b64decode(path.read_bytes()))


def public_key_text(key: Ed25519PublicKey) -> str:
    """The public key as base64 text, for gateway settings."""
    return base64.b64encode(key.public_bytes_raw()).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    """Inverse of :func:`public_key_text`; BundleError if it is not a key."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise BundleError(f"not an Ed25519 public key: {exc}") from exc


def write_bundle(manifest: Manifest, onnx_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """Build the signed zip bytes of a bundle."""
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise BundleError("manifest onnx_sha256 does not match the model bytes")
    raw = manifest.to_json()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", raw)
        zf.writestr("model.onnx", onnx_bytes)
        zf.writestr("manifest.sig", base64.b64encode(key.sign(raw)))
    return buf.getvalue()


def read_bundle(data: bytes, trusted: list[Ed25519PublicKey]) -> tuple[Manifest, bytes]:
    """Verify and unpack a bundle: (manifest, onnx bytes), or BundleError with the reason."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is {len(data)} bytes, over {MAX_BUNDLE_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            missing = {"manifest.json", "model.onnx", "manifest.sig"} - names
            if missing:
                raise BundleError(f"bundle lacks {sorted(missing)}")
            for info in zf.infolist():
                if info.file_size > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{info.filename} unpacks to {info.file_size} bytes")
            raw = zf.read("manifest.json")
            onnx_bytes = zf.read("model.onnx")
            sig = base64.b64decode(zf.read("manifest.sig"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise BundleError(f"bundle is not a readable zip: {exc}") from exc
    if not trusted:
        raise BundleError("no trusted signing key configured; refusing unsigned trust")
    for key in trusted:
        try:
            key.verify(sig, raw)
            break
        except InvalidSignature:
            continue
    else:
        raise BundleError("signature does not verify with any trusted key")
    manifest = Manifest.from_json(raw)
    if hashlib.sha256(onnx_bytes).hexdigest() != manifest.onnx_sha256:
        raise BundleError("model.onnx does not match the checksum in its signed manifest")
    return manifest, onnx_bytes
