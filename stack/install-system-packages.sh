#!/usr/bin/env bash
# Installs the Debian packages that gridwatch's local stack and tests need: the servers
# (mosquitto, influxd, PostgreSQL), mosquitto's command-line clients, and a Python that
# can make a venv. Idempotent; quiet and quick when everything is there.
# Usage: [PY=python3] stack/install-system-packages.sh   (as root, or with sudo)
set -euo pipefail

PY=${PY:-python3}
missing=()
have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1; }

have mosquitto || missing+=(mosquitto)
have mosquitto_passwd || missing+=(mosquitto)
have mosquitto_pub || missing+=(mosquitto-clients)
have influxd || missing+=(influxdb)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
compgen -G '/usr/lib/postgresql/*/bin/pg_isready' >/dev/null || missing+=(postgresql)
# Debian's python3 makes venvs only with python3-venv (ensurepip).
"$PY" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)

[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-system-packages: installing ${missing[*]}"

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

# The packages' maintainer scripts would start system mosquitto, influxd and PostgreSQL
# on their default ports. We only run private instances (stack/servers.py), so deny
# every service start during the install, as Debian's policy-rc.d interface allows.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# gridwatch: no service starts while installing packages\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -q --no-install-recommends "${missing[@]}"

# A service manager that ignores policy-rc.d could still have started one: say so.
# Nothing of ours uses these ports, so it does no harm beyond the memory it takes.
for port in 1883 8086 8088 5432; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "install-system-packages: note: a system service listens on 127.0.0.1:$port;" \
      "gridwatch does not use it (its servers use private ports)" >&2
  fi
done
