//! The configuration file as the operator writes it. Lenient only where the
//! defaults of PRIVACY.md apply; unknown keys are errors so a typo never
//! silently weakens a privacy setting.

use serde::Deserialize;

use crate::privacy::geo::GeoLevel;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
    #[serde(default)]
    pub geoip: GeoIpConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteConfig>,
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// Who publishes the statistics, for the privacy notice.
    #[serde(default)]
    pub organization: OrganizationConfig,
    /// Retention of tamis's own records (audit log, deletion reports, salt
    /// destructions).
    #[serde(default)]
    pub audit: AuditConfig,
    /// How the stats API publishes numbers.
    #[serde(default)]
    pub query: QueryConfig,
}

/// Configuration text that is a secret (a password, a key): used as
/// text, printed as `<redacted>` wherever the configuration is debugged.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for SecretText {
    fn from(text: &str) -> SecretText {
        SecretText(text.to_string())
    }
}

/// The stats API's installation-wide settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// The secret that keys the consistent random rounding of protected
    /// answers (at least 32 characters, e.g. `openssl rand -hex 32`). The
    /// same on every collector, kept across restarts: a new key draws every
    /// rounding anew. Absent, the installation's secret stored in
    /// ClickHouse keys it (`sink::rounding`, `settings::RoundingSecret`).
    pub rounding_key: Option<SecretText>,
    /// ClickHouse's `max_execution_time` for every stats-API statement, in
    /// seconds.
    #[serde(default = "default_max_execution_time")]
    pub max_execution_time: u64,
    /// ClickHouse's `max_memory_usage` for every stats-API statement, in
    /// bytes.
    #[serde(default = "default_max_memory_usage")]
    pub max_memory_usage: u64,
    /// ClickHouse's `max_result_rows` (with `result_overflow_mode =
    /// 'throw'`) for every stats-API statement.
    #[serde(default = "default_max_result_rows")]
    pub max_result_rows: u64,
    /// tamis's own limit on one whole query, in milliseconds (default:
    /// `max_execution_time` plus 2 seconds).
    pub timeout_ms: Option<u64>,
    /// Stats queries one token may have running at once; more are
    /// answered 429.
    #[serde(default = "default_max_running_per_token")]
    pub max_running_per_token: usize,
    /// Stats queries one shared link may have running at once, all its
    /// viewers together; each viewer's network has at most
    /// `max_running_per_token` of them.
    #[serde(default = "default_max_running_per_link")]
    pub max_running_per_link: usize,
    /// Stats queries the server runs at once, all tokens and shared links
    /// together; more are answered 503 with `Retry-After`.
    #[serde(default = "default_max_running")]
    pub max_running: usize,
    /// Whether paginated breakdowns read only the rows their page needs
    /// (see `query::pushdown`); `false` reads every row, as tamis did
    /// before, and gives the same answers.
    #[serde(default = "yes")]
    pub pushdown: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            rounding_key: None,
            max_execution_time: default_max_execution_time(),
            max_memory_usage: default_max_memory_usage(),
            max_result_rows: default_max_result_rows(),
            timeout_ms: None,
            max_running_per_token: default_max_running_per_token(),
            max_running_per_link: default_max_running_per_link(),
            max_running: default_max_running(),
            pushdown: true,
        }
    }
}

fn default_max_execution_time() -> u64 {
    10
}
fn default_max_memory_usage() -> u64 {
    1 << 30
}
fn default_max_result_rows() -> u64 {
    1_000_000
}
fn default_max_running_per_token() -> usize {
    4
}
fn default_max_running_per_link() -> usize {
    8
}
fn default_max_running() -> usize {
    16
}

/// What a token's answers may show (see `query::disclosure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disclosure {
    /// Small cells withheld and every published count consistently randomly
    /// rounded, so no combination of answers isolates a small count.
    #[default]
    Protected,
    /// The numbers as counted (small cells still withheld where one query
    /// alone would show them); every read is audited as exact.
    Exact,
}

impl Disclosure {
    pub fn name(self) -> &'static str {
        match self {
            Disclosure::Protected => "protected",
            Disclosure::Exact => "exact",
        }
    }
}

