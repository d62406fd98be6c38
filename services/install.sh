#!/usr/bin/env bash
# Install or upgrade trade-stream as a systemd service, from this checkout. Run as root:
#
#   ./services/install.sh                 # venv, command, unit, /etc/trade-stream
#   ./services/install.sh --apache        # the same, plus the Apache conf for http://HOST/trade-stream/
#   ./services/install.sh --port 9000     # the daemon's port (default: the env file's, else 8765)
#
# Every step is safe to repeat: a second run upgrades the package in place, reinstalls the unit files and the
# Apache conf from the checkout, restarts the service if it is running, and never rewrites the operator's files
# in /etc/trade-stream (the env file, users.toml, ...); it only sets their owner and mode, and the port line of
# the env file, so the daemon and Apache always agree on the port. REALTIME_TRADES_SETUP.md (sections 5 and 6)
# shows the same steps to do by hand.
#
# pip runs with the caller's environment: PIP_INDEX_URL, PIP_NO_INDEX, PIP_FIND_LINKS and the like apply as usual.
#
# Who may read what: the service runs as a dynamic user (DynamicUser=yes) in the static group trade-stream.
# /etc/trade-stream is root:trade-stream 0750 and its files 0640: root edits them, the service reads them (the
# users file is re-read on change, so it must be the live file, not a copy), nobody else can list or read them.
set -euo pipefail

prog=install.sh
usage="usage: $prog [--port N] [--apache]"
repo="$(cd -P "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
prefix=/opt/trade-stream
etc=/etc/trade-stream
env_file=$etc/trade-stream.env
group=trade-stream
unit=market_sentinel_trade_stream.service
default_port=8765

fail() { echo "$prog: $*" >&2; exit 2; }

port=""
apache=0
while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || fail "--port needs a value: --port 8765"; port="$2"; shift 2 ;;
        --port=*) port="${1#--port=}"; shift ;;
        --apache) apache=1; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) fail "unknown argument '$1'; $usage" ;;
    esac
done
if [ -n "$port" ] && ! { [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ]; }; then
    fail "--port '$port' is not a port number: give 1-65535, e.g. --port 8765"
fi
[ "$(id -u)" = 0 ] || fail "run as root (it writes /opt, /etc and /usr/local/bin): sudo $0 $*"
command -v systemctl >/dev/null || fail "systemctl not found: the service needs systemd"
if [ "$apache" = 1 ]; then
    command -v a2enconf >/dev/null || fail "--apache: a2enconf not found; install Apache first (apt-get install apache2)"
fi

echo "$prog: group $group (the service reads /etc/trade-stream through it)"
groupadd -f --system "$group"

echo "$prog: $prefix/.venv with trade-stream from $repo"
install -d -m 0755 "$prefix"
[ -x "$prefix/.venv/bin/python" ] || python3 -m venv "$prefix/.venv"
# From a clean copy of the checkout: setuptools builds in the source tree and reuses a build/ left there by an
# earlier build, which would ship modules the checkout has since deleted.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=node_modules --exclude=__pycache__ -cf - . | tar -C "$src" -xf -
"$prefix/.venv/bin/python" -m pip install -q --upgrade "$src"
ln -sfn "$prefix/.venv/bin/trade-stream" /usr/local/bin/trade-stream

echo "$prog: $etc (root:$group 0750, files 0640)"
install -d -m 0750 -o root -g "$group" "$etc"
if [ ! -e "$env_file" ]; then
    # The sample with the users file switched on, so `trade-stream user add` works from the start.
    sed 's|^# TRADE_STREAM_USERS_FILE=$|TRADE_STREAM_USERS_FILE=/etc/trade-stream/users.toml|' \
        "$repo/.env_sample" > "$env_file.new"
    mv "$env_file.new" "$env_file"
    echo "$prog: created $env_file from .env_sample: put your Alpaca keys in it"
fi
if [ ! -e "$etc/users.toml" ]; then
    printf '%s\n' "# trade-stream users: managed with \`trade-stream user add|list|remove\`." > "$etc/users.toml"
fi
# The files the service reads, by name; anything else here keeps its own owner and mode.
for f in trade-stream.env users.toml accounts.toml webhooks.toml config.js jwt.pub; do
    if [ -e "$etc/$f" ]; then
        chown root:"$group" "$etc/$f"
        chmod 0640 "$etc/$f"
    fi
done

# The port: --port, else the env file's own, else the default; then written to the env file (and below to the
# Apache conf), so the two cannot disagree.
if [ -z "$port" ]; then
    port="$(sed -n 's/^TRADE_STREAM_PORT=\([0-9]*\)[[:space:]]*$/\1/p' "$env_file" | tail -n 1)"
    port="${port:-$default_port}"
fi
if grep -q '^TRADE_STREAM_PORT=' "$env_file"; then
    sed -i "s/^TRADE_STREAM_PORT=.*/TRADE_STREAM_PORT=$port/" "$env_file"
elif grep -q '^# TRADE_STREAM_PORT=$' "$env_file"; then
    sed -i "s/^# TRADE_STREAM_PORT=$/TRADE_STREAM_PORT=$port/" "$env_file"
else
    echo "TRADE_STREAM_PORT=$port" >> "$env_file"
fi

echo "$prog: systemd units $unit and trade-stream@.service"
install -m 0644 "$repo/services/$unit" "$repo/services/trade-stream@.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable "$unit"
# An upgrade: a running service (and cluster node) picks up the new package now.
systemctl try-restart "$unit" 'trade-stream@*.service'

if [ "$apache" = 1 ]; then
    echo "$prog: Apache conf trade-stream (port $port)"
    a2enmod -q proxy proxy_http
    sed "s/127\.0\.0\.1:$default_port\b/127.0.0.1:$port/g" "$repo/services/apache-trade-stream.conf" \
        > /etc/apache2/conf-available/trade-stream.conf
    a2enconf -q trade-stream
    apachectl configtest
    systemctl reload-or-restart apache2
fi

echo "$prog: done. Next: put your keys in $env_file, then systemctl start ${unit%.service}"
