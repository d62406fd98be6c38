#!/usr/bin/env bash
# Start trade-stream from a checkout of this repository, from any working directory.
#
#   ./services/start_trade_stream.sh --demo          # built-in Alpaca simulator, no keys needed
#   ./services/start_trade_stream.sh                 # real Alpaca: keys in .env (see .env_sample)
#   ./services/start_trade_stream.sh check           # try the configured keys against Alpaca
#
# Every argument goes to `trade-stream` unchanged (`--help` lists them). On first use, or when pyproject.toml has
# changed since the last install, it creates .venv in the repository root with python3 (3.11 or newer; set PYTHON
# to pick another interpreter) and runs `pip install -e .`. Otherwise it prints nothing and costs a few
# milliseconds. It ends by exec'ing the daemon, so Ctrl-C, SIGTERM and SIGHUP reach trade-stream itself.
#
# .env: this script deliberately does NOT export .env into the environment. The daemon reads .env itself
# (the working directory first, then the repository root; or --env-file PATH) with the precedence
# CLI flag > environment > .env. Exporting the file here would turn its values into "environment" values, which
# (a) with a plain `set -a; . ./.env` overrides variables you set in your shell, (b) overrides the file you name
# with --env-file, and (c) freezes the values at start, so an edit to .env followed by SIGHUP (reload) would be
# ignored. .env is also dotenv syntax, not always valid shell. Leaving it to the daemon keeps all three right.
set -euo pipefail

# The repository root, from this script's real location (symlinks to the script are followed).
ts_src="${BASH_SOURCE[0]}"
while [ -L "$ts_src" ]; do
    ts_dir="$(cd -P "$(dirname "$ts_src")" && pwd)"
    ts_src="$(readlink "$ts_src")"
    case "$ts_src" in /*) ;; *) ts_src="$ts_dir/$ts_src" ;; esac
done
ts_root="$(cd -P "$(dirname "$ts_src")/.." && pwd)"
ts_venv="$ts_root/.venv"
ts_stamp="$ts_venv/.trade-stream-installed"

fail() {
    echo "start_trade_stream.sh: $*" >&2
    exit 1
}

# Up to date when the console script exists, the venv's interpreter still runs (a dangling symlink after a
# system Python upgrade fails -x), and the stamp holds the hash of the pyproject.toml it was installed from.
ts_hash="$(cksum <"$ts_root/pyproject.toml")"
up_to_date() {
    [ -x "$ts_venv/bin/python" ] && [ -x "$ts_venv/bin/trade-stream" ] || return 1
    [ -f "$ts_stamp" ] && [ "$(cat "$ts_stamp")" = "$ts_hash" ] && return 0
    # No stamp, but an install newer than pyproject.toml (e.g. made by tests/run.sh): adopt it, do not reinstall.
    local info
    for info in "$ts_venv"/lib/python3*/site-packages/trade_stream-*.dist-info/METADATA; do
        if [ -f "$info" ] && [ "$info" -nt "$ts_root/pyproject.toml" ]; then
            printf '%s\n' "$ts_hash" 2>/dev/null >"$ts_stamp" || true
            return 0
        fi
    done
    return 1
}

install() {
    if [ ! -x "$ts_venv/bin/python" ]; then
        local python="${PYTHON:-python3}"
        command -v "$python" >/dev/null 2>&1 \
            || fail "$python not found: install Python 3.11 or newer (e.g. apt-get install python3 python3-venv)"
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || fail "$("$python" -V 2>&1) is too old: trade-stream needs Python 3.11 or newer (set PYTHON=python3.12)"
        echo "start_trade_stream.sh: creating $ts_venv with $("$python" -V 2>&1)" >&2
        "$python" -m venv "$ts_venv" \
            || fail "could not create $ts_venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    echo "start_trade_stream.sh: installing trade-stream and its dependencies into $ts_venv" \
        "(pip install -e .; about half a minute the first time)..." >&2
    "$ts_venv/bin/python" -m pip install -q --disable-pip-version-check -e "$ts_root" >&2 \
        || fail "pip install -e $ts_root failed (see above)"
    printf '%s\n' "$ts_hash" >"$ts_stamp"
    echo "start_trade_stream.sh: installed; starting trade-stream (it prints the page's address once it listens)" >&2
}

if ! up_to_date; then
    mkdir -p "$ts_venv"
    if command -v flock >/dev/null 2>&1; then
        # Two starts at once must not run pip into the same venv together; the second waits, then re-checks.
        exec 9>"$ts_venv/.install.lock"
        flock 9
        up_to_date || install
        exec 9>&-
    else
        install
    fi
fi

exec "$ts_venv/bin/trade-stream" "$@"
