#!/usr/bin/env bash
# Runs tamis locally: installs what is missing (deploy/setup.sh), builds the
# release binary, starts a private ClickHouse with its data in
# data/clickhouse/, then `tamis serve --config config/tamis.toml`.
# Ctrl-C stops both.
#
#   deploy/run.sh [--demo] [extra arguments for `tamis serve`]
#
# --demo first writes eight weeks of synthetic traffic for every configured
# site (`tamis demo`), so the dashboard has something to show.
#
# Environment:
#   TAMIS_CH_PORT      ClickHouse HTTP port (default 8123)
#   TAMIS_CH_TCP_PORT  ClickHouse native port (default 9000, or the next free one)
#   TAMIS_LISTEN       tamis listen address (default: the config's, 127.0.0.1:8080)
#   TAMIS_ADMIN_LISTEN the operators' listener (default: the config's, 127.0.0.1:9464)
#   TAMIS_CONFIG       config file (default config/tamis.toml)
#   other TAMIS_* variables are passed to tamis (see the README)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { echo "run: $*"; }
die() {
    echo "run: $*" >&2
    exit 1
}

DEMO=0
if [ "${1:-}" = --demo ]; then
    DEMO=1
    shift
fi
CONFIG=${TAMIS_CONFIG:-config/tamis.toml}
CH_PORT=${TAMIS_CH_PORT:-8123}
CH_DIR=$ROOT/data/clickhouse

