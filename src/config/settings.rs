//! Validated settings: what the rest of tamis receives. Every check that can
//! fail happens here, at start-up, with a message naming the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use ipnet::IpNet;

use super::file::{
    ClickHouseConfig, Config, ConsentMode, Disclosure, FunnelConfig, GoalConfig, OnDenied,
    OnOptOut, OrganizationConfig, QueryConfig, SiteConfig,
};
use crate::goal::{Funnel, Goal, FUNNEL_STEPS, MAX_GOALS};
use crate::ingest::cors::AllowedOrigins;
use crate::privacy::geo::{GeoDb, GeoLevel};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path} is not valid: {reason}")]
    Parse { path: String, reason: String },
    #[error("config key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Longest prefixes PRIVACY.md allows: a longer one would keep more of the
/// address than Google's own anonymization does.
pub const MAX_V4_PREFIX: u8 = 24;
pub const MAX_V6_PREFIX: u8 = 48;

#[derive(Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub clickhouse: ClickHouseSettings,
    pub geo: GeoSettings,
    pub storage: StorageSettings,
    pub sites: Vec<Arc<SiteSettings>>,
    pub tokens: Vec<TokenSettings>,
    pub organization: OrganizationSettings,
    /// Months of audit rows, deletion reports and salt destruction records
    /// kept.
    pub audit_retention_months: u32,
    /// Whether `query.rounding_key` is set (else the sites' rounding keys
    /// come from the installation's stored secret, see
    /// [`Settings::use_installation_secret`]).
    pub rounding_key_configured: bool,
    /// The stats API's bounds on each query.
    pub query: QuerySettings,
}

/// The stats API's bounds on one query (see `query::limits`).
#[derive(Debug, Clone)]
pub struct QuerySettings {
    /// ClickHouse settings sent with every stats-API statement.
    pub max_execution_time_secs: u64,
    pub max_memory_usage: u64,
    pub max_result_rows: u64,
    /// tamis's limit on one whole query (every statement it takes).
    pub timeout: Duration,
    pub max_running_per_token: usize,
    /// A shared link's running queries, all its viewers together.
    pub max_running_per_link: usize,
    /// The server's running queries, all tokens and links together.
    pub max_running: usize,
    /// Whether paginated breakdowns read only the rows their page needs.
    pub pushdown: bool,
}

/// The key of one site's consistent random rounding (see
/// `query::disclosure`): derived from the installation's rounding secret
/// and the site id, so each site's draws are its own. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RoundingKey(pub [u8; 32]);

impl std::fmt::Debug for RoundingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `server.public_url`: an absolute http(s) address, perhaps with a path
/// (tamis behind a reverse proxy under `/stats`), without a query or a
/// fragment; returned without its trailing `/`.
fn public_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| {
        format!("`{text}` is not an absolute URL such as https://stats.example.org ({e})")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` must be an http:// or https:// address"));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "`{text}` must not hold a query, a fragment or a user name"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The installation's rounding secret when `query.rounding_key` is not
/// set: 256 random bits drawn once by the first collector and stored in
/// ClickHouse (`sink::rounding`), so that every collector, every restart
/// and every reload rounds with the same keys whatever the tokens are.
/// Never printed, logged or bound into SQL.
#[derive(Clone, PartialEq, Eq)]
pub struct RoundingSecret([u8; 32]);

impl std::fmt::Debug for RoundingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl RoundingSecret {
    /// A new secret, from the operating system's random source.
    pub fn generate() -> RoundingSecret {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        RoundingSecret(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> RoundingSecret {
        RoundingSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The secret the sites' keys are drawn from: the stored bytes under
    /// the same derivation context as a configured key, told apart by
    /// their label, so the two never give the same keys.
    fn site_secret(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key(ROUNDING_CONTEXT);
        hasher.update(b"installation");
        hasher.update(&(self.0.len() as u64).to_le_bytes());
        hasher.update(&self.0);
        *hasher.finalize().as_bytes()
    }
}

/// Shortest `query.rounding_key` accepted: 32 characters (128 bits as hex).
pub const MIN_ROUNDING_KEY_LEN: usize = 32;

const ROUNDING_CONTEXT: &str = "tamis 2026 disclosure rounding secret";

/// The secret drawn from a configured `query.rounding_key`, or `None`
/// when it is not set: the sites' keys then come from the installation's
/// stored [`RoundingSecret`] ([`Settings::use_installation_secret`]), read
/// from ClickHouse once it answers. A configured key wins, so an operator
/// who sets one changes every rounding once, when it takes effect.
fn rounding_secret(configured: Option<&str>) -> Result<Option<[u8; 32]>, ConfigError> {
    let Some(k) = configured.map(str::trim) else {
        return Ok(None);
    };
    if k.len() < MIN_ROUNDING_KEY_LEN || k.chars().any(char::is_whitespace) {
        return Err(invalid(
            "query.rounding_key",
            format!("must be at least {MIN_ROUNDING_KEY_LEN} characters without spaces (e.g. openssl rand -hex 32)"),
        ));
    }
    let mut hasher = blake3::Hasher::new_derive_key(ROUNDING_CONTEXT);
    hasher.update(b"configured");
    hasher.update(&(k.len() as u64).to_le_bytes());
    hasher.update(k.as_bytes());
    Ok(Some(*hasher.finalize().as_bytes()))
}

/// A site's rounding key under `secret`.
fn site_rounding_key(secret: &[u8; 32], site_id: &str) -> RoundingKey {
    RoundingKey(blake3::keyed_hash(secret, site_id.as_bytes()).into())
}

/// The notice's facts about the publishing body (see `OrganizationConfig`).
/// Empty fields are omitted from the notice and named by `tamis check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganizationSettings {
    pub name: Option<String>,
    pub address: Option<String>,
    pub website: Option<String>,
    pub privacy_officer: Option<String>,
    pub privacy_officer_email: Option<String>,
    pub privacy_officer_phone: Option<String>,
    pub hosting_operator: Option<String>,
    pub hosting_location: Option<String>,
    pub hosting_in_quebec: bool,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub log_dir: PathBuf,
    pub log_max_bytes: u64,
    pub fsync: bool,
}

#[derive(Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// The operators' listener (`/metrics`, `/readyz` details,
    /// `/api/v2/audit`), apart from the public one.
    pub admin_listen: SocketAddr,
    pub trusted_proxies: Vec<IpNet>,
    pub queue_capacity: usize,
    /// Browser origins that may send hits (ingest only).
    pub cors_allow_origin: AllowedOrigins,
    /// Connections served at once (see `web::run`).
    pub max_connections: usize,
    /// How long a connection may go without a complete request head.
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub shutdown_grace: Duration,
    /// `server.public_url` without a trailing `/`.
    pub public_url: Option<String>,
}

