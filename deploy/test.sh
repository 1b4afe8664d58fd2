#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing (with DB-IP's GeoIP
# databases, whose every subdivision name privacy::geo's coverage test
# maps), then `cargo test --release --no-fail-fast` (every test binary runs,
# so one failure does not hide the others)
# (library, binary, integration and doc tests; the benchmarks are not run).
# The integration tests start their own ClickHouse servers on free loopback
# ports (tests/common/clickhouse.rs). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
./deploy/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
cargo test --release --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?

elapsed=$(($(date +%s) - start))
echo "test: total time $((elapsed / 60))m$((elapsed % 60))s, cargo test exit code $rc"
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
