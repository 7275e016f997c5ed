"""``smaint cloud``: serve the API, migrate the schema, manage gateway tokens and users."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from pydantic import ValidationError

from cloud.exceptions import CloudError
from cloud.settings import CloudSettings, load_settings
from shared import logs as shared_logs
from shared.config import UnknownSettingError
from shared.times import parse_utc

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp

log = logging.getLogger(__name__)

# (the API app, the settings) -> the ASGI app to serve.
Compose = Callable[["FastAPI", CloudSettings], "ASGIApp"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s]%(context)s %(message)s"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smaint cloud",
        description="Cloud API service; settings come from SMAINT_CLOUD_* variables.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    dsn = argparse.ArgumentParser(add_help=False)
    dsn.add_argument("--dsn", help="PostgreSQL connection string (SMAINT_CLOUD_DB__DSN)")

    serve = sub.add_parser("serve", parents=[dsn], help="run the HTTP API (migrates first)")
    serve.add_argument("--host", help="listen address (SMAINT_CLOUD_API__HOST)")
    serve.add_argument("--port", type=int, help="listen port (SMAINT_CLOUD_API__PORT)")
    sub.add_parser("migrate", parents=[dsn], help="bring the database schema up to date")

    train = sub.add_parser(
        "train-initial",
        help="train and sign the first model of each sensor profile from the bundled data",
    )
    train.add_argument("--out", required=True, type=Path,
                       help="directory for <profile>.smb bundles and trusted_keys.txt")
    train.add_argument("--key", required=True, type=Path,
                       help="Ed25519 signing key file (created if missing; keep it private)")
    train.add_argument("--n-estimators", type=int, default=100, help="trees per forest")
    train.set_defaults(dsn=None)  # needs no database

    gw = sub.add_parser("gateway", help="gateway tokens").add_subparsers(
        dest="action", required=True, metavar="action"
    )
    add = gw.add_parser("add", parents=[dsn], help="register a gateway, print its new token")
    add.add_argument("gateway_id")
    revoke = gw.add_parser("revoke", parents=[dsn], help="revoke a gateway's token")
    revoke.add_argument("gateway_id")
    enrol = gw.add_parser("enrol", parents=[dsn],
                          help="print a one-time code the gateway exchanges for its token")
    enrol.add_argument("gateway_id")
    enrol.add_argument("--ttl-hours", type=float, default=24.0,
                       help="the code expires after this (default 24)")
    rotate = gw.add_parser("rotate", parents=[dsn],
                           help="ask a gateway to fetch a new token at its next upload")
    rotate.add_argument("gateway_id")

    backfill = sub.add_parser(
        "backfill", parents=[dsn], help="ask a gateway to upload a time range again")
    backfill.add_argument("gateway_id")
    backfill.add_argument("--since", required=True, type=parse_utc, help="ISO time, inclusive")
    backfill.add_argument("--until", required=True, type=parse_utc, help="ISO time, exclusive")

    bkp = sub.add_parser("backup", parents=[dsn],
                         help="back up the database, MLflow's store and the artifact index")
    bkp.add_argument("--out", required=True, type=Path, help="backup file to write (.tar)")
    rst = sub.add_parser("restore", parents=[dsn],
                         help="restore a backup, then ask every gateway to send the gap again")
    rst.add_argument("backup", type=Path, help="backup file made by `smaint cloud backup`")
    rst.add_argument("--replace", action="store_true",
                     help="drop what the database (and MLflow's store) holds first")
    rst.add_argument("--backfill-margin-hours", type=float, default=24.0,
                     help="ask gateways again from this long before the newest reading the "
                          "backup holds of them (default 24)")

    user = sub.add_parser("user", help="users and their API keys").add_subparsers(
        dest="action", required=True, metavar="action"
    )
    uadd = user.add_parser("add", parents=[dsn], help="create a user, print its first API key")
    uadd.add_argument("name")
    uadd.add_argument("--role", choices=["viewer", "operator", "admin"], default="viewer")
    uadd.add_argument("--password", action="store_true",
                      help="also set a console password (asked for, or read from stdin)")
    upass = user.add_parser("passwd", parents=[dsn],
                            help="set a user's console password (argon2id)")
    upass.add_argument("name")
    for p_ in (uadd, upass):
        p_.add_argument("--stdin", action="store_true",
                        help="read the password from stdin's first line instead of a prompt")
    ukey = user.add_parser("key", parents=[dsn], help="issue another API key, print it")
    ukey.add_argument("name")
    urevoke = user.add_parser("revoke-key", parents=[dsn], help="revoke one API key")
    urevoke.add_argument("name")
    urevoke.add_argument("key_id", type=int)
    user.add_parser("list", parents=[dsn], help="list users, roles and key ids")
    return p


def configure_logging(level: str, json_lines: bool = False) -> None:
    """Log to stderr with the request's correlation id on every line (entry points only)."""
    from cloud.api.correlation import CorrelationIdFilter  # noqa: PLC0415 - pulls in starlette

    shared_logs.configure_logging(level, json_lines=json_lines, filters=[CorrelationIdFilter()],
                                  text_format=LOG_FORMAT)


