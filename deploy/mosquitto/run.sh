#!/bin/sh
# The broker's command in compose: Mosquitto with the password and ACL files that
# gridwatch writes into the volume mosquitto-auth (init, the API when it registers a
# device, `gridwatch broker credentials ...`), reloaded whenever gridwatch replaces them.
#
# gridwatch's containers write the files as their own user (10001, mode 0640); the
# broker reads them as its own (mosquitto). So this script, root in this container,
# copies them to /mosquitto/run/ for the broker's account and sends the broker SIGHUP:
# Mosquitto re-reads both and disconnects at once any client whose account is gone.
# It polls every 2 s, so a change applies within about 2 s, and no container has to
# signal another (no shared PID namespace, no Docker socket).
set -eu
src=${GW_BROKER_AUTH_SOURCE:-/mosquitto/auth}
dst=${GW_BROKER_AUTH_LIVE:-/mosquitto/run}
conf=${GW_BROKER_CONF:-/mosquitto/config/mosquitto.conf}
mkdir -p "$dst"

install_files() {
    for f in passwords acl; do
        cp "$src/$f" "$dst/.$f"
        chown mosquitto:mosquitto "$dst/.$f"
        chmod 600 "$dst/.$f"
        mv "$dst/.$f" "$dst/$f"
    done
}

# gridwatch replaces a file by renaming a new one over it: a new inode.
stamp() { stat -c '%i %Y' "$src/passwords" "$src/acl" 2>/dev/null || true; }

until [ -f "$src/passwords" ] && [ -f "$src/acl" ]; do
    echo "waiting for gridwatch init to write $src/passwords and $src/acl"
    sleep 2
done
last=$(stamp)
install_files
mosquitto -c "$conf" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null || true' TERM INT
while kill -0 "$broker" 2>/dev/null; do
    sleep 2 &
    wait $! || true
    now=$(stamp)
    if [ "$now" != "$last" ]; then
        last=$now
        install_files
        kill -HUP "$broker"
        echo "gridwatch changed the broker's accounts: reloaded"
    fi
done
wait "$broker"
