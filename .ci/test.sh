#!/usr/bin/env bash
# Runs every test against real services: RabbitMQ and PostgreSQL (started if installed but down) and Azurite
# (installed from npm into .tools/ if missing, started on a free port). Stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

AZURITE_VERSION=3.37.0
TOOLS="$PWD/.tools"
started_rabbit=0
started_pg=""
azurite_pid=""

cleanup() {
  if [ -n "$azurite_pid" ]; then kill "$azurite_pid" 2>/dev/null || true; wait "$azurite_pid" 2>/dev/null || true; fi
  if [ "$started_rabbit" = 1 ]; then rabbitmqctl stop >/dev/null 2>&1 || true; fi
  if [ -n "$started_pg" ]; then pg_ctlcluster --skip-systemctl-redirect "$started_pg" main stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# RabbitMQ: the tests need a broker at 127.0.0.1:5672 (guest/guest) or at $DMFEXPORT_TEST_AMQP_URL.
if [ -z "${DMFEXPORT_TEST_AMQP_URL:-}" ] && ! port_open 127.0.0.1 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    echo "test: starting RabbitMQ (rabbitmq-server -detached)"
    rabbitmq-server -detached
    started_rabbit=1
    for _ in $(seq 1 60); do port_open 127.0.0.1 5672 && break; sleep 1; done
    port_open 127.0.0.1 5672 || { echo "test: RabbitMQ did not come up on 127.0.0.1:5672" >&2; exit 1; }
    rabbitmqctl await_startup >/dev/null 2>&1 || true
  else
    echo "test: no RabbitMQ on 127.0.0.1:5672 and rabbitmq-server is not installed (apt-get install rabbitmq-server)" >&2
    exit 1
  fi
fi

# PostgreSQL: the sink's tests need a server at 127.0.0.1:5432 with trust authentication on loopback
# and a database "test" (user postgres), or $DMFEXPORT_TEST_DATABASE_URL.
if [ -z "${DMFEXPORT_TEST_DATABASE_URL:-}" ] && ! port_open 127.0.0.1 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -n "$(ls /etc/postgresql 2>/dev/null)" ]; then
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    echo "test: starting PostgreSQL $version (pg_ctlcluster $version main start)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    started_pg="$version"
    for _ in $(seq 1 60); do port_open 127.0.0.1 5432 && break; sleep 1; done
    port_open 127.0.0.1 5432 || { echo "test: PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
  else
    echo "test: no PostgreSQL on 127.0.0.1:5432 and no cluster to start (apt-get install postgresql, or set DMFEXPORT_TEST_DATABASE_URL)" >&2
    exit 1
  fi
fi
if [ -z "${DMFEXPORT_TEST_DATABASE_URL:-}" ] && command -v psql >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d test -Atc 'SELECT 1' >/dev/null 2>&1 || {
    echo "test: PostgreSQL at 127.0.0.1:5432 refuses user postgres on database test: create it (createdb test) and allow trust on loopback in pg_hba.conf" >&2
    exit 1
  }
fi

# A cluster of a test's own (the fault suite's database restart): initdb and pg_ctl of the installed
# PostgreSQL, run as user postgres (both refuse root).
initdb_bin="$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)"
if [ -n "$initdb_bin" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
  runuser -u postgres -- "$initdb_bin" --version >/dev/null && runuser -u postgres -- "$(dirname "$initdb_bin")/pg_ctl" --version >/dev/null || {
    echo "test: $initdb_bin or pg_ctl does not run as user postgres" >&2
    exit 1
  }
else
  echo "test: no initdb under /usr/lib/postgresql, not root, or no postgres user: fault cases that restart the database are skipped"
fi

# Azurite: the Azure Blob Storage emulator, pinned, in a project-local folder.
if [ ! -x "$TOOLS/node_modules/.bin/azurite-blob" ]; then
  echo "test: installing azurite@$AZURITE_VERSION into .tools/"
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION" >/dev/null
fi
azlog="$(mktemp)"
# --skipApiVersionCheck: azblob sends a newer x-ms-version than Azurite knows.
"$TOOLS/node_modules/.bin/azurite-blob" --inMemoryPersistence --blobHost 127.0.0.1 --blobPort 0 \
  --skipApiVersionCheck --disableTelemetry >"$azlog" 2>&1 &
azurite_pid=$!
for _ in $(seq 1 600); do
  grep -q 'successfully listens on' "$azlog" && break
  kill -0 "$azurite_pid" 2>/dev/null || { cat "$azlog" >&2; echo "test: Azurite failed to start" >&2; exit 1; }
  sleep 0.1
done
endpoint="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$azlog" | head -n1)"
[ -n "$endpoint" ] || { cat "$azlog" >&2; echo "test: could not read Azurite's address" >&2; exit 1; }
export DMFEXPORT_TEST_AZURITE="$endpoint/devstoreaccount1"
echo "test: Azurite blob endpoint $DMFEXPORT_TEST_AZURITE"

# promtool: checks docs/prometheus-alerts.yml and runs its unit tests (TestPrometheusAlertsPromtool,
# which fails without it: DMFEXPORT_REQUIRE_PROMTOOL=1). When missing, promtool alone is taken from
# Debian's prometheus package into .tools/bin: apt-get download and dpkg-deb -x, no root needed, and
# no Prometheus server installed (the package's init script would start one, or fail the install,
# on a machine without systemd).
install_promtool() {
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) ||
    { [ "$(id -u)" = 0 ] && apt-get update >/dev/null && (cd "$tmp" && apt-get download prometheus >/dev/null); } ||
    { rm -rf "$tmp"; return 1; }
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root" && mkdir -p "$TOOLS/bin" && cp "$tmp/root/usr/bin/promtool" "$TOOLS/bin/promtool"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}
export PATH="$TOOLS/bin:$PATH"
if ! command -v promtool >/dev/null 2>&1; then
  echo "test: installing promtool into .tools/bin (from Debian's prometheus package)"
  if ! command -v apt-get >/dev/null 2>&1 || ! install_promtool; then
    echo "test: promtool is missing and could not be installed: install it (apt-get install prometheus, or put promtool on PATH)" >&2
    exit 1
  fi
fi
echo "test: $(promtool --version 2>&1 | head -n1)"
export DMFEXPORT_REQUIRE_PROMTOOL=1

# chromium: the status page's browser test (TestStatusPageBrowser) drives Debian's chromium headless;
# DMFEXPORT_REQUIRE_BROWSER=1 makes that test fail, not skip, when it is missing.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium (apt-get install chromium) for the status page's browser test"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ||
      { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
  else
    echo "test: chromium is not installed and this is not root: TestStatusPageBrowser fails (apt-get install chromium)" >&2
  fi
fi
export DMFEXPORT_REQUIRE_BROWSER=1

echo "test: go vet"
go vet ./...
unformatted="$(gofmt -l $(find . -name '*.go' -not -path './.tools/*') || true)"
if [ -n "$unformatted" ]; then echo "test: gofmt needed on: $unformatted" >&2; exit 1; fi

echo "test: golangci-lint (make lint; installs the pinned version into .tools/ the first time)"
make lint

# -race needs cgo, and cgo a C compiler: go env CGO_ENABLED is 0 when none is found (or when it is
# turned off); the tests then run without the race detector, saying so.
race=-race
if [ "$(go env CGO_ENABLED)" != 1 ]; then
  echo "test: no C compiler for cgo (go env CC: $(go env CC); apt-get install gcc) or CGO_ENABLED=0: -race needs one, running the tests WITHOUT the race detector" >&2
  race=""
fi
echo "test: go test ${race:-(no -race)}"
go test $race -count=1 -timeout 20m ./...

echo "test: fault suite, CI subset (make faults runs every case)"
DMFEXPORT_FAULTS=ci go test -tags faults -count=1 -timeout 10m ./faults/