#[derive(Clone)]
pub struct ClickHouseSettings {
    /// The server, for a single one. On a cluster, reads go through
    /// `sink::nodes::Nodes` (every node of `cluster`); what still goes to
    /// one node goes here: `clickhouse.url` if set, else the first of
    /// `clickhouse.urls`.
    pub url: ClickHouseUrl,
    pub database: String,
    pub user: String,
    pub password: String,
    pub batch_rows: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
    /// A ClickHouse cluster, or none: one server at `url`.
    pub cluster: Option<ClusterSettings>,
}

/// A ClickHouse cluster (`clickhouse.cluster`, `clickhouse.urls`): tamis
/// makes the schema on every node and reads through the `Distributed`
/// tables of any node that answers.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// The cluster's name in every node's `<remote_servers>`, which
    /// `Distributed` tables name.
    pub name: String,
    /// Every node's HTTP URL, without a trailing slash, each once.
    pub nodes: Vec<ClickHouseUrl>,
}

/// The password never prints; the URL prints without its userinfo.
impl std::fmt::Debug for ClickHouseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseSettings")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("batch_rows", &self.batch_rows)
            .field("flush_interval", &self.flush_interval)
            .field("timeout", &self.timeout)
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// ClickHouse's address, which may carry credentials
/// (`http://user:secret@host:8123`). It prints (`Display`, `Debug`, so in
/// every log line and error message) with the userinfo as `***`; the
/// client gets the whole text through [`ClickHouseUrl::as_str`] (or
/// `String::from`).
#[derive(Clone, PartialEq, Eq)]
pub struct ClickHouseUrl(String);

impl ClickHouseUrl {
    pub fn new(url: impl Into<String>) -> ClickHouseUrl {
        ClickHouseUrl(url.into())
    }

    /// The whole URL, credentials included: for the HTTP client only.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for ClickHouseUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&ClickHouseUrl> for String {
    fn from(url: &ClickHouseUrl) -> String {
        url.0.clone()
    }
}

impl PartialEq<&str> for ClickHouseUrl {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_userinfo(&self.0))
    }
}

impl std::fmt::Debug for ClickHouseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redact_userinfo(&self.0))
    }
}

/// `scheme://user:pw@host/…` → `scheme://***@host/…`; text that is not
/// such a URL comes back unchanged up to its authority.
pub fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***{}{tail}", &authority[at..]),
        None => url.to_string(),
    }
}

pub struct GeoSettings {
    pub path: Option<PathBuf>,
    pub path_v6: Option<PathBuf>,
    /// Configured files that were not found.
    pub missing: Vec<String>,
    pub db: Arc<GeoDb>,
}

impl std::fmt::Debug for GeoSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoSettings")
            .field("path", &self.path)
            .field("path_v6", &self.path_v6)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct SiteSettings {
    pub id: String,
    pub hostnames: Vec<String>,
    pub timezone: Tz,
    pub language: String,
    pub retention_months: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub geo_level: GeoLevel,
    pub consent_mode: ConsentMode,
    pub on_denied: OnDenied,
    pub on_opt_out: OnOptOut,
    pub honour_gpc: bool,
    pub honour_dnt: bool,
    pub query_params: Vec<String>,
    pub collect_campaigns: bool,
    pub hash_routing: bool,
    pub event_names: HashSet<String>,
    pub prop_keys: HashSet<String>,
    pub k_threshold: u32,
    pub opt_out_url: Option<String>,
    /// What counts as a conversion, in the configuration's order.
    pub goals: Vec<Goal>,
    /// Steps are indices into `goals`.
    pub funnels: Vec<Funnel>,
    /// Keys the rounding of this site's protected answers: from the
    /// configured `query.rounding_key`, or from the installation's stored
    /// secret once it is read (`None` until then; the stats API and the
    /// export refuse to answer for the site meanwhile).
    pub rounding_key: Option<RoundingKey>,
    /// The other trackers' site ids whose hits count for this site.
    pub trackers: Vec<TrackerId>,
}

impl SiteSettings {
    /// The key this site's protected answers are rounded with. A site whose
    /// key is not read yet never reaches a rounding (`query::Api::asked`
    /// and `tamis export` refuse it first); should one ever, it gets a key
    /// drawn at random for this process, which nobody can guess and which
    /// no answer is ever published with knowingly.
    pub fn rounding_key(&self) -> &RoundingKey {
        static UNREAD: std::sync::LazyLock<RoundingKey> =
            std::sync::LazyLock::new(|| RoundingKey(*RoundingSecret::generate().as_bytes()));
        self.rounding_key.as_ref().unwrap_or(&UNREAD)
    }
}

/// A site as another analytics product's tracker names it: tamis accepts
/// those trackers' hits unchanged (`ingest::umami`, `ga4`, `matomo`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrackerId {
    /// Umami's `website`, a UUID, lower-cased.
    Umami(String),
    /// Google Analytics 4's measurement id (`tid`), upper-cased: `G-…`.
    Ga4(String),
    /// Matomo's `idsite`.
    Matomo(u32),
}

impl TrackerId {
    /// The config key that sets it.
    pub fn key(&self) -> &'static str {
        match self {
            TrackerId::Umami(_) => "umami_website_id",
            TrackerId::Ga4(_) => "ga4_measurement_id",
            TrackerId::Matomo(_) => "matomo_site_id",
        }
    }

    /// An Umami website id as the tracker sends it, if it is a UUID.
    pub fn umami(id: &str) -> Option<TrackerId> {
        let id = id.trim().to_ascii_lowercase();
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        (groups == [8, 4, 4, 4, 12] && id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()))
            .then_some(TrackerId::Umami(id))
    }

    /// A GA4 measurement id (`G-` and letters or digits).
    pub fn ga4(id: &str) -> Option<TrackerId> {
        let id = id.trim().to_ascii_uppercase();
        let rest = id.strip_prefix("G-")?;
        (!rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then_some(TrackerId::Ga4(id))
    }

    /// A Matomo `idsite`: a positive integer.
    pub fn matomo(id: &str) -> Option<TrackerId> {
        id.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .map(TrackerId::Matomo)
    }
}

#[derive(Clone)]
pub struct TokenSettings {
    pub name: String,
    pub secret_sha256: [u8; 32],
    pub sites: Vec<String>,
    pub admin: bool,
    pub disclosure: Disclosure,
}

impl std::fmt::Debug for TokenSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSettings")
            .field("name", &self.name)
            .field("secret_sha256", &"<redacted>")
            .field("sites", &self.sites)
            .field("admin", &self.admin)
            .field("disclosure", &self.disclosure)
            .finish()
    }
}