def _serve(settings: CloudSettings, compose: Compose | None) -> int:
    # Imported here so `gateway add` and `migrate` start fast and need no web stack.
    import uvicorn  # noqa: PLC0415

    from cloud.api.app import create_app  # noqa: PLC0415

    configure_logging(settings.logging.level, settings.logging.json_lines)
    app = create_app(settings)
    served = compose(app, settings) if compose is not None else app
    # log_config=None keeps our handler; our middleware writes the access log with the id.
    # proxy_headers off: uvicorn would believe X-Forwarded-For from any local peer; the app
    # reads it itself, from the proxies SMAINT_CLOUD_API__TRUSTED_PROXIES names only.
    uvicorn.run(
        served, host=settings.api.host, port=settings.api.port,
        log_config=None, access_log=False, proxy_headers=False,
    )
    return 0


def _train_initial(args: argparse.Namespace) -> int:
    # Imported here: scikit-learn and skl2onnx take seconds to import.
    from cloud.training.initial import PUBLIC_KEY_FILE, train_initial  # noqa: PLC0415

    versions = train_initial(args.out, args.key, n_estimators=args.n_estimators)
    print(json.dumps({"models": versions, "dir": str(args.out),
                      "trusted_keys_file": str(args.out / PUBLIC_KEY_FILE)}))
    return 0


def _run(args: argparse.Namespace, settings: CloudSettings, compose: Compose | None) -> int:
    from cloud.access.gateway_tokens import (  # noqa: PLC0415
        create_gateway,
        issue_enrolment,
        request_rotation,
        revoke_gateway,
    )
    from cloud.db.migrate import migrate  # noqa: PLC0415

    if args.command == "serve":
        return _serve(settings, compose)
    if args.command == "train-initial":
        return _train_initial(args)
    if args.command == "migrate":
        applied = migrate(settings.db.dsn)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
        return 0
    if args.command == "user":
        return _user(args, settings)
    if args.command in {"backup", "restore"}:
        return _backup_or_restore(args, settings)
    with psycopg.connect(settings.db.dsn, connect_timeout=10) as conn:
        if args.command == "backfill":
            from cloud.ingest.batch import request_backfill  # noqa: PLC0415

            req = request_backfill(conn, args.gateway_id, args.since, args.until)
            print(f"backfill request {req} queued for gateway {args.gateway_id}")
        elif args.action == "add":
            token = create_gateway(conn, args.gateway_id)
            print(f"gateway {args.gateway_id} registered; its token (shown once):", file=sys.stderr)
            print(token)  # alone on stdout's last line, for scripts
        elif args.action == "enrol":
            code = issue_enrolment(conn, args.gateway_id, args.ttl_hours * 3600, actor="cli")
            print(f"enrolment code for gateway {args.gateway_id} (once, within "
                  f"{args.ttl_hours:g} h; SMAINT_GATEWAY_SYNC__ENROL_CODE):", file=sys.stderr)
            print(code)
        elif args.action == "rotate":
            request_rotation(conn, args.gateway_id, actor="cli")
            print(f"gateway {args.gateway_id} fetches a new token at its next upload")
        else:
            revoke_gateway(conn, args.gateway_id)
            print(f"gateway {args.gateway_id} revoked")
    return 0


