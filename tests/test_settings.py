"""Settings in sections: defaults run the demo, and a mistyped name is refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.settings import load_settings as load_cloud_settings
from edge.settings import load_settings
from shared.config import UnknownSettingError


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("SMAINT_GATEWAY_", "SMAINT_CLOUD_")):
            monkeypatch.delenv(name)


def test_zero_config_defaults_are_the_demo() -> None:
    gw = load_settings()
    assert (gw.gateway_id, gw.mqtt.host, gw.mqtt.port) == ("gw-demo", "127.0.0.1", 1883)
    assert (gw.storage.path, gw.http.port, gw.sync.cloud_url) == (
        "var/gateway.db", 8080, "http://127.0.0.1:8000")
    cloud = load_cloud_settings()
    assert (cloud.api.port, cloud.db.dsn) == (8000, "host=127.0.0.1 port=5432 user=postgres "
                                              "dbname=smaint")


def test_nested_variables_and_file_sections_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text('[mqtt]\nhost = "broker.plant"\nport = 8883\n[sync]\ninterval_s = 5\n')
    monkeypatch.setenv("SMAINT_GATEWAY_MQTT__PORT", "1884")  # the environment beats the file
    s = load_settings(conf, sync={"token": "t"})
    assert (s.mqtt.host, s.mqtt.port, s.sync.interval_s, s.sync.token) == (
        "broker.plant", 1884, 5.0, "t")
    monkeypatch.setenv("SMAINT_CLOUD_DB__POOL_MAX", "3")
    assert load_cloud_settings().db.pool_max == 3


def test_a_mistyped_gateway_variable_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMAINT_GATEWAY_SYNC__INTERVL_S", "3")
    with pytest.raises(UnknownSettingError) as err:
        load_settings()
    text = str(err.value)
    assert "unknown setting SMAINT_GATEWAY_SYNC__INTERVL_S" in text
    assert "did you mean SMAINT_GATEWAY_SYNC__INTERVAL_S" in text
    assert "SMAINT_GATEWAY_SYNC__BATCH_MAX" in text  # the valid names of that section


def test_an_old_flat_variable_points_to_its_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMAINT_CLOUD_DB_DSN", "host=db")
    with pytest.raises(UnknownSettingError, match="did you mean SMAINT_CLOUD_DB__DSN"):
        load_cloud_settings()


def test_an_unknown_file_key_is_refused_with_its_section(tmp_path: Path) -> None:
    conf = tmp_path / "gateway.toml"
    conf.write_text('gateway_id = "gw-1"\n[mqtt]\nhots = "broker"\n')
    with pytest.raises(UnknownSettingError) as err:
        load_settings(conf)
    text = str(err.value)
    assert f"unknown setting mqtt.hots in {conf}" in text
    assert "did you mean mqtt.host" in text
    assert "mqtt.port" in text
    assert "mqtt.keepalive_s" in text


def test_the_gateway_cli_exits_2_naming_the_typo(tmp_path: Path) -> None:
    env = {"SMAINT_GATEWAY_STORAGE__PAHT": str(tmp_path / "gw.db"), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "edge", "status"],
                         env={**env, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
                         capture_output=True, text=True, check=False, timeout=120)
    assert res.returncode == 2
    assert "SMAINT_GATEWAY_STORAGE__PAHT" in res.stderr
    assert "did you mean SMAINT_GATEWAY_STORAGE__PATH" in res.stderr
    assert not (tmp_path / "gw.db").exists()
