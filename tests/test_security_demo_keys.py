"""Issue 13, demo model keys: the public keys a gateway trusts never sit with the bundles
they verify (the gateway refuses such settings; the demo keeps them in a directory of their
own, apart from its signing key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from devstack.demo import Demo
from edge.settings import GatewaySettings


def test_security_gateway_refuses_trusted_keys_inside_its_models_directory(
        tmp_path: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(ValidationError, match="inside the models directory"):
        GatewaySettings(storage={"path": str(tmp_path / "gw.db")},
                        scoring={"models_dir": str(models),
                                 "trusted_keys_file": str(models / "trusted_keys.txt")})
    # The default models directory (beside the database) counts too.
    with pytest.raises(ValidationError, match="inside the models directory"):
        GatewaySettings(storage={"path": str(tmp_path / "gw.db")},
                        scoring={"trusted_keys_file": str(tmp_path / "models" / "keys.txt")})
    ok = GatewaySettings(storage={"path": str(tmp_path / "gw.db")},
                         scoring={"models_dir": str(models),
                                  "trusted_keys_file": str(tmp_path / "trust" / "keys.txt")})
    assert ok.scoring.trusted_keys_file.endswith("keys.txt")


def test_security_demo_keeps_trusted_keys_apart_from_bundles_and_signing_key(
        tmp_path: Path) -> None:
    demo = Demo(tmp_path, devices=1, rate_hz=1.0)
    try:
        keys_dir = demo.trusted_keys.parent
        assert not demo.trusted_keys.is_relative_to(demo.models_dir)
        assert keys_dir not in {demo.models_dir, tmp_path / "bundles", tmp_path}
        assert not (keys_dir / "signing.key").exists()
        # The gateway the demo starts accepts these paths (its settings would refuse others).
        GatewaySettings(storage={"path": str(tmp_path / "gateway.db")},
                        scoring={"models_dir": str(demo.models_dir),
                                 "trusted_keys_file": str(demo.trusted_keys)})
    finally:
        demo.http.close()
