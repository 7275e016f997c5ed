"""``smaint cloud``: serve the API, migrate the schema, issue and revoke gateway tokens."""

from __future__ import annotations

import argparse
import logging
import sys

import psycopg
from pydantic import ValidationError

from cloud.exceptions import CloudError
from cloud.settings import CloudSettings, load_settings

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smaint cloud",
        description="Cloud API service; settings come from SMAINT_CLOUD_* variables.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    dsn = argparse.ArgumentParser(add_help=False)
    dsn.add_argument("--dsn", help="PostgreSQL connection string (SMAINT_CLOUD_DB_DSN)")

    serve = sub.add_parser("serve", parents=[dsn], help="run the HTTP API (migrates first)")
    serve.add_argument("--host", help="listen address (SMAINT_CLOUD_HOST)")
    serve.add_argument("--port", type=int, help="listen port (SMAINT_CLOUD_PORT)")
    sub.add_parser("migrate", parents=[dsn], help="bring the database schema up to date")

    gw = sub.add_parser("gateway", help="gateway tokens").add_subparsers(
        dest="action", required=True, metavar="action"
    )
    add = gw.add_parser("add", parents=[dsn], help="register a gateway, print its new token")
    add.add_argument("gateway_id")
    revoke = gw.add_parser("revoke", parents=[dsn], help="revoke a gateway's token")
    revoke.add_argument("gateway_id")
    return p


def configure_logging(level: str) -> None:
    """Log to stderr with the request's correlation id on every line (entry points only)."""
    from cloud.api.correlation import CorrelationIdFilter  # noqa: PLC0415 - pulls in starlette

    handler = logging.StreamHandler()
    handler.addFilter(CorrelationIdFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _serve(settings: CloudSettings) -> int:
    # Imported here so `gateway add` and `migrate` start fast and need no web stack.
    import uvicorn  # noqa: PLC0415

    from cloud.api.app import create_app  # noqa: PLC0415

    configure_logging(settings.log_level)
    # log_config=None keeps our handler; our middleware writes the access log with the id.
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port,
        log_config=None, access_log=False,
    )
    return 0


def _run(args: argparse.Namespace, settings: CloudSettings) -> int:
    from cloud.auth import create_gateway, revoke_gateway  # noqa: PLC0415
    from cloud.db.migrate import migrate  # noqa: PLC0415

    if args.command == "serve":
        return _serve(settings)
    if args.command == "migrate":
        applied = migrate(settings.db_dsn)
        print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none needed'}")
        return 0
    with psycopg.connect(settings.db_dsn, connect_timeout=10) as conn:
        if args.action == "add":
            token = create_gateway(conn, args.gateway_id)
            print(f"gateway {args.gateway_id} registered; its token (shown once):", file=sys.stderr)
            print(token)  # alone on stdout's last line, for scripts
        else:
            revoke_gateway(conn, args.gateway_id)
            print(f"gateway {args.gateway_id} revoked")
    return 0


def main(argv: list[str]) -> int:
    """Run one ``smaint cloud`` subcommand; returns the process exit code."""
    args = _parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("db_dsn", args.dsn), ("host", getattr(args, "host", None)),
            ("port", getattr(args, "port", None)),
        )
        if value is not None
    }
    try:
        settings = load_settings(**overrides)
    except ValidationError as exc:
        print(f"smaint cloud: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command != "serve":
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return _run(args, settings)
    except (CloudError, ValueError) as exc:
        print(f"smaint cloud: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"smaint cloud: database unavailable: {exc}", file=sys.stderr)
        return 1