/// The body that publishes the sites, its privacy officer and where the
/// statistics are hosted: facts of the generated privacy notice and of
/// `/privacy.json`. Optional for collecting; `tamis notice` and `tamis
/// check` say which ones are missing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    pub name: Option<String>,
    pub address: Option<String>,
    pub website: Option<String>,
    /// Name or title of the person in charge of the protection of personal
    /// information.
    pub privacy_officer: Option<String>,
    pub privacy_officer_email: Option<String>,
    pub privacy_officer_phone: Option<String>,
    /// Who runs the servers holding the statistics (default: `name`).
    pub hosting_operator: Option<String>,
    /// Where those servers are, e.g. "Québec (Canada)".
    pub hosting_location: Option<String>,
    /// Whether that place is in Québec; `false` is a communication outside
    /// Québec, which needs an assessment (A-2.1 s. 70.1).
    #[serde(default = "yes")]
    pub hosting_in_quebec: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    #[serde(default = "default_audit_retention")]
    pub retention_months: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            retention_months: default_audit_retention(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address of the operators' listener: `/metrics`, `/readyz` with its
    /// details and `/api/v2/audit`. Keep it off the public network.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: String,
    #[serde(default = "default_trusted_proxies")]
    pub trusted_proxies: Vec<String>,
    /// Logged hits held in memory by the aggregator; beyond it the backlog
    /// waits on disk in the durable log.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Browser origins that may send hits (`*` for all, or origins such
    /// as `https://example.org`, separated by commas); the stats API stays
    /// same-origin whatever this says.
    #[serde(default = "default_cors_origin")]
    pub cors_allow_origin: String,
    /// Open connections served at once; beyond it a new connection is
    /// answered 503 with Retry-After and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends no complete request head for this long
    /// (idle between keep-alive requests, or sending its headers slowly)
    /// is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// On SIGTERM/SIGINT: longest time to finish requests and flush.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// The address visitors reach tamis at (`https://stats.example.org`),
    /// put before `/share/…` in the links `tamis share create` prints.
    #[serde(default)]
    pub public_url: Option<String>,
    /// On SIGTERM/SIGINT: how long `/readyz` answers 503 while tamis still
    /// serves, before it refuses new connections.
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Folder of the durable log (created 0700).
    #[serde(default = "default_log_dir")]
    pub log_dir: String,
    /// Size cap of the log on disk; beyond it ingestion answers 503.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// fsync before answering 202 (off: survives a tamis crash, not a
    /// machine crash).
    #[serde(default = "default_true")]
    pub fsync: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            log_dir: default_log_dir(),
            log_max_bytes: default_log_max_bytes(),
            fsync: true,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            trusted_proxies: default_trusted_proxies(),
            queue_capacity: default_queue_capacity(),
            cors_allow_origin: default_cors_origin(),
            max_connections: default_max_connections(),
            idle_timeout_ms: default_idle_timeout_ms(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            public_url: None,
            shutdown_grace_ms: default_shutdown_grace_ms(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseConfig {
    /// The server; absent: `http://127.0.0.1:8123`, or on a cluster the
    /// first of `urls`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default)]
    pub password: SecretText,
    /// A batch is written when it holds this many rows…
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// …or when its oldest hit is this old.
    #[serde(default = "default_flush_ms")]
    pub flush_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The cluster's name in ClickHouse's `<remote_servers>`; absent: one
    /// server, `url`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Every node's HTTP URL, with `cluster`.
    #[serde(default)]
    pub urls: Vec<String>,
}

/// URLs print without their userinfo (`http://***@host`), as in
/// [`super::settings::ClickHouseSettings`]: a URL may carry the password.
impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use super::settings::redact_userinfo;
        // Every field named: a new one is a compile error here, not a
        // field missing from the output.
        let ClickHouseConfig {
            url,
            database,
            user,
            password,
            batch_rows,
            flush_interval_ms,
            timeout_ms,
            cluster,
            urls,
        } = self;
        f.debug_struct("ClickHouseConfig")
            .field("url", &url.as_deref().map(redact_userinfo))
            .field("database", database)
            .field("user", user)
            .field("password", password)
            .field("batch_rows", batch_rows)
            .field("flush_interval_ms", flush_interval_ms)
            .field("timeout_ms", timeout_ms)
            .field("cluster", cluster)
            .field(
                "urls",
                &urls.iter().map(|u| redact_userinfo(u)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: None,
            database: default_database(),
            user: default_user(),
            password: SecretText::default(),
            batch_rows: default_batch_rows(),
            flush_interval_ms: default_flush_ms(),
            timeout_ms: default_timeout_ms(),
            cluster: None,
            urls: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpConfig {
    pub path: Option<String>,
    pub path_v6: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentMode {
    /// Audience measurement exempt from consent (CNIL style): hits without a
    /// consent state get a daily visitor key.
    NotRequired,
    /// Hits without `granted` are treated as denied.
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnDenied {
    /// Count the pageview, without visitor key or session.
    Anonymous,
    /// Drop the hit (counted as dropped with reason `consent_denied`).
    Drop,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnOptOut {
    /// Drop before any processing; only the dropped counter moves.
    Drop,
    /// Count anonymously, like a denied consent.
    Anonymous,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub id: String,
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// Language of names in reports (`fr` or `en`).
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "default_retention")]
    pub retention_months: u32,
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: u8,
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
    #[serde(default = "default_geo_level")]
    pub geo_level: GeoLevel,
    #[serde(default = "default_consent_mode")]
    pub consent_mode: ConsentMode,
    #[serde(default = "default_on_denied")]
    pub on_denied: OnDenied,
    #[serde(default = "default_on_opt_out")]
    pub on_opt_out: OnOptOut,
    #[serde(default = "yes")]
    pub honour_gpc: bool,
    #[serde(default = "yes")]
    pub honour_dnt: bool,
    #[serde(default)]
    pub query_params: Vec<String>,
    #[serde(default)]
    pub collect_campaigns: bool,
    #[serde(default)]
    pub hash_routing: bool,
    #[serde(default)]
    pub event_names: Vec<String>,
    #[serde(default)]
    pub prop_keys: Vec<String>,
    #[serde(default = "default_k")]
    pub k_threshold: u32,
    /// Page where visitors can opt out (stored on their device as the only
    /// thing tamis ever stores there), named in the privacy notice.
    #[serde(default)]
    pub opt_out_url: Option<String>,
    /// `[[site.goal]]`: what counts as a conversion.
    #[serde(default, rename = "goal")]
    pub goals: Vec<GoalConfig>,
    /// `[[site.funnel]]`: ordered goals a visit goes through.
    #[serde(default, rename = "funnel")]
    pub funnels: Vec<FunnelConfig>,
    /// The Umami `website` id whose hits (`POST /api/send`) count here.
    #[serde(default)]
    pub umami_website_id: Option<String>,
    /// The Google Analytics 4 measurement id (`G-…`) whose hits
    /// (`/g/collect`, `/mp/collect`) count here.
    #[serde(default)]
    pub ga4_measurement_id: Option<String>,
    /// The Matomo `idsite` whose hits (`/matomo.php`, `/piwik.php`) count
    /// here.
    #[serde(default)]
    pub matomo_site_id: Option<u32>,
}

/// A goal: exactly one of `event` (a custom event's name) or `page` (a
/// path, `*` matching any characters), and how reports name it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub page: Option<String>,
}

/// A funnel: 2 to 8 goals, by name, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelConfig {
    pub name: String,
    pub steps: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub secret_sha256: String,
    #[serde(default)]
    pub sites: Vec<String>,
    /// May read the audit log (`GET /api/v2/audit`) of every site.
    #[serde(default)]
    pub admin: bool,
    /// `protected` (default) or `exact`.
    #[serde(default)]
    pub disclosure: Disclosure,
}

impl Config {
    /// Environment variables win over the file, so one file serves every
    /// machine. `lookup` is `std::env::var` outside tests.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(v) = lookup("TAMIS_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = lookup("TAMIS_PUBLIC_URL") {
            self.server.public_url = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = lookup("TAMIS_ADMIN_LISTEN") {
            self.server.admin_listen = v;
        }
        if let Some(v) = lookup("TAMIS_CLICKHOUSE_URL") {
            self.clickhouse.url = Some(v);
        }
        if let Some(v) = lookup("TAMIS_CLICKHOUSE_DATABASE") {
            self.clickhouse.database = v;
        }
        if let Some(v) = lookup("TAMIS_CLICKHOUSE_USER") {
            self.clickhouse.user = v;
        }
        if let Some(v) = lookup("TAMIS_CLICKHOUSE_PASSWORD") {
            self.clickhouse.password = SecretText(v);
        }
        if let Some(v) = lookup("TAMIS_CLICKHOUSE_CLUSTER") {
            self.clickhouse.cluster = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = lookup("TAMIS_GEOIP_PATH") {
            self.geoip.path = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = lookup("TAMIS_GEOIP_PATH_V6") {
            self.geoip.path_v6 = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = lookup("TAMIS_LOG_DIR") {
            self.storage.log_dir = v;
        }
        if let Some(v) = lookup("TAMIS_ROUNDING_KEY") {
            self.query.rounding_key = (!v.is_empty()).then_some(SecretText(v));
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
/// Prometheus's node-exporter range, loopback only.
fn default_admin_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_trusted_proxies() -> Vec<String> {
    vec!["127.0.0.1/32".into(), "::1/128".into()]
}
fn default_shutdown_grace_ms() -> u64 {
    1_000
}
fn default_shutdown_timeout_ms() -> u64 {
    10_000
}
fn default_log_dir() -> String {
    "data/log".into()
}
fn default_true() -> bool {
    true
}
fn default_log_max_bytes() -> u64 {
    1 << 30
}
fn default_queue_capacity() -> usize {
    250_000
}
fn default_cors_origin() -> String {
    "*".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_idle_timeout_ms() -> u64 {
    10_000
}
pub(crate) fn default_clickhouse_url() -> String {
    "http://127.0.0.1:8123".into()
}
fn default_database() -> String {
    "tamis".into()
}
fn default_user() -> String {
    "default".into()
}
fn default_batch_rows() -> usize {
    50_000
}
fn default_flush_ms() -> u64 {
    1_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_timezone() -> String {
    "America/Toronto".into()
}
fn default_language() -> String {
    "fr".into()
}
fn default_retention() -> u32 {
    25
}
fn default_v4_prefix() -> u8 {
    24
}
fn default_v6_prefix() -> u8 {
    48
}
fn default_geo_level() -> GeoLevel {
    GeoLevel::Region
}
fn default_consent_mode() -> ConsentMode {
    ConsentMode::NotRequired
}
fn default_on_denied() -> OnDenied {
    OnDenied::Anonymous
}
fn default_on_opt_out() -> OnOptOut {
    OnOptOut::Drop
}
fn default_audit_retention() -> u32 {
    24
}
fn default_k() -> u32 {
    5
}
fn yes() -> bool {
    true
}
