"""``smaint panel``: the gateway panel's password, for provisioning and for a forgotten one."""

from __future__ import annotations

import argparse
import getpass
import sys

from edge.private_file import write_private
from edge.settings import load_settings
from ui.panel.auth import MIN_PASSWORD, hash_password


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("new panel password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def main(argv: list[str]) -> int:
    """Entry point of ``smaint panel ...``; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="smaint panel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
            ("hash-password", "print a hash for SMAINT_GATEWAY_PANEL__PASSWORD_HASH"),
            ("set-password", "store a new password for the gateway configured here "
                             "(SMAINT_GATEWAY_* / --config); takes effect at once")):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument("--stdin", action="store_true",
                         help="read the password from the first line of standard input")
        if name == "set-password":
            cmd.add_argument("--config", help="the gateway's TOML settings file")
    args = parser.parse_args(argv)
    try:
        password = _read_password(args.stdin)
    except ValueError as exc:
        print(f"smaint panel: {exc}", file=sys.stderr)
        return 2
    if len(password) < MIN_PASSWORD:
        print(f"smaint panel: choose a password of at least {MIN_PASSWORD} characters",
              file=sys.stderr)
        return 2
    encoded = hash_password(password)
    if args.command == "hash-password":
        print(encoded)
        return 0
    settings = load_settings(args.config)
    if settings.panel.password_hash:
        print("smaint panel: this gateway's password is provisioned "
              "(SMAINT_GATEWAY_PANEL__PASSWORD_HASH); change it there", file=sys.stderr)
        return 2
    path = settings.panel_password_path
    write_private(path, encoded)
    path.with_name(path.name + ".setup-code").unlink(missing_ok=True)
    print(f"panel password stored in {path}")
    return 0
