//! The self-audit of `tamis check`: every control of PRIVACY.md with its
//! state, globally and per site, and a warning — with the reason — for each
//! setting that weakens a default. Pure: `cli` adds what ClickHouse holds.

use ipnet::IpNet;

use crate::config::{ConsentMode, Disclosure, OnDenied, OnOptOut, Settings, SiteSettings};
use crate::privacy::geo::GeoLevel;

use super::{missing, Facts};

/// SHA-256 of `tamis-local-dev-token`, the reference configuration's token.
const DEV_TOKEN_SHA256: &str = "be3b947864afdd9d028cfac6b76bab929d432382570d31d5b58fcca9aa652d16";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The PRIVACY.md section: Collection, Consent and opt-out, Identity and
    /// sessions, Storage and reporting, Transparency.
    pub section: &'static str,
    pub name: &'static str,
    pub state: String,
    /// Why the setting weakens a default, when it does.
    pub warning: Option<String>,
}

fn control(
    section: &'static str,
    name: &'static str,
    state: impl Into<String>,
    warning: Option<String>,
) -> Control {
    Control {
        section,
        name,
        state: state.into(),
        warning,
    }
}

const COLLECTION: &str = "Collection";
const CONSENT: &str = "Consent and opt-out";
const IDENTITY: &str = "Identity and sessions";
const STORAGE: &str = "Storage and reporting";
const TRANSPARENCY: &str = "Transparency";

