//! Canonical descriptions of the effective configuration, section by
//! section, and their hashes. They give `/privacy.json` its configuration
//! version and let the audit log record which sections changed between two
//! start-ups. Sets are sorted so the same settings always hash the same.
//! The listen address is not part of them (it changes per run in tests
//! and containers). The ClickHouse password is never part of them (a hash of a weak password
//! can be guessed back); token secrets appear only as the SHA-256 digests
//! the configuration file already holds.

use serde_json::{json, Value};

use super::file::{ConsentMode, OnDenied, OnOptOut};
use super::settings::{
    ClickHouseSettings, OrganizationSettings, Settings, SiteSettings, TokenSettings,
};
use crate::privacy::geo::GeoLevel;

/// Every privacy-relevant setting of one site, with sorted lists.
pub fn site_json(site: &SiteSettings) -> Value {
    let sorted = |set: &std::collections::HashSet<String>| {
        let mut v: Vec<&String> = set.iter().collect();
        v.sort();
        json!(v)
    };
    let mut query_params = site.query_params.clone();
    query_params.sort();
    let mut out = json!({
        "id": site.id,
        "hostnames": site.hostnames,
        "timezone": site.timezone.name(),
        "language": site.language,
        "retention_months": site.retention_months,
        "ipv4_prefix": site.ipv4_prefix,
        "ipv6_prefix": site.ipv6_prefix,
        "geo_level": geo_level_name(site.geo_level),
        "consent_mode": consent_mode_name(site.consent_mode),
        "on_denied": on_denied_name(site.on_denied),
        "on_opt_out": on_opt_out_name(site.on_opt_out),
        "honour_gpc": site.honour_gpc,
        "honour_dnt": site.honour_dnt,
        "query_params": query_params,
        "collect_campaigns": site.collect_campaigns,
        "hash_routing": site.hash_routing,
        "event_names": sorted(&site.event_names),
        "prop_keys": sorted(&site.prop_keys),
        "k_threshold": site.k_threshold,
        "opt_out_url": site.opt_out_url,
    });
    // Named only when set, so a configuration from before goals keeps its
    // fingerprint and no change is recorded on upgrade.
    if !site.goals.is_empty() {
        out["goals"] = site.goals.iter().map(|g| g.to_json()).collect();
    }
    if !site.funnels.is_empty() {
        out["funnels"] = funnels_json(site).into();
    }
    out
}

/// A site's funnels with their steps by goal name.
pub fn funnels_json(site: &SiteSettings) -> Vec<Value> {
    site.funnels
        .iter()
        .map(|f| {
            let steps: Vec<&str> = f
                .steps
                .iter()
                .map(|&i| site.goals[i].name.as_str())
                .collect();
            json!({ "name": f.name, "steps": steps })
        })
        .collect()
}

pub fn organization_json(o: &OrganizationSettings) -> Value {
    json!({
        "name": o.name,
        "address": o.address,
        "website": o.website,
        "privacy_officer": o.privacy_officer,
        "privacy_officer_email": o.privacy_officer_email,
        "privacy_officer_phone": o.privacy_officer_phone,
        "hosting_operator": o.hosting_operator,
        "hosting_location": o.hosting_location,
        "hosting_in_quebec": o.hosting_in_quebec,
    })
}

/// The `clickhouse` section, URLs without their userinfo (a hash of a
/// password is a hint to it). A cluster's keys appear only when it is set,
/// so a single server's section hashes as it did before clusters.
fn clickhouse_json(ch: &ClickHouseSettings) -> Value {
    let mut out = json!({
        "url": ch.url.to_string(), "database": ch.database, "user": ch.user,
        "batch_rows": ch.batch_rows,
        "flush_interval_ms": ch.flush_interval.as_millis() as u64,
        "timeout_ms": ch.timeout.as_millis() as u64,
    });
    if let Some(cluster) = &ch.cluster {
        out["cluster"] = json!(cluster.name);
        out["urls"] = json!(cluster
            .nodes
            .iter()
            .map(|url| url.to_string())
            .collect::<Vec<_>>());
    }
    out
}

fn token_json(t: &TokenSettings) -> Value {
    let digest: String = t.secret_sha256.iter().map(|b| format!("{b:02x}")).collect();
    json!({ "name": t.name, "secret_sha256": digest, "sites": t.sites, "admin": t.admin, "disclosure": t.disclosure.name() })
}

/// The configuration by section (`server`, `clickhouse`, `geoip`,
/// `organization`, `audit`, `site <id>`, `token <name>`), each with its
/// hash, in a fixed order.
pub fn sections(settings: &Settings) -> Vec<(String, String)> {
    let ch = &settings.clickhouse;
    let mut proxies: Vec<String> = settings
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    proxies.sort();
    let mut out = vec![
        (
            "server".to_string(),
            // Not the listen addresses: tests and containers set them per
            // run (TAMIS_LISTEN, TAMIS_ADMIN_LISTEN); `tamis check` warns
            // about an operators' listener off loopback.
            json!({
                "trusted_proxies": proxies,
                "queue_capacity": settings.server.queue_capacity,
                "cors_allow_origin": settings.server.cors_allow_origin.to_string(),
            }),
        ),
        ("clickhouse".to_string(), clickhouse_json(ch)),
        (
            "geoip".to_string(),
            json!({
                "path": settings.geo.path.as_ref().map(|p| p.display().to_string()),
                "path_v6": settings.geo.path_v6.as_ref().map(|p| p.display().to_string()),
            }),
        ),
        (
            "organization".to_string(),
            organization_json(&settings.organization),
        ),
        (
            "audit".to_string(),
            json!({ "retention_months": settings.audit_retention_months }),
        ),
        (
            // Whether a rounding key is set, never the key nor a hash of it.
            "query".to_string(),
            json!({ "rounding_key_configured": settings.rounding_key_configured }),
        ),
    ];
    out.extend(
        settings
            .sites
            .iter()
            .map(|s| (format!("site {}", s.id), site_json(s))),
    );
    out.extend(
        settings
            .tokens
            .iter()
            .map(|t| (format!("token {}", t.name), token_json(t))),
    );
    out.into_iter()
        .map(|(name, value)| (name, hash(&value)))
        .collect()
}

