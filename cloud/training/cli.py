"""``smaint train``: retrain one model per sensor profile from the cloud database.

Only argparse is imported up front: ``--help`` stays instant, the training stack (mlflow,
scikit-learn, onnxruntime) loads when a training actually starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud.training.config import TrainingConfig

log = logging.getLogger(__name__)

DSN_ENV = "SMAINT_CLOUD_DB__DSN"


def _utc(text: str) -> datetime:
    """An ISO time; a naive one is taken as UTC."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smaint train",
        description="Train one Isolation Forest per sensor profile on readings in the cloud "
                    "database, track it in MLflow, register it, and promote it to champion "
                    "only if it beats the current one on the same held-out data.")
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV),
                   help=f"PostgreSQL connection string (default ${DSN_ENV})")
    p.add_argument("--since", type=_utc, help="window start, ISO time (default: --days before "
                                              "--until)")
    p.add_argument("--until", type=_utc, help="window end, ISO time, exclusive (default: now)")
    p.add_argument("--days", type=float, default=7.0, help="window length without --since")
    p.add_argument("--profile", action="append", dest="profiles", metavar="PROFILE",
                   help="train only this sensor profile (repeatable; default: all with data)")
    p.add_argument("--out", type=Path, help="directory for signed bundles: every one as "
                                            "<version>.smb, the champion as <profile>.smb")
    p.add_argument("--key", required=True, type=Path,
                   help="Ed25519 signing key file (see `smaint cloud train-initial`)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite in --data-dir)")
    p.add_argument("--data-dir", type=Path, default=Path("data/training"),
                   help="MLflow's local store and artifacts (default %(default)s)")
    p.add_argument("--experiment", default="smaint-models", help="MLflow experiment name")
    p.add_argument("--n-estimators", type=int, default=100, help="trees per forest")
    p.add_argument("--quantile", type=float, default=1.0,
                   help="threshold calibration quantile of the training scores")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="last share of the window held out for evaluation")
    p.add_argument("--actor", default="cli", help="name recorded in the audit log")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    return p


class _UsageError(Exception):
    """Arguments that cannot work; the message says what to pass instead."""


def _prepare(args: argparse.Namespace) -> tuple[TrainingConfig, Ed25519PrivateKey]:
    """The config and signing key the arguments describe; _UsageError when they cannot."""
    from datetime import timedelta  # noqa: PLC0415

    from pydantic import ValidationError  # noqa: PLC0415

    from cloud.training.config import TrainingConfig  # noqa: PLC0415
    from shared.bundle import load_private_key  # noqa: PLC0415

    if not args.dsn:
        raise _UsageError(f"no database; pass --dsn or set {DSN_ENV}")
    if not args.key.exists():
        raise _UsageError(f"signing key {args.key} not found; create one with "
                          f"`smaint cloud train-initial --key {args.key} ...`")
    try:
        config = TrainingConfig(
            data_dir=args.data_dir, tracking_uri=args.tracking_uri,
            experiment=args.experiment, window=timedelta(days=args.days),
            n_estimators=args.n_estimators, quantile=args.quantile,
            holdout_fraction=args.holdout)
        key = load_private_key(args.key)
    except ValidationError as exc:
        raise _UsageError(str(exc)) from exc
    except ValueError as exc:
        raise _UsageError(f"{args.key} is not a signing key: {exc}") from exc
    return config, key


def main(argv: list[str] | None = None) -> int:
    """Run ``smaint train``; exit 0 when at least one profile was trained."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    try:
        config, key = _prepare(args)
    except _UsageError as exc:
        print(f"smaint train: {exc}", file=sys.stderr)
        return 2
    # The training stack loads only once the arguments are known to be usable.
    import psycopg  # noqa: PLC0415

    from cloud.exceptions import CloudError  # noqa: PLC0415
    from cloud.training.pipeline import result_json, train_models  # noqa: PLC0415

    try:
        with psycopg.connect(args.dsn, application_name="smaint-train") as conn:
            result = train_models(conn, config, key, since=args.since, until=args.until,
                                  profiles=args.profiles, out_dir=args.out, actor=args.actor,
                                  progress=lambda line: print(line, flush=True))
    except psycopg.OperationalError as exc:
        print(f"smaint train: cannot reach the database: {exc}", file=sys.stderr)
        return 1
    except CloudError as exc:
        print(f"smaint train: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(result_json(result))
    print(f"MLflow: {result.tracking_uri} (experiment {result.experiment!r}); "
          f"{len(result.trained)} trained, {len(result.skipped)} skipped")
    return 0 if result.trained else 1


if __name__ == "__main__":
    sys.exit(main())