impl Settings {
    /// Relative file paths are resolved against the working directory first,
    /// then against `base` (the config file's folder).
    pub fn from_config(config: Config, base: &Path) -> Result<Settings, ConfigError> {
        let server = ServerSettings {
            listen: config.server.listen.parse().map_err(|_| {
                invalid(
                    "server.listen",
                    format!("`{}` is not an address:port", config.server.listen),
                )
            })?,
            admin_listen: config.server.admin_listen.parse().map_err(|_| {
                invalid(
                    "server.admin_listen",
                    format!("`{}` is not an address:port", config.server.admin_listen),
                )
            })?,
            trusted_proxies: config
                .server
                .trusted_proxies
                .iter()
                .enumerate()
                .map(|(i, net)| {
                    parse_net(net).ok_or_else(|| {
                        invalid(
                            format!("server.trusted_proxies[{i}]"),
                            format!("`{net}` is not an IP network such as 10.0.0.0/8"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            queue_capacity: positive("server.queue_capacity", config.server.queue_capacity)?,
            cors_allow_origin: AllowedOrigins::parse(&config.server.cors_allow_origin)
                .map_err(|problem| invalid("server.cors_allow_origin", problem))?,
            max_connections: positive("server.max_connections", config.server.max_connections)?,
            public_url: config
                .server
                .public_url
                .as_deref()
                .map(public_url)
                .transpose()
                .map_err(|problem| invalid("server.public_url", problem))?,
            idle_timeout: {
                let ms = config.server.idle_timeout_ms;
                if !(100..=600_000).contains(&ms) {
                    return Err(invalid(
                        "server.idle_timeout_ms",
                        "must be between 100 and 600000",
                    ));
                }
                Duration::from_millis(ms)
            },
            shutdown_timeout: {
                let ms = config.server.shutdown_timeout_ms;
                if !(100..=600_000).contains(&ms) {
                    return Err(invalid(
                        "server.shutdown_timeout_ms",
                        "must be between 100 and 600000",
                    ));
                }
                Duration::from_millis(ms)
            },
            shutdown_grace: {
                let ms = config.server.shutdown_grace_ms;
                if ms * 2 > config.server.shutdown_timeout_ms {
                    return Err(invalid(
                        "server.shutdown_grace_ms",
                        "must be at most half of server.shutdown_timeout_ms",
                    ));
                }
                Duration::from_millis(ms)
            },
        };
        if server.admin_listen == server.listen && server.listen.port() != 0 {
            return Err(invalid(
                "server.admin_listen",
                "must differ from server.listen: the operators' endpoints are served apart",
            ));
        }
        if config.storage.log_dir.trim().is_empty() {
            return Err(invalid("storage.log_dir", "must name a folder"));
        }
        if config.storage.log_max_bytes < 64 * 1024 {
            return Err(invalid(
                "storage.log_max_bytes",
                "must be at least 65536 (64 KiB)",
            ));
        }
        // Relative to the working directory, like every path tamis writes.
        let storage = StorageSettings {
            log_dir: PathBuf::from(config.storage.log_dir),
            log_max_bytes: config.storage.log_max_bytes,
            fsync: config.storage.fsync,
        };
        let clickhouse = clickhouse_settings(config.clickhouse)?;
        // A configured file that does not exist turns geolocation off with
        // a warning (the reference config names files that `deploy/setup.sh`
        // may not have been able to install); a file that exists but cannot
        // be read is an error.
        let mut missing = Vec::new();
        let mut existing = |key: &str, p: Option<String>| {
            let path = resolve(&p?, base);
            if path.exists() {
                Some(path)
            } else {
                missing.push(format!("{key} = {}", path.display()));
                None
            }
        };
        let path = existing("geoip.path", config.geoip.path);
        let path_v6 = existing("geoip.path_v6", config.geoip.path_v6);
        let db = GeoDb::open(path.as_deref(), path_v6.as_deref())
            .map_err(|e| invalid("geoip.path", e.to_string()))?;
        let geo = GeoSettings {
            path,
            path_v6,
            missing,
            db: Arc::new(db),
        };

        if config.sites.is_empty() {
            return Err(invalid("site", "at least one [[site]] is required"));
        }
        let secret = rounding_secret(config.query.rounding_key.as_ref().map(|k| k.0.as_str()))?;
        let mut sites = Vec::with_capacity(config.sites.len());
        for (i, site) in config.sites.into_iter().enumerate() {
            let site = site_settings(i, site, secret.as_ref())?;
            if sites.iter().any(|s: &Arc<SiteSettings>| s.id == site.id) {
                return Err(invalid(
                    format!("site[{i}].id"),
                    format!("`{}` is configured twice", site.id),
                ));
            }
            for tracker in &site.trackers {
                if let Some(other) = sites.iter().find(|s| s.trackers.contains(tracker)) {
                    return Err(invalid(
                        format!("site[{i}].{}", tracker.key()),
                        format!("is already the id of site `{}`", other.id),
                    ));
                }
            }
            sites.push(Arc::new(site));
        }
        let mut tokens = Vec::with_capacity(config.tokens.len());
        for (i, token) in config.tokens.into_iter().enumerate() {
            let key = |field: &str| format!("token[{i}].{field}");
            if token.name.trim().is_empty() {
                return Err(invalid(key("name"), "must not be empty"));
            }
            // A token's name keys its running queries and names it in the
            // audit log, where a shared link's reads are `share:<id>`.
            if token.name.starts_with(crate::share::ACTOR_PREFIX) {
                return Err(invalid(
                    key("name"),
                    format!(
                        "must not start with `{}` (shared links' reads are named so in the audit log)",
                        crate::share::ACTOR_PREFIX
                    ),
                ));
            }
            if tokens.iter().any(|t: &TokenSettings| t.name == token.name) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is the name of another token", token.name),
                ));
            }
            let secret_sha256 = parse_sha256(&token.secret_sha256).ok_or_else(|| {
                invalid(
                    key("secret_sha256"),
                    "must be 64 hexadecimal characters (the SHA-256 of the token)",
                )
            })?;
            for site in &token.sites {
                if !sites.iter().any(|s| &s.id == site) {
                    return Err(invalid(
                        key("sites"),
                        format!("`{site}` is not a configured site id"),
                    ));
                }
            }
            tokens.push(TokenSettings {
                name: token.name,
                secret_sha256,
                sites: token.sites,
                admin: token.admin,
                disclosure: token.disclosure,
            });
        }
        if config.audit.retention_months == 0 {
            return Err(invalid("audit.retention_months", "must be at least 1"));
        }
        let organization = organization_settings(config.organization)?;
        let rounding_key_configured = config.query.rounding_key.is_some();
        let query = query_settings(config.query)?;
        Ok(Settings {
            server,
            clickhouse,
            storage,
            geo,
            sites,
            tokens,
            organization,
            audit_retention_months: config.audit.retention_months,
            rounding_key_configured,
            query,
        })
    }

    pub fn site(&self, id: &str) -> Option<&Arc<SiteSettings>> {
        self.sites.iter().find(|s| s.id == id)
    }

    /// Keys the rounding of every site with the installation's stored
    /// secret (sites keyed with another secret before are keyed anew).
    /// Does nothing when `query.rounding_key` is configured, which wins.
    pub fn use_installation_secret(&mut self, secret: &RoundingSecret) {
        if self.rounding_key_configured {
            return;
        }
        // Every site, keyed already or not: the secret may be a new one
        // (the earliest stored, found after another was read).
        let site_secret = secret.site_secret();
        for site in &mut self.sites {
            let key = site_rounding_key(&site_secret, &site.id);
            if site.rounding_key.as_ref() != Some(&key) {
                let mut keyed = SiteSettings::clone(site);
                keyed.rounding_key = Some(key);
                *site = Arc::new(keyed);
            }
        }
    }

    /// Whether some site still waits for the installation's secret.
    pub fn needs_installation_secret(&self) -> bool {
        self.sites.iter().any(|s| s.rounding_key.is_none())
    }
}

fn query_settings(q: QueryConfig) -> Result<QuerySettings, ConfigError> {
    // Zero means "no limit" to ClickHouse: refused, so every stats query
    // stays bounded.
    for (key, value) in [
        ("query.max_execution_time", q.max_execution_time),
        ("query.max_memory_usage", q.max_memory_usage),
        ("query.max_result_rows", q.max_result_rows),
        ("query.timeout_ms", q.timeout_ms.unwrap_or(1)),
        (
            "query.max_running_per_token",
            q.max_running_per_token as u64,
        ),
        ("query.max_running_per_link", q.max_running_per_link as u64),
        ("query.max_running", q.max_running as u64),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be at least 1"));
        }
    }
    let timeout_ms = q.timeout_ms.unwrap_or(
        q.max_execution_time
            .saturating_mul(1000)
            .saturating_add(2000),
    );
    Ok(QuerySettings {
        max_execution_time_secs: q.max_execution_time,
        max_memory_usage: q.max_memory_usage,
        max_result_rows: q.max_result_rows,
        timeout: Duration::from_millis(timeout_ms),
        max_running_per_token: q.max_running_per_token,
        max_running_per_link: q.max_running_per_link,
        max_running: q.max_running,
        pushdown: q.pushdown,
    })
}

fn clickhouse_settings(c: ClickHouseConfig) -> Result<ClickHouseSettings, ConfigError> {
    let cluster = cluster_settings(c.cluster, &c.urls)?;
    let url = match (&c.url, &cluster) {
        (Some(url), _) => http_url("clickhouse.url", url)?,
        (None, Some(cluster)) => cluster.nodes[0].clone(),
        (None, None) => http_url("clickhouse.url", &super::file::default_clickhouse_url())?,
    };
    if !is_identifier(&c.database) {
        return Err(invalid(
            "clickhouse.database",
            format!(
                "`{}` must be letters, digits and underscores, not starting with a digit",
                c.database
            ),
        ));
    }
    if !(10..=60_000).contains(&c.flush_interval_ms) {
        return Err(invalid(
            "clickhouse.flush_interval_ms",
            "must be between 10 and 60000",
        ));
    }
    // One group of a batch is one ClickHouse block (below its
    // `max_insert_block_size` of 1,048,576 rows), and its steps fit below a
    // delivery mark's record number (sink::writer::SHIFT).
    if !(1..=1_000_000).contains(&c.batch_rows) {
        return Err(invalid(
            "clickhouse.batch_rows",
            "must be between 1 and 1000000",
        ));
    }
    Ok(ClickHouseSettings {
        url,
        database: c.database,
        user: c.user,
        password: c.password.0,
        batch_rows: c.batch_rows,
        flush_interval: Duration::from_millis(c.flush_interval_ms),
        timeout: Duration::from_millis(
            positive("clickhouse.timeout_ms", c.timeout_ms as usize)? as u64
        ),
        cluster,
    })
}

/// A ClickHouse HTTP URL, without its trailing slash.
fn http_url(key: &str, text: &str) -> Result<ClickHouseUrl, ConfigError> {
    let url = ClickHouseUrl::new(text.trim_end_matches('/'));
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(
            key,
            format!("`{url}` must start with http:// or https://"),
        ));
    }
    Ok(url)
}

