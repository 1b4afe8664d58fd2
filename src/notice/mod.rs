//! The privacy notice, generated from a site's effective settings: the
//! analytics section of the site's privacy policy (`tamis notice`), in
//! French ([`fr`]) or English ([`en`]), as Markdown or HTML, and the same
//! facts machine-readable for `GET /privacy.json` ([`facts_json`]).
//!
//! Each block of text names the settings it depends on, so a change of
//! setting changes exactly the blocks that mention it (a test checks it).
//! Pure: no I/O, no HTTP; `web` serves what this module builds.

pub mod controls;
mod en;
mod fr;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::fingerprint::{
    self, consent_mode_name, geo_level_name, on_denied_name, on_opt_out_name,
};
use crate::config::{OrganizationSettings, Settings, SiteSettings};
use crate::sink::salts::{AHEAD, GRACE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Fr,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "md" | "markdown" => Some(Format::Markdown),
            "html" => Some(Format::Html),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Heading,
    Paragraph,
    Item,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inline {
    Text(String),
    Link { text: String, href: String },
}

/// One heading, paragraph or list item, with the settings it depends on
/// (configuration keys: `retention_months`, `organization.name`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: Kind,
    pub keys: &'static [&'static str],
    pub parts: Vec<Inline>,
}

impl Block {
    /// The block as one line of Markdown.
    pub fn markdown(&self) -> String {
        let text: String = self
            .parts
            .iter()
            .map(|p| match p {
                Inline::Text(t) => md_escape(t),
                Inline::Link { text, href } => format!(
                    "[{}](<{}>)",
                    md_escape(text),
                    href.replace(['<', '>', ' '], "")
                ),
            })
            .collect();
        match self.kind {
            Kind::Heading => format!("### {text}"),
            Kind::Paragraph => text,
            Kind::Item => format!("- {text}"),
        }
    }

    fn html(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Inline::Text(t) => html_escape(t),
                Inline::Link { text, href } => format!(
                    "<a href=\"{}\">{}</a>",
                    html_escape(href),
                    html_escape(text)
                ),
            })
            .collect()
    }
}

/// The facts a notice states, taken from the settings.
pub struct Facts<'a> {
    pub org: &'a OrganizationSettings,
    pub site: &'a SiteSettings,
}

impl Facts<'_> {
    /// Longest life of a daily salt, in hours, rounded up: from `AHEAD`
    /// before a local day (of at most 25 hours) to `GRACE` after it.
    pub fn salt_max_hours(&self) -> i64 {
        let minutes = (AHEAD + chrono::Duration::hours(25) + GRACE).num_minutes();
        (minutes + 59) / 60
    }
}

/// The notice's blocks in `lang`.
pub fn blocks(facts: &Facts<'_>, lang: Lang) -> Vec<Block> {
    match lang {
        Lang::Fr => fr::blocks(facts),
        Lang::En => en::blocks(facts),
    }
}

/// The notice as Markdown (one line per block, a blank line between
/// paragraphs) or as an HTML fragment (escaped).
pub fn render(blocks: &[Block], format: Format) -> String {
    let mut out = String::new();
    match format {
        Format::Markdown => {
            let mut previous: Option<Kind> = None;
            for b in blocks {
                if previous.is_some() && !(previous == Some(Kind::Item) && b.kind == Kind::Item) {
                    out.push('\n');
                }
                out.push_str(&b.markdown());
                out.push('\n');
                previous = Some(b.kind);
            }
        }
        Format::Html => {
            let mut in_list = false;
            for b in blocks {
                if in_list && b.kind != Kind::Item {
                    out.push_str("</ul>\n");
                    in_list = false;
                }
                match b.kind {
                    Kind::Heading => out.push_str(&format!("<h3>{}</h3>\n", b.html())),
                    Kind::Paragraph => out.push_str(&format!("<p>{}</p>\n", b.html())),
                    Kind::Item => {
                        if !in_list {
                            out.push_str("<ul>\n");
                            in_list = true;
                        }
                        out.push_str(&format!("  <li>{}</li>\n", b.html()));
                    }
                }
            }
            if in_list {
                out.push_str("</ul>\n");
            }
        }
    }
    out
}

