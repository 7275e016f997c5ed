#!/bin/sh
# The fleet's broker: mosquitto with mosquitto/production.conf, reloaded (SIGHUP: connected
# clients stay) whenever the gateway's `smaint provision` changes an account or ACL file in the
# shared broker volume. The gateway cannot signal it: each container has its own pid namespace
# (balena allows no shared one), so it sets SMAINT_GATEWAY_BROKER__RELOAD=watcher.
set -eu
DIR=/var/lib/smaint/broker
CONF=/mosquitto/config/production.conf
# The gateway writes the CA, the broker certificate and the account files at its first start.
while [ ! -s "$DIR/broker.crt" ] || [ ! -s "$DIR/gateway.passwd" ]; do
  echo "waiting for the gateway to provision $DIR"
  sleep 2
done
stamp() { cat "$DIR"/*.passwd "$DIR"/*.acl 2>/dev/null | md5sum; }
mosquitto -c "$CONF" &
broker=$!
trap 'kill -TERM "$broker"; wait "$broker"; exit 0' TERM INT
seen=$(stamp)
while kill -0 "$broker" 2>/dev/null; do
  sleep 2
  now=$(stamp)
  if [ "$now" != "$seen" ]; then
    echo "account files changed: reloading the broker"
    kill -HUP "$broker"
    seen=$now
  fi
done
wait "$broker"