/// `cluster` and `urls` come together: a cluster is reached through its
/// nodes, and nodes without a cluster name would make tables no
/// `Distributed` table can name.
fn cluster_settings(
    name: Option<String>,
    urls: &[String],
) -> Result<Option<ClusterSettings>, ConfigError> {
    let Some(name) = name else {
        if urls.is_empty() {
            return Ok(None);
        }
        return Err(invalid(
            "clickhouse.cluster",
            "must name the cluster (its name in <remote_servers>) when clickhouse.urls is set",
        ));
    };
    // Written unquoted into `Distributed(…)`.
    if !is_identifier(&name) {
        return Err(invalid(
            "clickhouse.cluster",
            format!("`{name}` must be letters, digits and underscores, not starting with a digit"),
        ));
    }
    if urls.is_empty() {
        return Err(invalid(
            "clickhouse.urls",
            "must list every node's HTTP URL when clickhouse.cluster is set",
        ));
    }
    let mut nodes: Vec<ClickHouseUrl> = Vec::with_capacity(urls.len());
    for (i, text) in urls.iter().enumerate() {
        let node = http_url(&format!("clickhouse.urls[{i}]"), text)?;
        if nodes.contains(&node) {
            return Err(invalid(
                format!("clickhouse.urls[{i}]"),
                format!("`{node}` is listed twice"),
            ));
        }
        nodes.push(node);
    }
    Ok(Some(ClusterSettings { name, nodes }))
}

fn organization_settings(o: OrganizationConfig) -> Result<OrganizationSettings, ConfigError> {
    // Blank values are the same as absent ones; every value is one line of
    // plain text (it is printed in Markdown and HTML notices).
    let text = |key: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        let Some(v) = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if v.chars().any(char::is_control) || v.len() > 300 {
            return Err(invalid(
                format!("organization.{key}"),
                "must be one line of at most 300 characters",
            ));
        }
        Ok(Some(v))
    };
    let website = text("website", o.website)?;
    if let Some(w) = &website {
        if !(w.starts_with("https://") || w.starts_with("http://")) {
            return Err(invalid(
                "organization.website",
                format!("`{w}` must start with https:// or http://"),
            ));
        }
    }
    let email = text("privacy_officer_email", o.privacy_officer_email)?;
    if let Some(e) = &email {
        if !e.contains('@') || e.contains(char::is_whitespace) {
            return Err(invalid(
                "organization.privacy_officer_email",
                format!("`{e}` is not an e-mail address"),
            ));
        }
    }
    let name = text("name", o.name)?;
    Ok(OrganizationSettings {
        address: text("address", o.address)?,
        website,
        privacy_officer: text("privacy_officer", o.privacy_officer)?,
        privacy_officer_email: email,
        privacy_officer_phone: text("privacy_officer_phone", o.privacy_officer_phone)?,
        hosting_operator: text("hosting_operator", o.hosting_operator)?.or_else(|| name.clone()),
        hosting_location: text("hosting_location", o.hosting_location)?,
        hosting_in_quebec: o.hosting_in_quebec,
        name,
    })
}