/// Configuration keys a complete notice needs and that are not set.
pub fn missing(facts: &Facts<'_>) -> Vec<&'static str> {
    let o = facts.org;
    let mut missing = Vec::new();
    for (key, value) in [
        ("organization.name", &o.name),
        ("organization.privacy_officer", &o.privacy_officer),
        (
            "organization.privacy_officer_email",
            &o.privacy_officer_email,
        ),
        ("organization.hosting_location", &o.hosting_location),
    ] {
        if value.is_none() {
            missing.push(key);
        }
    }
    if facts.site.opt_out_url.is_none() {
        missing.push("opt_out_url");
    }
    missing
}

/// The notice's facts, machine-readable, for `GET /privacy.json`.
pub fn facts_json(facts: &Facts<'_>) -> Value {
    let (o, s) = (facts.org, facts.site);
    let mut query_params = s.query_params.clone();
    query_params.sort();
    let sorted = |set: &std::collections::HashSet<String>| {
        let mut v: Vec<String> = set.iter().cloned().collect();
        v.sort();
        v
    };
    json!({
        "site": s.id,
        "hostnames": s.hostnames,
        "organization": { "name": o.name, "address": o.address, "website": o.website },
        "privacy_officer": { "name": o.privacy_officer, "email": o.privacy_officer_email, "phone": o.privacy_officer_phone },
        "purpose": "audience measurement: anonymous statistics of visits",
        "collected": {
            "page_path": true,
            "query_parameters_kept": query_params,
            "hash_routing": s.hash_routing,
            "referrer": "host only, classified into a source",
            "campaign_parameters": s.collect_campaigns,
            "browser": "name and major.minor version",
            "operating_system": "family",
            "device": "desktop, mobile or tablet",
            "language": "primary subtag",
            "location": geo_level_name(s.geo_level),
            "custom_events": sorted(&s.event_names),
            "event_property_keys": sorted(&s.prop_keys),
            "time": "hour",
        },
        "not_collected": [
            "full IP address", "cookies, localStorage or sessionStorage", "user or login identifiers",
            "form content or free text", "city, postal code, coordinates or internet provider",
            "links between days or between sites",
        ],
        "ip_truncation": { "ipv4_prefix": s.ipv4_prefix, "ipv6_prefix": s.ipv6_prefix, "before_any_other_use": true, "stored": false },
        "geolocation": geo_level_name(s.geo_level),
        "daily_key": {
            "hash": "blake3 keyed hash of the site, the truncated IP and the reduced user agent",
            "salt_bits": 256,
            "rotates": "at local midnight",
            "timezone": s.timezone.name(),
            "destroyed_within_hours": 48,
            "longest_life_hours": facts.salt_max_hours(),
            "stored": false,
            "destructions_recorded": true,
        },
        "consent": {
            "mode": consent_mode_name(s.consent_mode),
            "on_denied": on_denied_name(s.on_denied),
            "on_opt_out": on_opt_out_name(s.on_opt_out),
            "honours_gpc": s.honour_gpc,
            "honours_dnt": s.honour_dnt,
            "opt_out_url": s.opt_out_url,
            "refusing_has_no_consequence": true,
        },
        "storage": {
            "aggregates_only": true,
            "granularity": "hour",
            "k_threshold": s.k_threshold,
            "retention_months": s.retention_months,
            "deletion": "automatic, by month, recorded",
        },
        "hosting": { "operator": o.hosting_operator, "location": o.hosting_location, "in_quebec": o.hosting_in_quebec },
        "third_parties": [],
        "outbound_calls": "none besides the organization's own ClickHouse database",
        "access": "named tokens; every read of statistics is recorded in an audit log",
        "tamis_version": env!("CARGO_PKG_VERSION"),
        "configuration_version": fingerprint::site_version(s, o),
    })
}

/// `/privacy.json` bodies, built once at start-up, by site id and by host
/// name.
pub struct Published {
    by_id: HashMap<String, Arc<str>>,
    by_host: HashMap<String, Arc<str>>,
}

impl Published {
    pub fn new(settings: &Settings) -> Published {
        let mut by_id = HashMap::new();
        let mut by_host = HashMap::new();
        for site in &settings.sites {
            let body: Arc<str> = Arc::from(
                facts_json(&Facts {
                    org: &settings.organization,
                    site,
                })
                .to_string(),
            );
            for host in &site.hostnames {
                by_host.entry(host.clone()).or_insert_with(|| body.clone());
            }
            by_id.insert(site.id.clone(), body);
        }
        Published { by_id, by_host }
    }

    /// By `?site=ID` when given, else by the request's host name.
    pub fn find(&self, site: Option<&str>, host: Option<&str>) -> Option<Arc<str>> {
        match site {
            Some(id) => self.by_id.get(&id.trim().to_ascii_lowercase()).cloned(),
            None => {
                let host = host?.trim().to_ascii_lowercase();
                let name = host
                    .rsplit_once(':')
                    .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                    .map_or(host.as_str(), |(h, _)| h);
                self.by_host
                    .get(name)
                    .or_else(|| self.by_id.get(name))
                    .cloned()
            }
        }
    }
}

fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '*' | '_' | '[' | ']' | '<' | '>' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // Attributes are always double-quoted, so `'` needs no escape.
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// Builds blocks; shared by the languages.
pub(crate) struct Out(pub Vec<Block>);

impl Out {
    pub fn heading(&mut self, keys: &'static [&'static str], text: impl Into<String>) {
        self.0.push(Block {
            kind: Kind::Heading,
            keys,
            parts: vec![Inline::Text(text.into())],
        });
    }
    pub fn para(&mut self, keys: &'static [&'static str], parts: Vec<Inline>) {
        self.0.push(Block {
            kind: Kind::Paragraph,
            keys,
            parts,
        });
    }
    pub fn item(&mut self, keys: &'static [&'static str], parts: Vec<Inline>) {
        self.0.push(Block {
            kind: Kind::Item,
            keys,
            parts,
        });
    }
}