/// Controls that hold for the whole process.
pub fn global(settings: &Settings) -> Vec<Control> {
    let proxies: Vec<String> = settings
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    let broad: Vec<String> = settings
        .server
        .trusted_proxies
        .iter()
        .filter(|n| match n {
            IpNet::V4(n) => n.prefix_len() < 8,
            IpNet::V6(n) => n.prefix_len() < 32,
        })
        .map(|n| n.to_string())
        .collect();
    let ch = &settings.clickhouse;
    // Every server tamis talks to: the one server, or each node of a
    // cluster.
    let servers: Vec<String> = match &ch.cluster {
        None => vec![ch.url.to_string()],
        Some(cluster) => cluster.nodes.iter().map(|u| u.to_string()).collect(),
    };
    let is_loopback = |url: &str| {
        ["http://127.", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| url.starts_with(p))
    };
    let plain: Vec<&str> = servers
        .iter()
        .map(String::as_str)
        .filter(|u| u.starts_with("http://") && !is_loopback(u))
        .collect();
    let o = &settings.organization;
    vec![
        control(
            COLLECTION,
            "X-Forwarded-For believed only from trusted proxies",
            if proxies.is_empty() { "no trusted proxy: the socket address is always used".to_string() } else { proxies.join(", ") },
            (!broad.is_empty()).then(|| format!("{} trusted as proxies: any client in them can choose the address tamis sees", broad.join(", "))),
        ),
        control(
            COLLECTION,
            "geolocation database reads country and region only",
            if settings.geo.db.is_enabled() { settings.geo.db.describe() } else { "no database: no geolocation".to_string() },
            None,
        ),
        control(
            STORAGE,
            "no outbound network calls besides ClickHouse",
            format!("only {}", servers.join(", ")),
            (!plain.is_empty()).then(|| format!("ClickHouse is reached over plain HTTP on a network address ({}): aggregates and salts cross the network unencrypted (use https://)", plain.join(", "))),
        ),
        control(
            STORAGE,
            "ClickHouse data hosted in Québec",
            match (&o.hosting_operator, &o.hosting_location) {
                (Some(op), Some(l)) => format!("{op}, {l}"),
                (Some(op), None) => op.clone(),
                (None, Some(l)) => l.clone(),
                (None, None) => "not described (organization.hosting_location)".to_string(),
            },
            (!o.hosting_in_quebec).then(|| "organization.hosting_in_quebec = false: hosting outside Québec is a communication outside Québec that needs a privacy impact assessment (A-2.1 s. 70.1)".to_string()),
        ),
        control(
            TRANSPARENCY,
            "audit log of every statistics read and configuration change",
            format!("table audit_log, kept {} months (audit.retention_months)", settings.audit_retention_months),
            None,
        ),
        control(
            TRANSPARENCY,
            "API tokens",
            settings
                .tokens
                .iter()
                .map(|t| format!("{}{}", t.name, if t.admin { " (admin)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", "),
            settings
                .tokens
                .iter()
                .find(|t| t.secret_sha256.iter().map(|b| format!("{b:02x}")).collect::<String>() == DEV_TOKEN_SHA256)
                .map(|t| format!("token `{}` is the reference configuration's public development token: anyone can read these statistics", t.name)),
        ),
        disclosure(settings),
        control(
            STORAGE,
            "exact live counts (/metrics), readiness details and the audit log served apart from the public listener",
            format!("server.admin_listen {}", settings.server.admin_listen),
            (!settings.server.admin_listen.ip().is_loopback()).then(|| format!(
                "server.admin_listen {} is reachable from the network: /metrics gives exact live counts (a hit moves them by one) without any token; allow only the monitoring hosts (firewall) or listen on loopback",
                settings.server.admin_listen
            )),
        ),
        control(
            STORAGE,
            "protected answers rounded with a secret key",
            // Either way the key is secret and the same for every
            // collector, restart, reload and token change: nothing to warn.
            if settings.rounding_key_configured {
                "query.rounding_key set"
            } else {
                "the installation's secret: drawn at random once and stored in ClickHouse (rounding_secret), the same for every collector, restart, reload and token change"
            },
            None,
        ),
    ]
}

/// Which tokens read exact numbers: each is a warning, since exact answers
/// to chosen filters can be differenced down to one visitor.
fn disclosure(settings: &Settings) -> Control {
    let exact: Vec<&str> = settings
        .tokens
        .iter()
        .filter(|t| t.disclosure == Disclosure::Exact)
        .map(|t| t.name.as_str())
        .collect();
    control(
        STORAGE,
        "small counts protected in every answer (disclosure)",
        if exact.is_empty() {
            "every token protected: cells below k withheld, counts randomly rounded".to_string()
        } else {
            format!("exact for {}; protected for the others", exact.join(", "))
        },
        (!exact.is_empty()).then(|| format!(
            "token(s) {} read exact numbers (disclosure = \"exact\"): two filtered queries can differ by one visitor, so whoever holds them can isolate a person's visits; every such read is recorded in the audit log as disclosure=exact",
            exact.join(", ")
        )),
    )
}

/// Every control of one site.
pub fn site(settings: &Settings, s: &SiteSettings) -> Vec<Control> {
    let facts = Facts {
        org: &settings.organization,
        site: s,
    };
    let mut params = s.query_params.clone();
    params.sort();
    let list = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let missing = missing(&facts);
    vec![
        control(COLLECTION, "no cookie or device storage; no Set-Cookie", "always (not configurable)", None),
        control(
            COLLECTION,
            "IP truncated on arrival, before any other use",
            format!("IPv4 /{}, IPv6 /{}", s.ipv4_prefix, s.ipv6_prefix),
            None,
        ),
        control(
            COLLECTION,
            "geolocation: country and first-level subdivision at most",
            match s.geo_level {
                GeoLevel::Region => "country and region",
                GeoLevel::Country => "country only",
                GeoLevel::None => "none",
            },
            None,
        ),
        control(COLLECTION, "user agent reduced to browser, OS and device class", "always", None),
        control(COLLECTION, "referrer kept as host only", "always", None),
        control(
            COLLECTION,
            "page URL: path only, placeholders for e-mails, numbers, tokens",
            format!("query parameters kept: {}; fragments: {}", list(params.clone()), if s.hash_routing { "kept (hash routing)" } else { "dropped" }),
            match (params.is_empty(), s.hash_routing) {
                (true, false) => None,
                (false, _) => Some(format!("query_params keeps {}: their values are stored as written in links, and can carry personal information", list(params))),
                (true, true) => Some("hash_routing keeps \"#/…\" fragments, which some applications fill with identifiers".to_string()),
            },
        ),
        control(
            COLLECTION,
            "campaign parameters and event properties off unless enabled",
            format!("campaigns: {}; events: {}; property keys: {}", on_off(s.collect_campaigns), list(super::sorted(&s.event_names)), list(super::sorted(&s.prop_keys))),
            match (s.collect_campaigns, s.prop_keys.is_empty()) {
                (false, true) => None,
                (true, true) => Some("collect_campaigns stores utm_* values, free text chosen by whoever wrote the link".to_string()),
                (_, false) => Some("prop_keys stores property values sent by the page: make sure none can hold personal information".to_string()),
            },
        ),
        control(COLLECTION, "no user id, form content or free text", "always", None),
        control(
            CONSENT,
            "opt-out signals honoured",
            format!(
                "GPC: {}, DNT: {}, opt-out page: {}",
                yes_no(s.honour_gpc),
                yes_no(s.honour_dnt),
                s.opt_out_url.as_deref().unwrap_or("none")
            ),
            match (s.honour_gpc, s.honour_dnt) {
                (true, true) => None,
                (false, _) => Some("honour_gpc = false ignores Global Privacy Control, a legally binding opt-out in several jurisdictions".to_string()),
                (true, false) => Some("honour_dnt = false ignores Do Not Track, a refusal the visitor expressed".to_string()),
            },
        ),
        control(
            CONSENT,
            "opt-out ⇒ dropped before any processing",
            match s.on_opt_out {
                OnOptOut::Drop => "dropped (only a counter by reason)",
                OnOptOut::Anonymous => "counted anonymously",
            },
            (s.on_opt_out == OnOptOut::Anonymous).then(|| "on_opt_out = \"anonymous\" still counts visitors who refused measurement".to_string()),
        ),
        control(
            CONSENT,
            "denied ⇒ counted anonymously, no visitor key",
            match s.on_denied {
                OnDenied::Anonymous => "counted anonymously",
                OnDenied::Drop => "dropped",
            },
            None,
        ),
        control(
            CONSENT,
            "no consent state ⇒ site's consent mode",
            match s.consent_mode {
                ConsentMode::NotRequired => "not-required (daily key without consent, CNIL-exempt style)",
                ConsentMode::Required => "required (no key until consent is granted)",
            },
            None,
        ),
        control(CONSENT, "withdrawal applies from the next hit; consent rate reported", "always", None),
        control(
            IDENTITY,
            "daily salt: random 256 bits, local midnight, destroyed within 48 h",
            format!("rotates at midnight {}, longest life {} h, destructions recorded in salt_destructions", s.timezone.name(), facts.salt_max_hours()),
            None,
        ),
        control(IDENTITY, "sessions in memory only; no cross-day or cross-site linking", "always", None),
        control(STORAGE, "aggregates only, by hour; unique counts as sketches", "always", None),
        control(
            STORAGE,
            "small-count threshold k",
            format!("k = {}", s.k_threshold),
            (s.k_threshold < 5).then(|| format!("k_threshold = {} is below the default 5: rows describing very few visitors are shown", s.k_threshold)),
        ),
        control(
            STORAGE,
            "retention enforced by dropping expired partitions",
            format!("{} months", s.retention_months),
            (s.retention_months > 25).then(|| format!("retention_months = {} is beyond the 25 months the CNIL allows for consent-exempt audience measurement", s.retention_months)),
        ),
        control(
            TRANSPARENCY,
            "privacy notice generated from the configuration",
            format!("tamis notice --site {} --lang fr|en", s.id),
            (!missing.is_empty()).then(|| format!("the notice lacks {}: set them so it names the body, its privacy officer and how to refuse", missing.join(", "))),
        ),
        control(TRANSPARENCY, "machine-readable facts", format!("GET /privacy.json?site={}", s.id), None),
    ]
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn warnings(site_toml: &str) -> Vec<String> {
        let text = format!("[organization]\nname='Ville'\nprivacy_officer='R'\nprivacy_officer_email='r@v.qc.ca'\nhosting_location='Québec'\n[[site]]\nid='a.org'\nopt_out_url='https://a.org/refus'\n{site_toml}");
        let settings =
            Settings::from_config(toml::from_str(&text).unwrap(), Path::new(".")).unwrap();
        site(&settings, &settings.sites[0])
            .into_iter()
            .filter_map(|c| c.warning)
            .collect()
    }

    #[test]
    fn defaults_raise_no_warning() {
        assert_eq!(warnings(""), Vec::<String>::new());
        // Settings stricter than the defaults do not warn either.
        assert_eq!(warnings("ipv4_prefix = 16\ngeo_level = 'none'\nconsent_mode = 'required'\non_denied = 'drop'\nk_threshold = 10\nretention_months = 13"), Vec::<String>::new());
    }

    #[test]
    fn each_weakened_default_warns_with_its_reason() {
        let check = |toml_text: &str, needle: &str| {
            let w = warnings(toml_text);
            assert_eq!(w.len(), 1, "{toml_text}: {w:?}");
            assert!(w[0].contains(needle), "{toml_text}: {w:?}");
        };
        check("honour_gpc = false", "Global Privacy Control");
        check("honour_dnt = false", "Do Not Track");
        check("on_opt_out = 'anonymous'", "refused measurement");
        check("k_threshold = 2", "below the default 5");
        check("retention_months = 37", "25 months");
        check("query_params = ['id']", "personal information");
        check("collect_campaigns = true", "utm_*");
    }

    fn global_warnings(toml_text: &str) -> Vec<String> {
        let settings =
            Settings::from_config(toml::from_str(toml_text).unwrap(), Path::new(".")).unwrap();
        global(&settings)
            .into_iter()
            .filter_map(|c| c.warning)
            .collect()
    }

    /// Regression: on a cluster only `clickhouse.url` was looked at, so
    /// nodes reached over plain HTTP on the network went unreported.
    #[test]
    fn every_cluster_node_over_plain_http_is_named() {
        let site = "[[site]]\nid='a.org'\n";
        let loopback =
            "[clickhouse]\ncluster='c'\nurls=['http://127.0.0.1:8123', 'http://127.0.0.1:8124']\n";
        assert!(global_warnings(&format!("{loopback}{site}"))
            .iter()
            .all(|w| !w.contains("plain HTTP")));
        let mixed = "[clickhouse]\ncluster='c'\nurls=['https://ch1.internal:8443', 'http://ch2.internal:8123']\n";
        let w = global_warnings(&format!("{mixed}{site}"));
        assert!(
            w.iter().any(|w| w.contains("plain HTTP")
                && w.contains("http://ch2.internal:8123")
                && !w.contains("ch1")),
            "{w:?}"
        );
    }

    #[test]
    fn exact_tokens_warn_and_a_missing_rounding_key_no_longer_does() {
        let digest = "0".repeat(64);
        let key = "[query]\nrounding_key = '0123456789abcdef0123456789abcdef'\n";
        let site = "[organization]\n[[site]]\nid = 'a.org'\n";
        let token = |extra: &str| {
            format!(
                "[[token]]\nname = 'bi'\nsecret_sha256 = '{digest}'\nsites = ['a.org']\n{extra}"
            )
        };
        assert_eq!(
            global_warnings(&format!("{key}{site}{}", token(""))),
            Vec::<String>::new()
        );
        let w = global_warnings(&format!("{key}{site}{}", token("disclosure = 'exact'")));
        assert!(
            w.len() == 1 && w[0].contains("bi") && w[0].contains("exact"),
            "{w:?}"
        );
        // Without a configured key, the installation's stored secret keys
        // the rounding: it no longer follows the tokens, nothing to warn.
        assert_eq!(
            global_warnings(&format!("{site}{}", token(""))),
            Vec::<String>::new()
        );
    }
}