fn site_settings(
    i: usize,
    s: SiteConfig,
    secret: Option<&[u8; 32]>,
) -> Result<SiteSettings, ConfigError> {
    let key = |field: &str| format!("site[{i}].{field}");
    let id = s.id.trim().to_ascii_lowercase();
    if id.is_empty() || id.len() > 253 || id.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(invalid(
            key("id"),
            format!("`{}` must be a domain-like name such as example.org", s.id),
        ));
    }
    let timezone: Tz = s.timezone.parse().map_err(|_| {
        invalid(
            key("timezone"),
            format!(
                "`{}` is not an IANA time zone such as America/Toronto",
                s.timezone
            ),
        )
    })?;
    if !matches!(s.language.as_str(), "fr" | "en") {
        return Err(invalid(
            key("language"),
            format!("`{}` must be fr or en", s.language),
        ));
    }
    if s.ipv4_prefix > MAX_V4_PREFIX {
        return Err(invalid(
            key("ipv4_prefix"),
            format!(
                "{} keeps too much of the address: at most /{MAX_V4_PREFIX}",
                s.ipv4_prefix
            ),
        ));
    }
    if s.ipv6_prefix > MAX_V6_PREFIX {
        return Err(invalid(
            key("ipv6_prefix"),
            format!(
                "{} keeps too much of the address: at most /{MAX_V6_PREFIX}",
                s.ipv6_prefix
            ),
        ));
    }
    if s.retention_months == 0 {
        return Err(invalid(key("retention_months"), "must be at least 1"));
    }
    if s.k_threshold == 0 {
        return Err(invalid(key("k_threshold"), "must be at least 1"));
    }
    let mut hostnames: Vec<String> = s
        .hostnames
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    if hostnames.is_empty() {
        hostnames.push(id.clone());
    }
    if let Some(bad) = hostnames
        .iter()
        .find(|h| h.is_empty() || h.contains('/') || h.contains(':'))
    {
        return Err(invalid(
            key("hostnames"),
            format!("`{bad}` is not a bare host name"),
        ));
    }
    let opt_out_url = s
        .opt_out_url
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    if let Some(u) = &opt_out_url {
        if !(u.starts_with("https://") || u.starts_with("http://"))
            || u.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                key("opt_out_url"),
                format!("`{u}` must be an http(s) URL"),
            ));
        }
    }
    let names = |field: &str, list: Vec<String>| -> Result<HashSet<String>, ConfigError> {
        list.into_iter()
            .map(|n| {
                if n.is_empty() || n.len() > 64 {
                    Err(invalid(
                        key(field),
                        format!("`{n}` must be 1 to 64 characters"),
                    ))
                } else if field == "event_names" && n == crate::sink::rows::DELIVERY_MARK {
                    Err(invalid(
                        key(field),
                        format!("`{n}` is reserved for tamis's delivery marks"),
                    ))
                } else {
                    Ok(n)
                }
            })
            .collect()
    };
    let event_names = names("event_names", s.event_names)?;
    let goals = goals(&key, s.goals, &event_names)?;
    let funnels = funnels(&key, s.funnels, &goals)?;
    let mut trackers = Vec::new();
    if let Some(id) = s.umami_website_id {
        trackers.push(TrackerId::umami(&id).ok_or_else(|| {
            invalid(
                key("umami_website_id"),
                format!("`{id}` is not an Umami website id (a UUID)"),
            )
        })?);
    }
    if let Some(id) = s.ga4_measurement_id {
        trackers.push(TrackerId::ga4(&id).ok_or_else(|| {
            invalid(
                key("ga4_measurement_id"),
                format!("`{id}` is not a GA4 measurement id such as G-XXXXXXX"),
            )
        })?);
    }
    if let Some(id) = s.matomo_site_id {
        trackers.push(
            TrackerId::matomo(&id.to_string())
                .ok_or_else(|| invalid(key("matomo_site_id"), "must be at least 1"))?,
        );
    }
    Ok(SiteSettings {
        trackers,
        hostnames,
        timezone,
        language: s.language,
        retention_months: s.retention_months,
        ipv4_prefix: s.ipv4_prefix,
        ipv6_prefix: s.ipv6_prefix,
        geo_level: s.geo_level,
        consent_mode: s.consent_mode,
        on_denied: s.on_denied,
        on_opt_out: s.on_opt_out,
        honour_gpc: s.honour_gpc,
        honour_dnt: s.honour_dnt,
        query_params: names("query_params", s.query_params)?.into_iter().collect(),
        collect_campaigns: s.collect_campaigns,
        hash_routing: s.hash_routing,
        event_names,
        prop_keys: names("prop_keys", s.prop_keys)?,
        k_threshold: s.k_threshold,
        opt_out_url,
        goals,
        funnels,
        rounding_key: secret.map(|secret| site_rounding_key(secret, &id)),
        id,
    })
}

/// A site's goals: each one event or one page, named once, and an event
/// goal only for an event the site accepts (any other is dropped at
/// ingestion, so the goal could never be reached).
fn goals(
    key: &dyn Fn(&str) -> String,
    list: Vec<GoalConfig>,
    event_names: &HashSet<String>,
) -> Result<Vec<Goal>, ConfigError> {
    if list.len() > MAX_GOALS {
        return Err(invalid(
            key("goal"),
            format!("at most {MAX_GOALS} goals per site"),
        ));
    }
    let mut goals: Vec<Goal> = Vec::with_capacity(list.len());
    for (i, g) in list.into_iter().enumerate() {
        let at = |field: &str| key(&format!("goal[{i}].{field}"));
        let goal = match (&g.event, &g.page) {
            (Some(event), None) => {
                if !event_names.contains(event) {
                    return Err(invalid(
                        at("event"),
                        format!("`{event}` is not in event_names: add it there, or tamis drops it and the goal is never reached"),
                    ));
                }
                Goal::event(event, g.name.as_deref()).map_err(|e| invalid(at("event"), e))?
            }
            (None, Some(page)) => {
                Goal::page(page, g.name.as_deref()).map_err(|e| invalid(at("page"), e))?
            }
            _ => {
                return Err(invalid(
                    key(&format!("goal[{i}]")),
                    "give exactly one of `event` (a custom event's name) or `page` (a path, * for any characters)",
                ))
            }
        };
        if goals.iter().any(|other| other.name == goal.name) {
            return Err(invalid(
                at("name"),
                format!("`{}` names two goals: give each its own name", goal.name),
            ));
        }
        goals.push(goal);
    }
    Ok(goals)
}