pub(crate) fn t(s: impl Into<String>) -> Inline {
    Inline::Text(s.into())
}

pub(crate) fn link(text: impl Into<String>, href: impl Into<String>) -> Inline {
    Inline::Link {
        text: text.into(),
        href: href.into(),
    }
}

/// `a, b et c` / `a, b and c`.
pub(crate) fn join(items: &[String], and: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} {and} {last}", rest.join(", ")),
    }
}

pub(crate) fn sorted(set: &std::collections::HashSet<String>) -> Vec<String> {
    let mut v: Vec<String> = set.iter().cloned().collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_and_markdown_are_escaped() {
        let b = Block {
            kind: Kind::Paragraph,
            keys: &[],
            parts: vec![
                t("<b>A & B_c</b>"),
                link("x\"y", "https://e.org/?a=1&b=\"2\""),
            ],
        };
        let html = render(std::slice::from_ref(&b), Format::Html);
        assert_eq!(html, "<p>&lt;b&gt;A &amp; B_c&lt;/b&gt;<a href=\"https://e.org/?a=1&amp;b=&quot;2&quot;\">x&quot;y</a></p>\n");
        assert_eq!(
            b.markdown(),
            "\\<b\\>A & B\\_c\\</b\\>[x\"y](<https://e.org/?a=1&b=\"2\">)"
        );
    }

    #[test]
    fn lists_are_grouped() {
        let item = |s: &str| Block {
            kind: Kind::Item,
            keys: &[],
            parts: vec![t(s)],
        };
        let para = Block {
            kind: Kind::Paragraph,
            keys: &[],
            parts: vec![t("p")],
        };
        let blocks = vec![para.clone(), item("a"), item("b"), para];
        assert_eq!(render(&blocks, Format::Markdown), "p\n\n- a\n- b\n\np\n");
        assert_eq!(
            render(&blocks, Format::Html),
            "<p>p</p>\n<ul>\n  <li>a</li>\n  <li>b</li>\n</ul>\n<p>p</p>\n"
        );
    }

    #[test]
    fn salts_live_under_48_hours() {
        let site = crate::privacy::pipeline::test_site("a.org");
        let org = OrganizationSettings::default();
        let hours = Facts {
            org: &org,
            site: &site,
        }
        .salt_max_hours();
        assert!(hours < 48, "{hours}");
    }

    #[test]
    fn privacy_json_is_found_by_site_or_host() {
        let text = "[[site]]\nid='a.org'\nhostnames=['a.org','www.a.org']\n[[site]]\nid='b.org'\nretention_months=13";
        let settings =
            Settings::from_config(toml::from_str(text).unwrap(), std::path::Path::new("."))
                .unwrap();
        let published = Published::new(&settings);
        let site = |site: Option<&str>, host: Option<&str>| {
            published
                .find(site, host)
                .map(|b| serde_json::from_str::<Value>(&b).unwrap()["site"].clone())
        };
        assert_eq!(
            site(Some("a.org"), Some("b.org")),
            Some(json!("a.org")),
            "?site= wins"
        );
        assert_eq!(site(None, Some("WWW.a.org:8080")), Some(json!("a.org")));
        assert_eq!(site(None, Some("b.org")), Some(json!("b.org")));
        assert_eq!(site(Some("c.org"), None), None);
        assert_eq!(site(None, None), None);
    }

    #[test]
    fn join_lists() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(join(&v(&["a"]), "et"), "a");
        assert_eq!(join(&v(&["a", "b", "c"]), "et"), "a, b et c");
    }
}