/// The hash of the whole configuration, from its section hashes.
pub fn config_hash(sections: &[(String, String)]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("tamis 2026 configuration fingerprint");
    for (name, h) in sections {
        // Length-prefixed, so no two lists of sections hash alike.
        for part in [name, h] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize().to_hex()[..16].to_string()
}

/// A short, stable hash of one canonical JSON value.
pub fn hash(value: &Value) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("tamis 2026 configuration fingerprint");
    hasher.update(value.to_string().as_bytes());
    hasher.finalize().to_hex()[..16].to_string()
}

/// The configuration version of one site, as `/privacy.json` publishes it:
/// it changes whenever a fact of the site's notice changes.
pub fn site_version(site: &SiteSettings, organization: &OrganizationSettings) -> String {
    hash(&json!({ "site": site_json(site), "organization": organization_json(organization) }))
}

pub fn geo_level_name(g: GeoLevel) -> &'static str {
    match g {
        GeoLevel::None => "none",
        GeoLevel::Country => "country",
        GeoLevel::Region => "region",
    }
}

pub fn consent_mode_name(c: ConsentMode) -> &'static str {
    match c {
        ConsentMode::NotRequired => "not-required",
        ConsentMode::Required => "required",
    }
}

pub fn on_denied_name(c: OnDenied) -> &'static str {
    match c {
        OnDenied::Anonymous => "anonymous",
        OnDenied::Drop => "drop",
    }
}

pub fn on_opt_out_name(c: OnOptOut) -> &'static str {
    match c {
        OnOptOut::Drop => "drop",
        OnOptOut::Anonymous => "anonymous",
    }
}

/// The names of sections whose hash differs between `old` and `new`
/// (added, removed or changed).
pub fn changed_sections(old: &[(String, String)], new: &[(String, String)]) -> Vec<String> {
    let mut changed: Vec<String> = new
        .iter()
        .filter(|(name, h)| !old.iter().any(|(n, oh)| n == name && oh == h))
        .map(|(name, _)| name.clone())
        .collect();
    changed.extend(
        old.iter()
            .filter(|(name, _)| !new.iter().any(|(n, _)| n == name))
            .map(|(name, _)| format!("{name} (removed)")),
    );
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(toml_text: &str) -> Settings {
        Settings::from_config(toml::from_str(toml_text).unwrap(), Path::new(".")).unwrap()
    }

    #[test]
    fn only_changed_sections_are_named() {
        let a = settings("[[site]]\nid='a.org'\nevent_names=['x','y','z']\n[[site]]\nid='b.org'");
        let a2 = settings("[[site]]\nid='a.org'\nevent_names=['z','y','x']\n[[site]]\nid='b.org'");
        assert_eq!(sections(&a), sections(&a2), "sets hash in sorted order");
        let b = settings("[[site]]\nid='a.org'\nevent_names=['x','y','z']\n[[site]]\nid='b.org'\nretention_months=13\n[clickhouse]\npassword='p'");
        assert_eq!(
            changed_sections(&sections(&a), &sections(&b)),
            vec!["site b.org".to_string()],
            "the password is not part of it"
        );
        let c = settings("[[site]]\nid='a.org'");
        assert_eq!(
            changed_sections(&sections(&a), &sections(&c)),
            vec!["site a.org".to_string(), "site b.org (removed)".to_string()]
        );
        assert_ne!(config_hash(&sections(&a)), config_hash(&sections(&b)));
    }

    /// A single server's `clickhouse` section is the one it was before
    /// clusters, key for key, so an upgrade records no configuration
    /// change; a cluster is a change.
    #[test]
    fn a_single_server_hashes_as_before_clusters_and_a_cluster_is_a_change() {
        let single = settings("[[site]]\nid='a.org'");
        let clickhouse = |s: &Settings| {
            sections(s)
                .into_iter()
                .find(|(name, _)| name == "clickhouse")
                .unwrap()
                .1
        };
        let before_clusters = json!({
            "url": "http://127.0.0.1:8123", "database": "tamis", "user": "default",
            "batch_rows": 50000, "flush_interval_ms": 1000, "timeout_ms": 10000,
        });
        assert_eq!(clickhouse(&single), hash(&before_clusters));
        let cluster = settings(
            "[[site]]\nid='a.org'\n[clickhouse]\ncluster='tamis'\nurls=['http://127.0.0.1:8123']",
        );
        assert_eq!(
            changed_sections(&sections(&single), &sections(&cluster)),
            vec!["clickhouse".to_string()]
        );
    }
}