/// A site's funnels: 2 to 8 steps, each a goal by its name, none twice.
fn funnels(
    key: &dyn Fn(&str) -> String,
    list: Vec<FunnelConfig>,
    goals: &[Goal],
) -> Result<Vec<Funnel>, ConfigError> {
    let mut funnels: Vec<Funnel> = Vec::with_capacity(list.len());
    for (i, f) in list.into_iter().enumerate() {
        let at = |field: &str| key(&format!("funnel[{i}].{field}"));
        let name = f.name.trim().to_string();
        if name.is_empty()
            || name.chars().count() > crate::goal::MAX_NAME
            || name.chars().any(char::is_control)
        {
            return Err(invalid(
                at("name"),
                format!(
                    "must be 1 to {} printable characters",
                    crate::goal::MAX_NAME
                ),
            ));
        }
        if funnels.iter().any(|other| other.name == name) {
            return Err(invalid(at("name"), format!("`{name}` names two funnels")));
        }
        if !FUNNEL_STEPS.contains(&f.steps.len()) {
            return Err(invalid(
                at("steps"),
                format!(
                    "a funnel has {} to {} steps, not {}",
                    FUNNEL_STEPS.start(),
                    FUNNEL_STEPS.end(),
                    f.steps.len()
                ),
            ));
        }
        let mut steps = Vec::with_capacity(f.steps.len());
        for step in &f.steps {
            let Some(at_goal) = goals.iter().position(|g| &g.name == step) else {
                return Err(invalid(
                    at("steps"),
                    format!("`{step}` is not the name of one of this site's goals"),
                ));
            };
            if steps.contains(&at_goal) {
                return Err(invalid(at("steps"), format!("`{step}` is a step twice")));
            }
            steps.push(at_goal);
        }
        funnels.push(Funnel { name, steps });
    }
    Ok(funnels)
}

fn positive(key: &str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(n)
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 64
}

