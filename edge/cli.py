"""``smaint gateway`` / ``python -m edge``: run the gateway service, inspect or fix its database."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from edge.exceptions import GatewayError
from edge.outbox import Outbox
from edge.settings import GatewaySettings, load_settings
from edge.store import Store
from shared.logs import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smaint gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway (settings from SMAINT_GATEWAY_* too)")
    run.add_argument("--gateway-id", help="gateway id, also its MQTT client id")
    run.add_argument("--mqtt-host", help="MQTT broker host")
    run.add_argument("--mqtt-port", type=int, help="MQTT broker port")
    run.add_argument("--db", dest="db_path", help="SQLite database path")
    run.add_argument("--cloud-url", help="cloud API base URL")
    run.add_argument("--token", dest="cloud_token",
                     help="cloud bearer token (prefer SMAINT_GATEWAY_SYNC__TOKEN: argv is public)")
    run.add_argument("--http-host", help="status/metrics server host")
    run.add_argument("--http-port", type=int, help="status/metrics server port")
    run.add_argument("--log-level", type=str.upper,
                     help="DEBUG, INFO, WARNING or ERROR (SMAINT_GATEWAY_LOGGING__LEVEL)")
    run.add_argument("--log-json", action="store_const", const=True,
                     help="log JSON lines instead of text (SMAINT_GATEWAY_LOGGING__JSON_LINES)")
    run.add_argument("--config", help="TOML settings file (also SMAINT_GATEWAY_CONFIG); "
                     "flags override the environment, which overrides the file")
    for name, help_ in (("status", "print the database's counters as JSON"),
                        ("requeue-rejected", "send readings of rejected batches again")):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument("--db", dest="db_path", help="SQLite database path")
    backup = sub.add_parser("backup", help="copy the database while the gateway runs")
    backup.add_argument("--db", dest="db_path", help="SQLite database path")
    backup.add_argument("--out", required=True, help="backup file to write")
    restore = sub.add_parser("restore", help="put a backup in place (stop the gateway first)")
    restore.add_argument("backup", help="backup file made by `smaint gateway backup`")
    restore.add_argument("--db", dest="db_path", help="SQLite database path")
    restore.add_argument("--replace", action="store_true",
                         help="overwrite an existing database")
    return parser


# Command-line flag (argparse dest) -> (settings section, name); a flag beats the environment.
_FLAGS = {
    "mqtt_host": ("mqtt", "host"), "mqtt_port": ("mqtt", "port"),
    "db_path": ("storage", "path"), "cloud_url": ("sync", "cloud_url"),
    "cloud_token": ("sync", "token"), "http_host": ("http", "host"),
    "http_port": ("http", "port"), "log_level": ("logging", "level"),
    "log_json": ("logging", "json_lines"),
}


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags given, in the settings' shape (``{"mqtt": {"port": 1884}}``)."""
    given: dict[str, object] = {}
    sections: dict[str, dict[str, object]] = {}
    if getattr(args, "gateway_id", None) is not None:
        given["gateway_id"] = args.gateway_id
    for dest, (section, name) in _FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            sections.setdefault(section, {})[name] = value
    return {**given, **sections}


Runner = Callable[[GatewaySettings], Coroutine[Any, Any, None]]


def main(argv: list[str], runner: Runner | None = None) -> int:
    """Entry point of ``smaint gateway ...``; returns the process exit status.

    ``runner`` runs the service for ``run`` (default: edge.service.run_gateway); ``smaint
    gateway`` passes one that serves the web panel too when the ui extra is installed.
    """
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None), **_overrides(args))
    except ValueError as exc:  # ValidationError and ConfigFileError are ValueErrors
        print(f"smaint gateway: invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "run":
        configure_logging(settings.logging.level, json_lines=settings.logging.json_lines,
                          fields={"gateway": settings.gateway_id})
        if runner is None:
            from edge.service import run_gateway  # noqa: PLC0415  (keeps `status` light)

            runner = run_gateway
        try:
            asyncio.run(runner(settings))
        except GatewayError as exc:
            logging.getLogger("edge").error("%s", exc)
            return 1
        return 0
    if args.command in {"backup", "restore"}:
        return _backup_or_restore(args, settings)
    store = Store.open(settings.storage.path, synchronous=settings.storage.synchronous)
    try:
        if args.command == "status":
            counters = dict(store.counters)
            counters["sync_backlog"] = Outbox(store).backlog()
            print(json.dumps(counters, indent=2, sort_keys=True))
        else:
            print(f"requeued {Outbox(store).requeue_rejected()} readings")
    finally:
        store.close()
    return 0


def _backup_or_restore(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from edge.backup import BackupError, backup_database, restore_database  # noqa: PLC0415

    db = Path(settings.storage.path)
    try:
        if args.command == "backup":
            def progress(done: int, total: int) -> None:
                print(f"\rcopied {done}/{total} pages", end="", file=sys.stderr, flush=True)

            size = backup_database(db, Path(args.out), progress)
            print(file=sys.stderr)
            print(json.dumps({"file": args.out, "bytes": size, "database": str(db)}))
        else:
            restore_database(Path(args.backup), db, replace=args.replace)
            print(f"restored {args.backup} to {db}")
    except BackupError as exc:
        print(f"smaint gateway: {exc}", file=sys.stderr)
        return 1
    return 0