# `toml_get SECTION KEY`: a plain string value from the config file, or nothing.
toml_get() {
    [ -f "$CONFIG" ] || return 0
    awk -v want="$1" -v key="$2" '
        /^[[:space:]]*\[/ {
            s = $0
            gsub(/^[[:space:]]*\[+[[:space:]]*|[[:space:]]*\]+.*$/, "", s)
            section = s
            next
        }
        section == want && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
            v = $0
            sub(/^[^=]*=[[:space:]]*/, "", v)
            if (v ~ /^"/) { sub(/^"/, "", v); sub(/".*$/, "", v) }
            else if (v ~ /^'\''/) { sub(/^'\''/, "", v); sub(/'\''.*$/, "", v) }
            else { sub(/[[:space:]]*(#.*)?$/, "", v) }
            print v
            exit
        }' "$CONFIG"
}

# `port_open PORT`: something accepts connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# `http_get URL`: the body of a successful GET, or failure.
http_get() {
    curl -fsS --max-time 2 "$1" 2>/dev/null
}

# --- install and build -----------------------------------------------------

./deploy/setup.sh
[ -f "$CONFIG" ] || die "config file $CONFIG not found (set TAMIS_CONFIG to use another one)"
say "building (cargo build --release)…"
cargo build --release
TAMIS_BIN=$ROOT/target/release/tamis
[ -x "$TAMIS_BIN" ] || die "$TAMIS_BIN was not built"

# --- ClickHouse ------------------------------------------------------------

if [ -x /usr/sbin/clickhouse-server ]; then
    CH_CMD=(/usr/sbin/clickhouse-server)
elif command -v clickhouse-server >/dev/null 2>&1; then
    CH_CMD=("$(command -v clickhouse-server)")
elif command -v clickhouse >/dev/null 2>&1; then
    CH_CMD=("$(command -v clickhouse)" server)
else
    die "clickhouse-server not found: run deploy/setup.sh (or apt-get install clickhouse-server)"
fi

mkdir -p "$CH_DIR/data" "$CH_DIR/log"
if [ -f "$CH_DIR/server.pid" ] && kill -0 "$(cat "$CH_DIR/server.pid")" 2>/dev/null; then
    die "a ClickHouse for data/clickhouse/ already runs (pid $(cat "$CH_DIR/server.pid")): is another deploy/run.sh running? Stop it first."
fi
if port_open "$CH_PORT"; then
    if [ "$(http_get "http://127.0.0.1:$CH_PORT/ping")" = "Ok." ]; then
        die "a ClickHouse server already answers on 127.0.0.1:$CH_PORT (the system service? 'service clickhouse-server stop' stops it). Stop it, or choose another port: TAMIS_CH_PORT=8124 $0"
    fi
    die "port $CH_PORT is in use by another program: choose another one, e.g. TAMIS_CH_PORT=8124 $0"
fi
if [ -n "${TAMIS_CH_TCP_PORT:-}" ]; then
    CH_TCP_PORT=$TAMIS_CH_TCP_PORT
    port_open "$CH_TCP_PORT" && die "TAMIS_CH_TCP_PORT=$CH_TCP_PORT is in use"
else
    CH_TCP_PORT=9000
    while port_open "$CH_TCP_PORT" || [ "$CH_TCP_PORT" = "$CH_PORT" ]; do
        CH_TCP_PORT=$((CH_TCP_PORT + 1))
        [ "$CH_TCP_PORT" -lt 9100 ] || die "no free port for ClickHouse's native protocol in 9000-9099: set TAMIS_CH_TCP_PORT"
    done
fi

template=$(<deploy/clickhouse/config.xml.in)
template=${template//@HTTP_PORT@/"$CH_PORT"}
template=${template//@TCP_PORT@/"$CH_TCP_PORT"}
template=${template//@DATA_DIR@/"$CH_DIR/data"}
template=${template//@LOG_DIR@/"$CH_DIR/log"}
printf '%s\n' "$template" >"$CH_DIR/config.xml"

ch_pid=""
tamis_pid=""

# Stops tamis first (it flushes what it holds to ClickHouse), then ClickHouse.
stop_pid() { # PID SECONDS
    local pid=$1 waited=0
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$(($2 * 10))" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    trap - INT TERM HUP EXIT
    if [ -n "$tamis_pid" ]; then
        say "stopping tamis…"
        stop_pid "$tamis_pid" 30
        tamis_pid=""
    fi
    if [ -n "$ch_pid" ]; then
        say "stopping ClickHouse…"
        stop_pid "$ch_pid" 60
        ch_pid=""
        rm -f "$CH_DIR/server.pid"
    fi
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP
trap cleanup EXIT

say "starting ClickHouse ($(basename "${CH_CMD[0]}")) on 127.0.0.1:$CH_PORT, data in data/clickhouse/…"
# setsid: Ctrl-C reaches this script only, which stops tamis before ClickHouse.
setsid "${CH_CMD[@]}" --config-file="$CH_DIR/config.xml" </dev/null >"$CH_DIR/log/stdout.log" 2>"$CH_DIR/log/stderr.log" &
ch_pid=$!
echo "$ch_pid" >"$CH_DIR/server.pid"

ch_failed() {
    echo "run: ClickHouse $1; last lines of its logs:" >&2
    tail -n 40 "$CH_DIR/log/clickhouse-server.err.log" "$CH_DIR/log/stderr.log" >&2 2>/dev/null || true
    exit 1
}
for _ in $(seq 300); do
    [ "$(http_get "http://127.0.0.1:$CH_PORT/ping")" = "Ok." ] && break
    kill -0 "$ch_pid" 2>/dev/null || {
        wait "$ch_pid" || true
        ch_pid=""
        rm -f "$CH_DIR/server.pid"
        ch_failed "exited during start-up"
    }
    sleep 0.1
done
[ "$(http_get "http://127.0.0.1:$CH_PORT/ping")" = "Ok." ] || ch_failed "did not answer /ping within 30 s"
say "ClickHouse $(curl -fsS --data-binary 'SELECT version()' "http://127.0.0.1:$CH_PORT/") is up"

# --- tamis -----------------------------------------------------------------

LISTEN=${TAMIS_LISTEN:-$(toml_get server listen)}
LISTEN=${LISTEN:-127.0.0.1:8080}
PORT=${LISTEN##*:}
HOST=${LISTEN%:*}
case "$HOST" in
    0.0.0.0 | "" | "*") HOST=127.0.0.1 ;;
    "[::]") HOST="[::1]" ;;
esac
BASE="http://$HOST:$PORT"
DATABASE=${TAMIS_CLICKHOUSE_DATABASE:-$(toml_get clickhouse database)}
DATABASE=${DATABASE:-tamis}
ADMIN_LISTEN=${TAMIS_ADMIN_LISTEN:-$(toml_get server admin_listen)}
ADMIN_LISTEN=${ADMIN_LISTEN:-127.0.0.1:9464}
ADMIN_PORT=${ADMIN_LISTEN##*:}
ADMIN_HOST=${ADMIN_LISTEN%:*}
case "$ADMIN_HOST" in
    0.0.0.0 | "" | "*") ADMIN_HOST=127.0.0.1 ;;
    "[::]") ADMIN_HOST="[::1]" ;;
esac
ADMIN_BASE="http://$ADMIN_HOST:$ADMIN_PORT"

port_open "$PORT" && [ "$HOST" = 127.0.0.1 ] && die "port $PORT is already in use: set TAMIS_LISTEN=127.0.0.1:8081 (for example)"
port_open "$ADMIN_PORT" && [ "$ADMIN_HOST" = 127.0.0.1 ] && die "port $ADMIN_PORT is already in use: set TAMIS_ADMIN_LISTEN=127.0.0.1:9465 (for example)"

if [ "$DEMO" = 1 ]; then
    say "writing synthetic traffic (tamis demo)…"
    TAMIS_CLICKHOUSE_URL="http://127.0.0.1:$CH_PORT" "$TAMIS_BIN" demo --config "$CONFIG" || die "tamis demo failed"
fi

say "starting tamis on $LISTEN…"
TAMIS_CLICKHOUSE_URL="http://127.0.0.1:$CH_PORT" setsid "$TAMIS_BIN" serve --config "$CONFIG" "$@" &
tamis_pid=$!

ready=0
for _ in $(seq 600); do
    if http_get "$BASE/healthz" >/dev/null; then
        ready=1
        break
    fi
    kill -0 "$tamis_pid" 2>/dev/null || break
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    if kill -0 "$tamis_pid" 2>/dev/null; then
        die "tamis did not answer $BASE/healthz within 60 s"
    fi
    wait "$tamis_pid" && rc=0 || rc=$?
    tamis_pid=""
    die "tamis exited during start-up (exit code $rc)"
fi

cat <<EOF

  tamis is running: $BASE/
    dashboard                $BASE/  (token of the reference config: tamis-local-dev-token)
    beacon                   <script defer data-domain="example.org" src="$BASE/js/tamis.js"></script>
    endpoints (and credits)  $BASE/about
    health                   $BASE/healthz
  operators' listener (keep it off the public network): $ADMIN_BASE/
    Prometheus metrics       $ADMIN_BASE/metrics
    readiness details        $ADMIN_BASE/readyz
    audit log (admin token)  $ADMIN_BASE/api/v2/audit
  ClickHouse: http://127.0.0.1:$CH_PORT (native port $CH_TCP_PORT), data in data/clickhouse/

  Send a pageview:

curl -i -X POST $BASE/api/event -H 'Content-Type: application/json' -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36' -d '{"n":"pageview","u":"https://example.org/","d":"example.org"}'

  Within a second or two (tamis writes in batches) it is in the hourly aggregates:

curl -sS http://127.0.0.1:$CH_PORT/ --data-binary "SELECT page, country, region, browser, sumMerge(pageviews) AS pageviews, uniqIfMerge(visitors) AS visitors FROM $DATABASE.traffic_hourly WHERE event != 'tamis:delivered' GROUP BY page, country, region, browser FORMAT PrettyCompact"

  and in the stats API (the reference config's local token):

curl -sS $BASE/api/v2/query -H 'Authorization: Bearer tamis-local-dev-token' -d '{"site_id":"example.org","metrics":["visitors","pageviews"],"date_range":"day"}'

  Ctrl-C stops tamis and ClickHouse.

EOF

# Run until Ctrl-C, or until one of the two exits (then stop the other).
rc=0
wait -n "$tamis_pid" "$ch_pid" || rc=$?
if ! kill -0 "$tamis_pid" 2>/dev/null; then
    tamis_pid=""
    say "tamis exited (exit code $rc)"
else
    ch_pid_was=$ch_pid
    ch_pid=""
    rm -f "$CH_DIR/server.pid"
    say "ClickHouse (pid $ch_pid_was) exited; see $CH_DIR/log/clickhouse-server.err.log"
    rc=1
fi
cleanup
exit "$rc"