def _backup_or_restore(args: argparse.Namespace, settings: CloudSettings) -> int:
    from datetime import timedelta  # noqa: PLC0415

    from cloud.backup import (  # noqa: PLC0415
        backup_summary,
        create_backup,
        restore_backup,
        restore_summary,
    )

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.command == "backup":
        print(backup_summary(create_backup(settings, args.out, progress), args.out))
        return 0
    report = restore_backup(settings, args.backup, replace=args.replace, progress=progress,
                            backfill_margin=timedelta(hours=args.backfill_margin_hours))
    print(json.dumps(restore_summary(report)))
    if report.missing_artifacts:
        n = len(report.missing_artifacts)
        print(f"smaint cloud: restored, but the artifact store lacks {n}"
              " object(s) the backup indexed (listed in missing_artifacts): copy them back "
              "from the store's own backup", file=sys.stderr)
        return 1
    return 0


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("console password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _user(args: argparse.Namespace, settings: CloudSettings) -> int:
    from cloud.access.passwords import hash_password, set_password  # noqa: PLC0415
    from cloud.access.users import create_user, issue_key, list_users, revoke_key  # noqa: PLC0415

    password = None
    if args.action == "passwd" or (args.action == "add" and args.password):
        password = _read_password(args.stdin)
        hash_password(password)  # refuse a too-short one before anything is created
    with psycopg.connect(settings.db.dsn, connect_timeout=10) as conn:
        if args.action == "passwd":
            assert password is not None  # noqa: S101 - read above for passwd
            set_password(conn, args.name, password)
            print(f"console password of user {args.name} set")
            return 0
        if args.action in {"add", "key"}:
            issued = (
                create_user(conn, args.name, args.role) if args.action == "add"
                else issue_key(conn, args.name)
            )
            print(f"user {issued.user} ({issued.role}): API key {issued.key_id} (shown once):",
                  file=sys.stderr)
            if password is not None:
                set_password(conn, issued.user, password)
                print(f"console password of user {issued.user} set", file=sys.stderr)
            print(issued.key)  # alone on stdout's last line, for scripts
        elif args.action == "revoke-key":
            revoke_key(conn, args.name, args.key_id)
            print(f"key {args.key_id} of user {args.name} revoked")
        else:
            for u in list_users(conn):
                keys = ", ".join(
                    f"{k.key_id}:{k.prefix}…{' (revoked)' if k.revoked_at else ''}" for k in u.keys
                )
                print(f"{u.name}\t{u.role}\t{keys or '-'}")
    return 0


def main(argv: list[str], compose: Compose | None = None) -> int:
    """Run one ``smaint cloud`` subcommand; returns the process exit code.

    ``compose`` wraps the API app that ``serve`` runs: ``smaint cloud`` passes one that adds
    the web console when the ui extra is installed (the cloud never imports the console).
    """
    args = _parser().parse_args(argv)
    # Flags in the settings' shape; a flag beats the environment.
    db = {"dsn": args.dsn} if args.dsn is not None else {}
    api = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    try:
        settings = load_settings(**{k: v for k, v in (("db", db), ("api", api)) if v})
    except (ValidationError, UnknownSettingError) as exc:
        print(f"smaint cloud: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return _run(args, settings, compose)
    except (CloudError, ValueError) as exc:
        print(f"smaint cloud: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"smaint cloud: database unavailable: {exc}", file=sys.stderr)
        return 1
