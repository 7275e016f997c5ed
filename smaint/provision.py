"""``smaint provision``: broker accounts and device provisioning files, on the gateway itself.

    smaint provision broker                  site CA, broker certificate, ACLs, gateway account
    smaint provision broker-config [--out F] the broker's listener section (production.conf)
    smaint provision device ID [--out F]     a device account + its provisioning file
    smaint provision revoke ID               remove the account; the broker disconnects it
    smaint provision list                    provisioned devices

Settings come from the gateway's (``SMAINT_GATEWAY_*``, ``--config``): ``broker.*`` says where
the broker's files are and how devices reach it (edge/settings.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from edge.broker_accounts import BrokerReloadError
from edge.broker_config import PRODUCTION_DATA_DIR, Listeners, production_config
from edge.provision import Provisioner, ProvisioningError, write_provisioning
from edge.settings import load_settings

REPO_CONF = Path(__file__).resolve().parents[1] / "mosquitto" / "mosquitto.conf"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smaint provision", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="gateway TOML settings file (else SMAINT_GATEWAY_CONFIG)")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("broker", help="make the site CA, broker certificate, ACLs, gateway account")
    cfg = sub.add_parser("broker-config", help="print the broker configuration (listeners, "
                         "accounts) after mosquitto/mosquitto.conf's shared settings")
    cfg.add_argument("--out", type=Path, help="write it to this file instead of stdout")
    cfg.add_argument("--persistence", type=Path, default=PRODUCTION_DATA_DIR,
                     help="the broker's persistence directory (default %(default)s)")
    dev = sub.add_parser("device", help="give a device an account and write its provisioning")
    dev.add_argument("device", help="device id (also its MQTT username and client id)")
    dev.add_argument("--out", type=Path,
                     help="provisioning file to write (default: <device>.json here)")
    dev.add_argument("--type", default="motor", help="sensor type (motor, mill, turbofan)")
    dev.add_argument("--wifi-ssid", default="", help="Wi-Fi network the node joins")
    dev.add_argument("--wifi-password", default="", help="its password")
    rev = sub.add_parser("revoke", help="remove a device's account and disconnect it")
    rev.add_argument("device")
    sub.add_parser("list", help="provisioned devices, revoked ones too")
    return p


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(
        timespec="seconds")


def main(argv: list[str]) -> int:
    """Entry point of ``smaint provision``; returns the process exit status."""
    args = _parser().parse_args(argv)
    settings = load_settings(args.config)
    prov = Provisioner(settings)
    try:
        if args.action == "broker":
            prov.setup_broker()
            print(f"broker files in {prov.broker_dir}; gateway account "
                  f"{prov.gateway_username!r}, password in {prov.gateway_password_path}; "
                  f"site CA {prov.site_ca().cert_path}")
        elif args.action == "broker-config":
            text = production_config(REPO_CONF.read_text(), Listeners(
                prov.broker_dir, gateway_port=settings.mqtt.port,
                device_port=settings.broker.device_port), args.persistence)
            if args.out:
                args.out.write_text(text)
            else:
                print(text, end="")
        elif args.action == "device":
            creds = prov.provision_device(args.device)
            out = args.out or Path(f"{args.device}.json")
            write_provisioning(out, creds, sensor_type=args.type, wifi_ssid=args.wifi_ssid,
                               wifi_password=args.wifi_password)
            print(f"device {args.device}: account added, provisioning written to {out} "
                  f"(mqtts://{creds.host}:{creds.port}); copy it to the node, then delete it")
        elif args.action == "revoke":
            prov.revoke(args.device)
            print(f"device {args.device}: account removed; the broker disconnected it")
        else:
            print(json.dumps([{**d, "provisioned": _when(d["provisioned_ms"]),
                               "revoked": _when(d["revoked_ms"])} for d in prov.devices()],
                             indent=2))
    except (ProvisioningError, BrokerReloadError, ValueError, OSError) as exc:
        print(f"smaint provision: {exc}", file=sys.stderr)
        return 1
    return 0
