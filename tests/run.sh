#!/usr/bin/env bash
# The test command: builds .venv, installs the project with its test extra, makes sure Chromium is there for the
# browser tests, redis-server for the cluster tests and debootstrap + systemd-nspawn for the deployment test,
# then runs ruff, the import-layer contract, the type check and pytest. Usage: ./tests/run.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
fi
# The editable install follows the sources by itself; it is redone only when pyproject.toml (dependencies, entry
# points, package data) differs from the one last installed, or the install is gone.
stamp=.venv/.trade-stream-installed
if ! cmp -s pyproject.toml "$stamp" || ! .venv/bin/python -c "import trade_stream" 2>/dev/null; then
    rm -f "$stamp"
    .venv/bin/python -m pip install -q -e ".[test]"
    cp pyproject.toml "$stamp"
fi

if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing chromium with apt-get for the browser tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "run.sh: could not install chromium; browser tests will skip"
    else
        echo "run.sh: chromium missing and not root; browser tests will skip"
    fi
fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing redis-server with apt-get for the cluster tests"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null \
            || echo "run.sh: could not install redis-server; the cluster tests will skip"
    else
        echo "run.sh: redis-server missing and not root; the cluster tests will skip"
    fi
fi
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing systemd (for systemd-analyze verify of the unit)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; } \
            || echo "run.sh: could not install systemd; the unit test will skip"
    fi
fi
if ! { command -v debootstrap >/dev/null 2>&1 && command -v systemd-nspawn >/dev/null 2>&1; }; then
    # tests/deploy: a Debian container with systemd as PID 1 for the install script, the unit and Apache
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing debootstrap and systemd-container with apt-get for the deployment test"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd-container >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap \
                 systemd-container >/dev/null; } \
            || echo "run.sh: could not install debootstrap/systemd-container; the deployment test will skip"
    else
        echo "run.sh: debootstrap or systemd-nspawn missing and not root; the deployment test will skip"
    fi
fi
if ! { command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; }; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing node and npm with apt-get for the JS SDK tests"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null 2>&1 \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; } \
            || echo "run.sh: could not install node/npm; the JS SDK tests will skip"
    fi
fi
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    # Alpaca's JS SDK v3 and v4 (alias alpaca-v4) for tests/integration/test_js_sdk.py and test_client_matrix.py
    # (pinned in tests/js/package.json).
    (cd tests/js && npm install --no-audit --no-fund --omit=dev --prefer-offline >/dev/null 2>&1) \
        || echo "run.sh: could not install the JS SDK with npm; the JS SDK tests will skip"
    # ws for the bench's Node relay (services/trade_stream/bench/node/package.json), `trade-stream bench --rounds`
    (cd services/trade_stream/bench/node \
        && npm install --no-audit --no-fund --omit=dev --prefer-offline >/dev/null 2>&1) \
        || echo "run.sh: could not install ws with npm; the bench's Node relay test will skip"
else
    echo "run.sh: node/npm missing; the JS SDK tests and the bench's Node relay test will skip"
fi

.venv/bin/ruff check services tests
# The layer contract in pyproject.toml ([tool.importlinter]): a back-edge between layers fails here.
PYTHONPATH=services .venv/bin/lint-imports
# The type check in pyproject.toml ([tool.mypy]): services/trade_stream, every function annotated.
.venv/bin/mypy
set +e
# Three workers on two cores: most tests wait on sockets and daemons, not on the CPU. A file at a time per
# worker (--dist loadfile), so a module's fixtures (the deploy test's container, one Chromium) stay in one.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
status=$?
set -e
if [ "$status" = "5" ]; then
    echo "run.sh: pytest collected no tests; failing" >&2
    exit 1
fi
exit "$status"
