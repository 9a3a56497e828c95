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
#
# TLS: when the mounted directory /mosquitto/tls holds server.crt and server.key (a
# real certificate, or `gridwatch broker dev-ca`'s), the broker also listens on 8883
# with them, under the same accounts and ACL. They are copied for the broker's user
# like the accounts (the operator's key need not be readable by it), and a renewed
# certificate is reloaded the same way. Whether the listener exists is decided at
# start: after adding or removing the files, restart the broker.
#
# The GW_BROKER_* overrides are for tests/test_compose.py's rehearsal, which runs this
# script against a local mosquitto.
set -eu
src=${GW_BROKER_AUTH_SOURCE:-/mosquitto/auth}
dst=${GW_BROKER_AUTH_LIVE:-/mosquitto/run}
conf=${GW_BROKER_CONF:-/mosquitto/config/mosquitto.conf}
tls_src=${GW_BROKER_TLS_SOURCE:-/mosquitto/tls}
tls_listener=${GW_BROKER_TLS_LISTENER:-8883}
# mosquitto.conf's include_dir: the TLS listener's options, when it is on.
conf_d=$dst/conf.d
mkdir -p "$dst" "$conf_d"

tls=no
if [ -f "$tls_src/server.crt" ] && [ -f "$tls_src/server.key" ]; then
    tls=yes
fi

install_files() {
    for f in passwords acl; do
        cp "$src/$f" "$dst/.$f"
        chown mosquitto:mosquitto "$dst/.$f"
        chmod 600 "$dst/.$f"
        mv "$dst/.$f" "$dst/$f"
    done
    if [ "$tls" = yes ]; then
        mkdir -p "$dst/tls"
        for f in server.crt server.key; do
            cp "$tls_src/$f" "$dst/tls/.$f"
            chown mosquitto:mosquitto "$dst/tls/.$f"
            chmod 600 "$dst/tls/.$f"
            mv "$dst/tls/.$f" "$dst/tls/$f"
        done
    fi
}

# gridwatch replaces a file by renaming a new one over it: a new inode. A certificate
# may be rewritten in place: its modification time and size change.
stamp() {
    stat -c '%i %Y %s' "$src/passwords" "$src/acl" 2>/dev/null || true
    if [ "$tls" = yes ]; then
        stat -c '%i %Y %s' "$tls_src/server.crt" "$tls_src/server.key" 2>/dev/null || true
    fi
}

until [ -f "$src/passwords" ] && [ -f "$src/acl" ]; do
    echo "waiting for gridwatch init to write $src/passwords and $src/acl"
    sleep 2
done
last=$(stamp)
install_files
# The container's file system outlives a restart: write or remove the snippet each time.
if [ "$tls" = yes ]; then
    printf 'listener %s\ncertfile %s\nkeyfile %s\n' \
        "$tls_listener" "$dst/tls/server.crt" "$dst/tls/server.key" >"$conf_d/tls.conf"
    echo "TLS listener on $tls_listener with $tls_src/server.crt"
else
    rm -f "$conf_d/tls.conf"
    echo "no $tls_src/server.crt and server.key: no TLS listener"
fi
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
        echo "accounts or certificate changed: reloaded"
    fi
done
wait "$broker"
