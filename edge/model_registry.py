"""The gateway's model registry: one signed bundle per sensor profile, in a directory.

``<models_dir>/<profile>.smb`` is the model for ``profile``. Bundles are verified against the
trusted Ed25519 keys before onnxruntime sees a byte of them; a bundle that is corrupt, unsigned,
signed by an unknown key, for another profile or computing features this gateway cannot is
refused with a logged reason and the profile keeps its current scorer (the last good model, or
the statistical fallback). The directory is polled by file mtime and size, so a new or replaced
bundle (copied in by hand today, by OTA later) takes over without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.onnx_model import OnnxModel
from shared.bundle import BundleError, parse_public_key, read_bundle
from shared.sensors import PROFILES

log = logging.getLogger(__name__)

BUNDLE_SUFFIX = ".smb"


def load_trusted_keys(keys: list[str], key_file: str = "") -> list[Ed25519PublicKey]:
    """Parse base64 public keys from settings and from a file (one per line, # comments)."""
    texts = list(keys)
    if key_file:
        try:
            lines = Path(key_file).read_text().splitlines()
        except OSError as exc:
            # A missing key file must not stop ingest: models are refused, stat scoring goes on.
            log.error("trusted model key file %s unreadable: %s; no key from it", key_file, exc)
            lines = []
        texts += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    trusted: list[Ed25519PublicKey] = []
    for text in texts:
        try:
            trusted.append(parse_public_key(text))
        except BundleError as exc:
            log.error("ignoring a trusted model key that does not parse: %s", exc)
    return trusted


def check_compatible(model: OnnxModel, profile_name: str) -> None:
    """BundleError unless the model is for ``profile_name`` and uses only its metrics."""
    m = model.manifest
    if m.profile != profile_name or m.spec.profile != profile_name:
        raise BundleError(f"bundle for profile {profile_name!r} holds a model for "
                          f"{m.profile!r} (feature spec {m.spec.profile!r})")
    prof = PROFILES.get(profile_name)
    if prof is None:
        raise BundleError(f"no sensor profile {profile_name!r} on this gateway")
    unknown = [x for x in m.spec.metrics if x not in prof.metric_names]
    if unknown or not m.spec.metrics:
        # A window over a metric the devices never send would never fill: nothing would score.
        raise BundleError(f"model {m.version} wants metrics {unknown or '(none)'} that profile "
                          f"{profile_name!r} does not report")


@dataclass(frozen=True, slots=True)
class _Seen:
    # The inode too: a bundle renamed into place is a new file even if size and a coarse
    # mtime happen to match the old one.
    inode: int
    mtime_ns: int
    size: int


class ModelRegistry:
    """Loaded models by profile; :meth:`refresh` picks up added, replaced and removed bundles."""

    def __init__(self, models_dir: Path, trusted: list[Ed25519PublicKey]) -> None:
        self.models_dir = models_dir
        self.trusted = trusted
        self.models: dict[str, OnnxModel] = {}
        # The last refusal per profile, for /api/status: an operator must see why a model
        # he copied in is not scoring.
        self.refused: dict[str, str] = {}
        self._seen: dict[str, _Seen] = {}

    def get(self, profile_name: str) -> OnnxModel | None:
        """The model scoring ``profile_name`` now, or None (statistical fallback)."""
        return self.models.get(profile_name)

    def versions(self) -> dict[str, str]:
        """profile -> loaded model version."""
        return {p: m.version for p, m in sorted(self.models.items())}

    def _bundle_files(self) -> dict[str, Path]:
        try:
            entries = list(os.scandir(self.models_dir))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.error("model directory %s unreadable: %s", self.models_dir, exc)
            return {}
        return {Path(e.name).stem: Path(e.path) for e in entries
                if e.name.endswith(BUNDLE_SUFFIX) and e.is_file()}

    def refresh(self) -> list[str]:
        """Load new or changed bundles, drop removed ones; returns the profiles that changed.

        Safe to run in a worker thread: each profile's model is swapped by one dict store,
        so the scorer sees either the old model or the new one, never a half-loaded one.
        """
        changed: list[str] = []
        files = self._bundle_files()
        for profile_name in [p for p in self._seen if p not in files]:
            del self._seen[profile_name]
            self.refused.pop(profile_name, None)
            if self.models.pop(profile_name, None) is not None:
                log.warning("model bundle for profile=%s removed; statistical scoring resumes",
                            profile_name)
                changed.append(profile_name)
        for profile_name, path in sorted(files.items()):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # removed between the listing and now: the next poll sees it gone
            seen = _Seen(st.st_ino, st.st_mtime_ns, st.st_size)
            if self._seen.get(profile_name) == seen:
                continue
            self._seen[profile_name] = seen
            if self._load(profile_name, path):
                changed.append(profile_name)
        return changed

    def _load(self, profile_name: str, path: Path) -> bool:
        current = self.models.get(profile_name)
        keeps = f"model {current.version} keeps scoring" if current else \
            "statistical scoring goes on"
        try:
            data = path.read_bytes()
            manifest, onnx_bytes = read_bundle(data, self.trusted)
            model = OnnxModel(manifest, onnx_bytes)
            check_compatible(model, profile_name)
        except (BundleError, OSError) as exc:
            self.refused[profile_name] = str(exc)
            log.error("model bundle %s refused for profile=%s: %s; %s", path, profile_name,
                      exc, keeps)
            return False
        self.models[profile_name] = model
        self.refused.pop(profile_name, None)
        log.info("model %s loaded for profile=%s from %s (threshold %.3f, warm-up %d readings)",
                 model.version, profile_name, path, model.threshold, manifest.spec.warmup)
        return True

    async def watch(self, stop: asyncio.Event, interval_s: float) -> None:
        """Poll the directory every ``interval_s`` until ``stop``; loading runs off the loop."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            if stop.is_set():
                return
            # Verifying and building an onnxruntime session takes tens of ms: not on the
            # event loop, where it would hold up ingest and acks.
            await asyncio.to_thread(self.refresh)
