"""``smaint drift``: check recent features against each champion's reference, list events.

Settings (the drift and training sections, the database) come from ``SMAINT_CLOUD_*``
variables; flags override them. mlflow loads only when a check runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

import psycopg
from pydantic import ValidationError

from cloud.exceptions import CloudError
from cloud.settings import load_settings
from shared.config import UnknownSettingError
from shared.times import parse_utc

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smaint drift",
        description="Compare each device's recent feature distributions with its model's "
                    "training reference (PSI per feature); record drift events and queue "
                    "retraining through the job table.")
    sub = p.add_subparsers(dest="command", required=True, metavar="command")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dsn", help="PostgreSQL connection string (SMAINT_CLOUD_DB__DSN)")
    check = sub.add_parser("check", parents=[common], help="run one drift check now")
    check.add_argument("--until", type=parse_utc, help="end of the recent window (default now)")
    check.add_argument("--profile", action="append", dest="profiles", metavar="PROFILE",
                       help="check only this sensor profile (repeatable)")
    check.add_argument("--tracking-uri", help="MLflow tracking URI "
                                              "(SMAINT_CLOUD_TRAINING__TRACKING_URI)")
    check.add_argument("--no-retrain", action="store_true",
                       help="record drift events but queue no retraining")
    events = sub.add_parser("events", parents=[common], help="list recorded drift events")
    events.add_argument("--limit", type=int, default=20, help="newest this many")
    return p


def main(argv: list[str]) -> int:
    """Run one ``smaint drift`` subcommand; returns the process exit code."""
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if args.dsn is not None:
        overrides["db"] = {"dsn": args.dsn}
    if getattr(args, "tracking_uri", None):
        overrides["training"] = {"tracking_uri": args.tracking_uri}
    try:
        settings = load_settings(**overrides)
    except (ValidationError, UnknownSettingError) as exc:
        print(f"smaint drift: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from cloud.drift.check import check_drift, list_events  # noqa: PLC0415

    try:
        with psycopg.connect(settings.db.dsn, connect_timeout=10, autocommit=True) as conn:
            if args.command == "events":
                for e in list_events(conn, limit=args.limit):
                    print(e.model_dump_json())
                return 0
            report = check_drift(conn, settings.training, settings.drift, until=args.until,
                                 profiles=args.profiles,
                                 retrain=False if args.no_retrain else None)
    except (CloudError, ValueError) as exc:
        print(f"smaint drift: {exc}", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"smaint drift: database unavailable: {exc}", file=sys.stderr)
        return 1
    print(report.model_dump_json(indent=2))
    return 0