fn resolve(p: &str, base: &Path) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() || path.exists() {
        path
    } else {
        base.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[site]]
        id = "example.org"
    "#;

    fn check(toml_text: &str, expected_error: Option<&str>) {
        let config: Config = toml::from_str(toml_text).expect("parses");
        match (
            Settings::from_config(config, Path::new(".")),
            expected_error,
        ) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => {
                assert!(e.to_string().contains(want), "{e} does not mention {want}")
            }
            (Ok(_), Some(want)) => panic!("accepted, expected error about {want}"),
            (Err(e), None) => panic!("rejected: {e}"),
        }
    }

    #[test]
    fn validation_names_the_key() {
        check(MINIMAL, None);
        check(
            "[[site]]\nid='a.org'\nipv4_prefix=32",
            Some("site[0].ipv4_prefix"),
        );
        check(
            "[[site]]\nid='a.org'\nipv6_prefix=64",
            Some("site[0].ipv6_prefix"),
        );
        check("[[site]]\nid='a.org'\nipv4_prefix=16\nipv6_prefix=32", None);
        check(
            "[[site]]\nid='a.org'\ntimezone='Mars/Olympus'",
            Some("site[0].timezone"),
        );
        check(
            "[server]\nlisten='nowhere'\n[[site]]\nid='a.org'",
            Some("server.listen"),
        );
        check(
            "[server]\ntrusted_proxies=['10.0.0.0/33']\n[[site]]\nid='a.org'",
            Some("server.trusted_proxies[0]"),
        );
        check(
            "[clickhouse]\ndatabase='x; DROP'\n[[site]]\nid='a.org'",
            Some("clickhouse.database"),
        );
        // A cluster comes with every node's URL, and the other way round.
        let nodes = "urls=['http://127.0.0.1:8123/','http://127.0.0.1:8124']";
        check(
            &format!("[clickhouse]\ncluster='tamis'\n{nodes}\n[[site]]\nid='a.org'"),
            None,
        );
        check(
            "[clickhouse]\ncluster='tamis'\n[[site]]\nid='a.org'",
            Some("clickhouse.urls"),
        );
        check(
            &format!("[clickhouse]\n{nodes}\n[[site]]\nid='a.org'"),
            Some("clickhouse.cluster"),
        );
        check(
            &format!("[clickhouse]\ncluster='my cluster'\n{nodes}\n[[site]]\nid='a.org'"),
            Some("clickhouse.cluster"),
        );
        check(
            "[clickhouse]\ncluster='tamis'\nurls=['http://127.0.0.1:8123','127.0.0.1:8124']\n[[site]]\nid='a.org'",
            Some("clickhouse.urls[1]"),
        );
        check(
            "[clickhouse]\ncluster='tamis'\nurls=['http://127.0.0.1:8123','http://127.0.0.1:8123/']\n[[site]]\nid='a.org'",
            Some("clickhouse.urls[1]"),
        );
        // `url` is not needed on a cluster, and need not be a node: reads
        // go through the nodes of `urls`.
        check(
            &format!("[clickhouse]\nurl='http://10.0.0.1:8123'\ncluster='tamis'\n{nodes}\n[[site]]\nid='a.org'"),
            None,
        );
        check(
            &format!(
                "[clickhouse]\nurl='10.0.0.1:8123'\ncluster='tamis'\n{nodes}\n[[site]]\nid='a.org'"
            ),
            Some("clickhouse.url"),
        );
        check(
            "[[site]]\nid='a.org'\n[[site]]\nid='a.org'",
            Some("site[1].id"),
        );
        check(
            "[[site]]\nid='a.org'\n[[token]]\nname='t'\nsecret_sha256='abc'\nsites=['a.org']",
            Some("token[0].secret_sha256"),
        );
        check(
            &format!(
                "[[site]]\nid='a.org'\n[[token]]\nname='t'\nsecret_sha256='{}'\nsites=['b.org']",
                "0".repeat(64)
            ),
            Some("token[0].sites"),
        );
        let token = |name: &str| {
            format!(
                "[[token]]\nname='{name}'\nsecret_sha256='{}'\nsites=['a.org']\n",
                "0".repeat(64)
            )
        };
        check(
            &format!("[[site]]\nid='a.org'\n{}", token("share:x")),
            Some("token[0].name"),
        );
        check(
            &format!("[[site]]\nid='a.org'\n{}{}", token("t"), token("t")),
            Some("token[1].name"),
        );
        check(
            &format!("[[site]]\nid='a.org'\n{}{}", token("t"), token("shared")),
            None,
        );
        check("", Some("at least one [[site]]"));
        check(
            "[server]\ncors_allow_origin='example.org'\n[[site]]\nid='a.org'",
            Some("server.cors_allow_origin"),
        );
        for bad in [
            "stats.example.org",
            "ftp://stats.example.org",
            "https://stats.example.org/?a=b",
            "https://stats.example.org/#x",
            "https://user@stats.example.org",
        ] {
            check(
                &format!("[server]\npublic_url='{bad}'\n[[site]]\nid='a.org'"),
                Some("server.public_url"),
            );
        }
        check(
            "[server]\ncors_allow_origin='https://example.org, https://other.org'\n[[site]]\nid='a.org'",
            None,
        );
        check(
            "[server]\nmax_connections=0\n[[site]]\nid='a.org'",
            Some("server.max_connections"),
        );
        check(
            "[server]\nidle_timeout_ms=10\n[[site]]\nid='a.org'",
            Some("server.idle_timeout_ms"),
        );
        check(
            "[server]\nadmin_listen='everywhere'\n[[site]]\nid='a.org'",
            Some("server.admin_listen"),
        );
        check(
            "[server]\nlisten='127.0.0.1:8080'\nadmin_listen='127.0.0.1:8080'\n[[site]]\nid='a.org'",
            Some("server.admin_listen"),
        );
        for key in [
            "max_execution_time",
            "max_memory_usage",
            "max_result_rows",
            "timeout_ms",
            "max_running_per_token",
            "max_running_per_link",
            "max_running",
        ] {
            check(
                &format!("[query]\n{key}=0\n[[site]]\nid='a.org'"),
                Some(&format!("query.{key}")),
            );
        }
    }

    #[test]
    fn the_public_url_loses_its_trailing_slash_and_keeps_its_path() {
        for (given, kept) in [
            ("https://stats.example.org/", "https://stats.example.org"),
            ("https://example.org/stats/", "https://example.org/stats"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            let text = format!("[server]\npublic_url='{given}'\n{MINIMAL}");
            let settings =
                Settings::from_config(toml::from_str(&text).unwrap(), Path::new(".")).unwrap();
            assert_eq!(settings.server.public_url.as_deref(), Some(kept));
        }
    }

    #[test]
    fn query_bounds_default_and_the_timeout_follows_clickhouse_s() {
        let settings =
            Settings::from_config(toml::from_str(MINIMAL).unwrap(), Path::new(".")).unwrap();
        let q = &settings.query;
        assert_eq!(
            (
                q.max_execution_time_secs,
                q.max_memory_usage,
                q.max_result_rows
            ),
            (10, 1 << 30, 1_000_000)
        );
        assert_eq!(q.timeout, Duration::from_secs(12));
        assert_eq!(
            (
                q.max_running_per_token,
                q.max_running_per_link,
                q.max_running,
                q.pushdown
            ),
            (4, 8, 16, true)
        );
        let text = "[query]\nmax_execution_time=30\n[[site]]\nid='a.org'";
        let settings =
            Settings::from_config(toml::from_str(text).unwrap(), Path::new(".")).unwrap();
        assert_eq!(settings.query.timeout, Duration::from_secs(32));
    }

    /// Issue 12, point 14: `ClickHouseSettings` printed its password in
    /// `Debug`, and the URL (which may carry credentials) was logged.
    #[test]
    fn clickhouse_credentials_are_redacted() {
        let mut config: Config = toml::from_str(MINIMAL).unwrap();
        config.clickhouse.url = Some("https://tamis:hunter2@ch.example:8443/".into());
        config.clickhouse.password = "s3cret-pw".into();
        // A cluster's node URLs print the same way.
        config.clickhouse.cluster = Some("tamis".into());
        config.clickhouse.urls = vec![
            "https://tamis:hunter2@ch.example:8443/".into(),
            "https://tamis:hunter2@ch2.example:8443/".into(),
        ];
        config.query.rounding_key = Some("a-rounding-key-of-at-least-32-characters".into());
        // The file's own structure prints neither the password, the key
        // nor the URLs' credentials.
        let file = format!("{config:?}");
        assert!(!file.contains("s3cret-pw"), "{file}");
        assert!(!file.contains("a-rounding-key"), "{file}");
        assert!(!file.contains("hunter2"), "{file}");
        assert!(file.contains("https://***@ch2.example:8443/"), "{file}");
        let settings = Settings::from_config(config, Path::new(".")).unwrap();
        let ch = &settings.clickhouse;
        assert!(format!("{ch:?}").contains("https://***@ch2.example:8443"));
        for printed in [
            format!("{ch:?}"),
            format!("{:?}", settings),
            ch.url.to_string(),
        ] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("s3cret-pw"), "{printed}");
            assert!(!printed.contains("tamis:"), "{printed}");
        }
        assert_eq!(ch.url.to_string(), "https://***@ch.example:8443");
        assert_eq!(ch.url.as_str(), "https://tamis:hunter2@ch.example:8443");
        assert_eq!(
            String::from(&ch.url),
            "https://tamis:hunter2@ch.example:8443"
        );
        for (url, printed) in [
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            ("http://u@h/p?q=a@b", "http://***@h/p?q=a@b"),
            ("http://u:p@w@h:1", "http://***@h:1"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_userinfo(url), printed, "{url}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("[[site]]\nid='a.org'\nipv4_prefx=16").unwrap_err();
        assert!(err.to_string().contains("ipv4_prefx"), "{err}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config: Config = toml::from_str(MINIMAL).unwrap();
        config.apply_env(|name| match name {
            "TAMIS_LISTEN" => Some("127.0.0.1:9999".into()),
            "TAMIS_CLICKHOUSE_URL" => Some("http://10.1.2.3:8123".into()),
            "TAMIS_CLICKHOUSE_DATABASE" => Some("other".into()),
            "TAMIS_GEOIP_PATH" => Some("".into()),
            _ => None,
        });
        let settings = Settings::from_config(config, Path::new(".")).unwrap();
        assert_eq!(settings.server.listen.port(), 9999);
        assert_eq!(settings.clickhouse.url.as_str(), "http://10.1.2.3:8123");
        assert_eq!(settings.clickhouse.database, "other");
        assert!(settings.geo.path.is_none());
    }

    #[test]
    fn url_defaults_to_the_local_server_or_the_first_node_of_a_cluster() {
        let url = |text: &str| {
            let config: Config = toml::from_str(text).unwrap();
            Settings::from_config(config, Path::new("."))
                .unwrap()
                .clickhouse
                .url
                .as_str()
                .to_string()
        };
        assert_eq!(url(MINIMAL), "http://127.0.0.1:8123");
        assert_eq!(
            url("[clickhouse]\ncluster='tamis'\nurls=['http://ch3:8123/','http://ch1:8123']\n[[site]]\nid='a.org'"),
            "http://ch3:8123"
        );
        assert_eq!(
            url("[clickhouse]\nurl='http://ch9:8123'\ncluster='tamis'\nurls=['http://ch3:8123']\n[[site]]\nid='a.org'"),
            "http://ch9:8123"
        );
    }

    #[test]
    fn the_cluster_name_comes_from_the_environment_too() {
        let text = "[clickhouse]\nurls=['http://127.0.0.1:8123','http://127.0.0.1:8124']\n[[site]]\nid='a.org'";
        let load = |cluster: Option<&str>| {
            let mut config: Config = toml::from_str(text).unwrap();
            config.apply_env(|name| {
                (name == "TAMIS_CLICKHOUSE_CLUSTER")
                    .then(|| cluster.map(str::to_string))
                    .flatten()
            });
            Settings::from_config(config, Path::new("."))
        };
        let cluster = load(Some("tamis")).unwrap().clickhouse.cluster.unwrap();
        assert_eq!(cluster.name, "tamis");
        assert_eq!(
            cluster.nodes,
            [
                ClickHouseUrl::new("http://127.0.0.1:8123"),
                ClickHouseUrl::new("http://127.0.0.1:8124")
            ]
        );
        // Empty is unset: the URLs then name no cluster.
        let err = load(Some("")).unwrap_err().to_string();
        assert!(err.contains("clickhouse.cluster"), "{err}");
    }

    #[test]
    fn privacy_defaults_follow_privacy_md() {
        let config: Config = toml::from_str(MINIMAL).unwrap();
        let settings = Settings::from_config(config, Path::new(".")).unwrap();
        let site = &settings.sites[0];
        assert_eq!((site.ipv4_prefix, site.ipv6_prefix), (24, 48));
        assert_eq!(site.geo_level, GeoLevel::Region);
        assert_eq!(site.consent_mode, ConsentMode::NotRequired);
        assert_eq!(site.on_denied, OnDenied::Anonymous);
        assert_eq!(site.on_opt_out, OnOptOut::Drop);
        assert!(
            !site.collect_campaigns && site.query_params.is_empty() && site.prop_keys.is_empty()
        );
        assert_eq!((site.k_threshold, site.retention_months), (5, 25));
        assert_eq!(site.timezone, chrono_tz::America::Toronto);
        assert_eq!(site.hostnames, vec!["example.org".to_string()]);
    }

    #[test]
    fn goals_and_funnels_are_checked_against_each_other() {
        let site = "[[site]]\nid='a.org'\nevent_names=['Signup']\n";
        let ok = format!(
            "{site}[[site.goal]]\nevent='Signup'\n[[site.goal]]\npage='/merci*'\nname='Merci'\n\
             [[site.funnel]]\nname='Inscription'\nsteps=['Merci','Signup']"
        );
        check(&ok, None);
        let config: Config = toml::from_str(&ok).unwrap();
        let settings = Settings::from_config(config, Path::new(".")).unwrap();
        let s = &settings.sites[0];
        assert_eq!(s.goals.len(), 2);
        assert_eq!(s.funnels[0].steps, vec![1, 0]);
        check(
            &format!("{site}[[site.goal]]\nevent='Other'"),
            Some("site[0].goal[0].event"),
        );
        check(
            &format!("{site}[[site.goal]]\nevent='Signup'\npage='/x'"),
            Some("site[0].goal[0]"),
        );
        check(
            &format!("{site}[[site.goal]]\nname='x'"),
            Some("exactly one"),
        );
        check(
            &format!(
                "{site}[[site.goal]]\npage='/a'\nname='A'\n[[site.goal]]\npage='/b'\nname='A'"
            ),
            Some("site[0].goal[1].name"),
        );
        check(
            &format!(
                "{site}[[site.goal]]\npage='/a'\n[[site.funnel]]\nname='f'\nsteps=['Visit /a']"
            ),
            Some("site[0].funnel[0].steps"),
        );
        check(
            &format!("{site}[[site.goal]]\npage='/a'\n[[site.funnel]]\nname='f'\nsteps=['Visit /a','Nope']"),
            Some("not the name of one of this site's goals"),
        );
        check(
            &format!("{site}[[site.goal]]\npage='/a'\n[[site.funnel]]\nname='f'\nsteps=['Visit /a','Visit /a']"),
            Some("is a step twice"),
        );
    }

    /// The sites' rounding keys under `toml_text`, after the stored
    /// `secret` is used.
    fn keys(toml_text: &str, secret: &RoundingSecret) -> Vec<Option<RoundingKey>> {
        let config: Config = toml::from_str(toml_text).expect("parses");
        let mut settings = Settings::from_config(config, Path::new(".")).expect("valid");
        settings.use_installation_secret(secret);
        assert!(!settings.needs_installation_secret());
        settings
            .sites
            .iter()
            .map(|s| s.rounding_key.clone())
            .collect()
    }

    /// Without `query.rounding_key` the keys wait for the stored secret and
    /// then depend on it and the site alone: tokens added or removed change
    /// nothing (they once derived the key). A configured key wins over the
    /// secret.
    #[test]
    fn rounding_keys_come_from_the_stored_secret_unless_a_key_is_configured() {
        let sites = "[[site]]\nid = 'a.org'\n[[site]]\nid = 'b.org'\n";
        let token = |name: &str, digest: char| {
            format!(
                "[[token]]\nname = '{name}'\nsecret_sha256 = '{}'\nsites = ['a.org']\n",
                digest.to_string().repeat(64)
            )
        };
        let unread: Config = toml::from_str(sites).expect("parses");
        let unread = Settings::from_config(unread, Path::new(".")).expect("valid");
        assert!(unread.needs_installation_secret());
        assert!(unread.sites.iter().all(|s| s.rounding_key.is_none()));

        let secret = RoundingSecret::from_bytes([7; 32]);
        let plain = keys(sites, &secret);
        assert!(plain.iter().all(Option::is_some));
        assert_ne!(plain[0], plain[1], "each site draws its own");
        for tokens in [
            token("x", '1'),
            token("x", '1') + &token("y", '2'),
            token("z", '3'),
        ] {
            assert_eq!(
                keys(&format!("{sites}{tokens}"), &secret),
                plain,
                "{tokens}"
            );
        }
        assert_ne!(keys(sites, &RoundingSecret::from_bytes([8; 32])), plain);

        let configured = format!("[query]\nrounding_key = '{}'\n{sites}", "k".repeat(32));
        let with_key = keys(&configured, &secret);
        assert_eq!(
            with_key,
            keys(&configured, &RoundingSecret::from_bytes([8; 32]))
        );
        assert_ne!(with_key, plain);
        assert_eq!(format!("{:?}", secret), "<redacted>");
    }
}
