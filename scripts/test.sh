#!/usr/bin/env bash
# Runs tusgate's whole test suite on a fresh machine: static checks, then every
# package's tests (race detector on), against a real redis-server.
#
# Redis: uses TUSGATE_TEST_REDIS_ADDR if set, else 127.0.0.1:6379 if a server
# answers there, else starts a throwaway redis-server (no persistence) on a free
# port for the duration of the run. redis-server must be installed (Debian:
# apt-get install redis-server); as root the script installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# go.mod's toolchain line names the Go release the project is built and
# tested with (standard-library security fixes); GOTOOLCHAIN=auto fetches it
# through the Go module proxy when the installed go is older.
export GOTOOLCHAIN=auto

redis_answers() { # host port
  (exec 3<>"/dev/tcp/$1/$2" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing redis-server (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null
  else
    echo "test: redis-server is not installed; install it (apt-get install redis-server)" >&2
    exit 1
  fi
fi

started=""
if [ -z "${TUSGATE_TEST_REDIS_ADDR:-}" ]; then
  if redis_answers 127.0.0.1 6379; then
    export TUSGATE_TEST_REDIS_ADDR=127.0.0.1:6379
  else
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 16379)
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    started="$dir"
    trap 'kill "$(cat "$started/redis.pid")" 2>/dev/null || true; rm -rf "$started"' EXIT
    for _ in $(seq 100); do redis_answers 127.0.0.1 "$port" && break; sleep 0.1; done
    redis_answers 127.0.0.1 "$port" || { echo "test: redis-server did not start" >&2; cat "$dir/redis.log" >&2; exit 1; }
    export TUSGATE_TEST_REDIS_ADDR=127.0.0.1:$port
    echo "test: started redis-server on $TUSGATE_TEST_REDIS_ADDR"
  fi
fi

# Browser tests (integration/browser_test.go) need Debian's chromium, Node.js
# >= 20 and the npm packages pinned in integration/browser/package-lock.json
# (node_modules is not committed). Install what is missing when we can:
# chromium with apt-get as root, the npm packages with `npm ci` (cached under
# the user cache directory, re-run when the lock file changes). When we
# cannot (no network, no node), say so and go on: the browser tests then skip
# with the reason and everything else runs. Once everything is in place,
# TUSGATE_REQUIRE_BROWSER=1 makes a missing piece a test failure, not a skip.
browser_setup() {
  local dir=integration/browser chromium=${TUSGATE_CHROMIUM:-/usr/bin/chromium}
  if [ ! -x "$chromium" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing chromium for the browser tests (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "test: could not install chromium; the browser tests will skip"
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "test: node or npm not found; the browser tests will skip"
    return 0
  fi
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "test: node $(node --version) is older than 20 (playwright-core needs 20); the browser tests will skip"
    return 0
  fi
  local want stamp="$dir/node_modules/.tusgate-lock-sha256"
  want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "test: npm ci in $dir"
    local log
    log=$(mktemp)
    if timeout 600 npm ci --prefix "$dir" --cache "${XDG_CACHE_HOME:-$HOME/.cache}/tusgate/npm" \
      --prefer-offline --no-audit --no-fund --fetch-retries=1 --fetch-timeout=30000 >"$log" 2>&1; then
      echo "$want" >"$stamp"
    else
      tail -5 "$log"
      echo "test: npm ci failed (is the npm registry reachable?); the browser tests will skip"
      rm -f "$log"
      return 0
    fi
    rm -f "$log"
  fi
  if [ -x "$chromium" ]; then
    export TUSGATE_REQUIRE_BROWSER=1
  fi
}
browser_setup

echo "test: gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi
echo "test: go vet"
go vet ./...
echo "test: go test -race (redis at $TUSGATE_TEST_REDIS_ADDR)"
go test -race -count=1 -timeout 12m ./...

# A short run of every fuzz target (the seed corpus already ran above as
# ordinary tests); a failure leaves its input under testdata/fuzz/. The
# budget is a count of executions, not a duration: with -fuzztime=5s, Go
# 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the deadline when the machine is loaded (golang/go#75804,
# fixed in Go 1.27; it failed one CI run here).
echo "test: short fuzz runs"
fuzzlog=$(mktemp)
for target in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs grep -ho '^func Fuzz[A-Za-z0-9_]*' | sed 's/^func //' | sort -u); do
  pkg=$(dirname "$(grep -rl --include='*_test.go' "^func $target(" . | head -1)")
  go test -run='^$' -fuzz="^${target}\$" -fuzztime="${TUSGATE_FUZZTIME:-5000x}" "$pkg" >"$fuzzlog" 2>&1 \
    || { cat "$fuzzlog"; echo "test: fuzz target $target failed" >&2; exit 1; }
  echo "ok  	fuzz $target ($pkg)"
done

# Known vulnerabilities: govulncheck against the Go vulnerability database
# built from golang.org/x/vulndb (pinned below; vuln.go.dev itself is not
# reachable from CI, the Go module proxy is). Bump VULNDB_VERSION to pick up
# newer reports. The database is built once per version into the cache.
VULNCHECK_VERSION=v1.9.0
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
echo "test: govulncheck (database golang.org/x/vulndb@$VULNDB_VERSION)"
db="${XDG_CACHE_HOME:-$HOME/.cache}/tusgate/vulndb-$VULNDB_VERSION"
if [ ! -f "$db/index/db.json" ]; then
  src=$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  rm -rf "$db.tmp"
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$db.tmp"
  mv "$db.tmp" "$db"
fi
go run "golang.org/x/vuln/cmd/govulncheck@$VULNCHECK_VERSION" -db "file://$db" ./...
