#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (without the GeoIP
# databases, which the tests don't use), then `cargo test --release`
# (library, binary, integration and doc tests; the benchmarks are not run).
# The integration tests start their own ClickHouse servers on free loopback
# ports (tests/common/clickhouse.rs). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
./deploy/setup.sh --no-geoip

rc=0
cargo test --release "$@" || rc=$?

elapsed=$(($(date +%s) - start))
echo "test: total time $((elapsed / 60))m$((elapsed % 60))s, cargo test exit code $rc"
exit "$rc"
