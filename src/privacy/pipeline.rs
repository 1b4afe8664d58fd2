//! The privacy pipeline: one hit in, one [`Event`] (the domain type, with no
//! field that can hold a full IP, a user agent or a URL) or a
//! [`DropReason`] out. Each step is a function of its own module; this file
//! only puts them in order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{SiteSettings, TrackerId};
use crate::privacy::agent::{is_prefetch, Agent, AgentClassifier};
use crate::privacy::coded::coded_enum;
use crate::privacy::consent::{self, Consent, ConsentState, Decision};
use crate::privacy::geo::{GeoDb, Location};
use crate::privacy::ip;
use crate::privacy::optout::{self, Signals};
use crate::privacy::referrer::{Referrer, ReferrerClassifier};
use crate::privacy::salt::SaltStore;
use crate::privacy::url::{self, Campaign, HashMode};
use crate::privacy::visitor::{self, VisitorKey};

coded_enum! {
    /// Why a hit was not counted. Each reason is a label of
    /// `tamis_hits_dropped_total` and a row of the `dropped_hourly` table.
    /// Codes are written to the journal, and also index the metrics'
    /// counters: they run from 0 without a gap.
    pub enum DropReason {
        OptOut = 0 => "opt_out",
        Bot = 1 => "bot",
        Prefetch = 2 => "prefetch",
        UnknownSite = 3 => "unknown_site",
        HostnameNotAllowed = 4 => "hostname_not_allowed",
        ConsentDenied = 5 => "consent_denied",
        EventNotAllowed = 6 => "event_not_allowed",
        Invalid = 7 => "invalid",
    }
}

/// A dropped hit: the reason, and the site when it is known (for the
/// per-site dropped counts of the consent report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub reason: DropReason,
    pub site: Option<usize>,
}

/// A hit as received, borrowed from the request. This is the last place the
/// full client IP and the raw headers exist.
pub struct RawHit<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub domain: &'a str,
    pub referrer: Option<&'a str>,
    pub props: &'a [(String, String)],
    /// Plausible's `h: 1`: the fragment's route may be part of the page.
    pub hash_mode: HashMode,
    pub consent: Option<&'a str>,
    pub opt_out: bool,
    pub client_ip: IpAddr,
    pub user_agent: &'a str,
    pub sec_gpc: Option<&'a [u8]>,
    pub dnt: Option<&'a [u8]>,
    pub sec_purpose: Option<&'a str>,
    pub purpose: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    /// An engagement's report of the page it ends (zero otherwise).
    pub engagement: Engagement,
    /// Plausible's `i`: whether a custom event is the visitor's doing and
    /// so ends a bounce (true unless the hit says false).
    pub interactive: bool,
    pub at: DateTime<Utc>,
}

/// What an engagement event reports of the page it ends: Plausible's `e`
/// (milliseconds the page was visible and focused since the last report)
/// and `sd` (the deepest point scrolled, in percent of the page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Engagement {
    pub engaged_ms: u32,
    /// 0–100; `None` when the hit did not say.
    pub scroll_depth: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Pageview,
    /// Plausible's engagement event: extends the visit and reports the
    /// page's engaged time and scroll depth; counts no pageview or event.
    Engagement(Engagement),
    /// A custom event allowed by the site. An interactive one ends its
    /// visit's bounce, as in Plausible.
    Custom {
        name: String,
        interactive: bool,
    },
}

/// What tamis keeps of a hit.
#[derive(Debug, Clone)]
pub struct Event {
    pub site: usize,
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    /// The page's host, lower-cased: one of the site's `hostnames`.
    pub hostname: String,
    pub path: String,
    pub referrer: Referrer,
    pub campaign: Campaign,
    pub location: Location,
    pub agent: Arc<Agent>,
    pub language: String,
    pub consent: Consent,
    pub visitor: Option<VisitorKey>,
    pub props: Vec<(String, String)>,
}

/// The sites and how hits name them, swapped whole on a reload.
pub struct SiteTable {
    pub sites: Vec<Arc<SiteSettings>>,
    /// Site ids by position, as the durable log records them.
    pub ids: Vec<Arc<str>>,
    by_domain: HashMap<String, usize>,
    by_tracker: HashMap<TrackerId, usize>,
}

impl SiteTable {
    fn new(sites: Vec<Arc<SiteSettings>>) -> SiteTable {
        let by_domain = sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let by_tracker = sites
            .iter()
            .enumerate()
            .flat_map(|(i, s)| s.trackers.iter().map(move |t| (t.clone(), i)))
            .collect();
        SiteTable {
            ids: sites.iter().map(|s| Arc::from(s.id.as_str())).collect(),
            sites,
            by_domain,
            by_tracker,
        }
    }
}

impl SiteTable {
    /// The sites a hit's `domain` names, each once. Plausible's script may
    /// send several comma-separated domains to count one page in several
    /// sites; naming a site twice must not count it twice.
    pub fn sites_for(&self, domain: &str) -> Vec<usize> {
        let mut sites: Vec<usize> = domain
            .split(',')
            .take(MAX_DOMAINS)
            .filter_map(|d| {
                let d = d.trim();
                // Domains come lower-case but for a few: no copy for the rest.
                let site = if d.bytes().any(|b| b.is_ascii_uppercase()) {
                    self.by_domain.get(d.to_ascii_lowercase().as_str())
                } else {
                    self.by_domain.get(d)
                };
                site.copied()
            })
            .collect();
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// The site another product's tracker names by its own id.
    pub fn site_for_tracker(&self, id: &TrackerId) -> Option<usize> {
        self.by_tracker.get(id).copied()
    }
}

impl std::ops::Index<usize> for SiteTable {
    type Output = Arc<SiteSettings>;
    fn index(&self, site: usize) -> &Arc<SiteSettings> {
        &self.sites[site]
    }
}

/// Most domains one hit may name.
const MAX_DOMAINS: usize = 10;

pub struct Privacy {
    /// Replaced whole by a reload (`Privacy::replace_sites`); read without
    /// a lock.
    table: ArcSwap<SiteTable>,
    agents: AgentClassifier,
    referrers: ReferrerClassifier,
    geo: Arc<GeoDb>,
    salts: Arc<SaltStore>,
}

impl Privacy {
    pub fn new(
        sites: Vec<Arc<SiteSettings>>,
        geo: Arc<GeoDb>,
        salts: Arc<SaltStore>,
    ) -> anyhow::Result<Privacy> {
        Ok(Privacy {
            table: ArcSwap::from_pointee(SiteTable::new(sites)),
            agents: AgentClassifier::new()?,
            referrers: ReferrerClassifier::new()?,
            geo,
            salts,
        })
    }

    /// The sites as configured now (a reload after this call does not
    /// change what it returns).
    pub fn sites(&self) -> arc_swap::Guard<Arc<SiteTable>> {
        self.table.load()
    }

    /// Puts a reloaded configuration's sites in place for the next hit.
    /// `sites` keeps every site at its position and may add some at the
    /// end (see `reload`): a position found before the swap stays valid.
    pub fn replace_sites(&self, sites: Vec<Arc<SiteSettings>>) {
        self.table.store(Arc::new(SiteTable::new(sites)));
    }

    /// The configured sites a hit's `domain` names ([`SiteTable::sites_for`]
    /// in the sites as configured now).
    pub fn sites_for(&self, domain: &str) -> Vec<usize> {
        self.table.load().sites_for(domain)
    }

    /// The site another product's tracker names by its own id.
    pub fn site_for_tracker(&self, id: &TrackerId) -> Option<usize> {
        self.table.load().site_for_tracker(id)
    }

    /// Runs the pipeline for one site of the hit, in the sites as
    /// configured now.
    pub fn process(&self, site_index: usize, hit: &RawHit<'_>) -> Result<Event, Dropped> {
        self.process_in(&self.table.load(), site_index, hit)
    }

    /// Runs the pipeline for one site of the hit, `site_index` being a
    /// position in `table` (a request loads the table once, through
    /// [`Privacy::sites`], for all its hits and its record).
    pub fn process_in(
        &self,
        table: &SiteTable,
        site_index: usize,
        hit: &RawHit<'_>,
    ) -> Result<Event, Dropped> {
        let site = &table.sites[site_index];
        let dropped = |reason| Dropped {
            reason,
            site: Some(site_index),
        };

        // 1. Opt-out signals, before anything else is read.
        let signals = Signals {
            sec_gpc: hit.sec_gpc,
            dnt: hit.dnt,
            payload_opt_out: hit.opt_out,
        };
        let opt_out = optout::signal(&signals, site);
        let state = ConsentState::parse(hit.consent);
        let decision = consent::decide(state, opt_out, site);
        if decision == Decision::Drop && opt_out.is_some() {
            return Err(dropped(DropReason::OptOut));
        }

        // 2. Truncate the address; the full one is not used past this line.
        let truncated = ip::truncate(hit.client_ip, site.ipv4_prefix, site.ipv6_prefix);

        // 3. Bots and prefetches.
        if is_prefetch(hit.sec_purpose, hit.purpose) {
            return Err(dropped(DropReason::Prefetch));
        }
        let agent = self.agents.classify(hit.user_agent);
        if agent.bot {
            return Err(dropped(DropReason::Bot));
        }

        let kind = match hit.name {
            "pageview" => EventKind::Pageview,
            "engagement" => EventKind::Engagement(hit.engagement),
            name if site.event_names.contains(name) => EventKind::Custom {
                name: name.to_string(),
                interactive: hit.interactive,
            },
            _ => return Err(dropped(DropReason::EventNotAllowed)),
        };

        // 4. Region from the truncated address.
        let location = self.geo.lookup(&truncated, site.geo_level);

        // 5-7. Referrer, URL.
        let page =
            url::reduce(hit.url, site, hit.hash_mode).map_err(|_| dropped(DropReason::Invalid))?;
        if !site.hostnames.contains(&page.hostname) {
            return Err(dropped(DropReason::HostnameNotAllowed));
        }
        let referrer = self.referrers.classify(hit.referrer, &site.hostnames);

        // 8. Consent.
        if decision == Decision::Drop {
            return Err(dropped(DropReason::ConsentDenied));
        }

        // 9. Daily visitor key, only for identified hits.
        let visitor = (decision == Decision::Identified).then(|| {
            let salt = self
                .salts
                .get_or_create(site_index, local_day(site, hit.at));
            visitor::key(&salt, &site.id, &truncated, &agent.reduced)
        });

        let props = match &kind {
            EventKind::Custom { .. } => hit
                .props
                .iter()
                .filter(|(k, _)| site.prop_keys.contains(k))
                .map(|(k, v)| (k.clone(), prop_value(v)))
                .collect(),
            _ => Vec::new(),
        };

        Ok(Event {
            site: site_index,
            at: hit.at,
            kind,
            // As Plausible writes `event:hostname`: without `www.`.
            hostname: match page.hostname.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => page.hostname,
            },
            path: page.path,
            referrer,
            campaign: page.campaign,
            location,
            agent,
            language: language(hit.accept_language),
            consent: consent::kept(state, opt_out),
            visitor,
            props,
        })
    }
}

/// A property's value as kept: redacted and cut to 200 characters. A link
/// (the `url` of Plausible's outbound-link and file-download events) loses
/// its query string and fragment, which can carry identifiers as a page
/// URL's can.
fn prop_value(value: &str) -> String {
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    let value = match value.split_once(['?', '#']) {
        Some((link, _)) if lower.starts_with("http://") || lower.starts_with("https://") => link,
        _ => value,
    };
    url::redact(value).chars().take(200).collect()
}

/// The site's local calendar day at `at`: salts rotate at local midnight.
pub fn local_day(site: &SiteSettings, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&site.timezone).date_naive()
}

/// The primary language subtag of the first Accept-Language entry (`fr`
/// of `fr-CA,fr;q=0.9`), or "" when there is none worth keeping.
pub fn language(accept_language: Option<&str>) -> String {
    let first = accept_language
        .and_then(|h| h.split(',').next())
        .and_then(|tag| tag.split(';').next())
        .and_then(|tag| tag.trim().split(['-', '_']).next())
        .unwrap_or_default();
    if (2..=3).contains(&first.len()) && first.bytes().all(|b| b.is_ascii_alphabetic()) {
        first.to_ascii_lowercase()
    } else {
        String::new()
    }
}

/// The rounding key of [`test_site`]'s configuration.
#[cfg(test)]
pub(crate) const TEST_ROUNDING_KEY: &str = "0123456789abcdef0123456789abcdef";

/// A site with PRIVACY.md's defaults, for tests of the steps.
#[cfg(test)]
pub(crate) fn test_site(id: &str) -> SiteSettings {
    let config: crate::config::Config = toml::from_str(&format!(
        "[query]\nrounding_key = '{TEST_ROUNDING_KEY}'\n[[site]]\nid = '{id}'"
    ))
    .expect("parses");
    let settings =
        crate::config::Settings::from_config(config, std::path::Path::new(".")).expect("valid");
    (*settings.sites[0]).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_codes_round_trip_and_labels_are_unique() {
        crate::privacy::coded::check_codes(&DropReason::ALL, |r| r as u8, DropReason::as_str);
        // The metrics' counters are indexed by code.
        for (i, reason) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?}");
        }
    }

    fn check_language(header: Option<&str>, expected: &str) {
        assert_eq!(language(header), expected, "{header:?}");
    }

    #[test]
    fn language_is_the_primary_subtag() {
        check_language(Some("fr-CA,fr;q=0.9,en;q=0.8"), "fr");
        check_language(Some("EN_us"), "en");
        check_language(Some("*"), "");
        check_language(Some("x-klingon"), "");
        check_language(None, "");
    }

    fn privacy() -> Privacy {
        let sites = vec![Arc::new(test_site("example.org"))];
        Privacy::new(
            sites,
            Arc::new(GeoDb::open(None, None).unwrap()),
            Arc::new(SaltStore::new()),
        )
        .unwrap()
    }

    const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

    fn hit(ua: &'static str) -> RawHit<'static> {
        RawHit {
            name: "pageview",
            url: "https://example.org/a?x=1",
            domain: "example.org",
            referrer: None,
            props: &[],
            hash_mode: HashMode::Off,
            consent: None,
            opt_out: false,
            client_ip: "198.51.100.77".parse().unwrap(),
            user_agent: ua,
            sec_gpc: None,
            dnt: None,
            sec_purpose: None,
            purpose: None,
            accept_language: Some("fr-CA"),
            engagement: Engagement::default(),
            interactive: true,
            at: Utc::now(),
        }
    }

    fn reason(hit: &RawHit<'_>) -> Option<&'static str> {
        privacy().process(0, hit).err().map(|d| d.reason.as_str())
    }

    #[test]
    fn steps_in_order() {
        assert_eq!(reason(&hit(FIREFOX)), None);
        let mut h = hit("Googlebot/2.1 (+http://www.google.com/bot.html)");
        h.sec_gpc = Some(b"1");
        assert_eq!(
            reason(&h),
            Some("opt_out"),
            "opt-out is read before the bot check"
        );
        assert_eq!(reason(&hit("curl/8.5.0")), Some("bot"));
        let mut h = hit(FIREFOX);
        h.sec_purpose = Some("prefetch");
        assert_eq!(reason(&h), Some("prefetch"));
        let mut h = hit(FIREFOX);
        h.url = "https://evil.example/";
        assert_eq!(reason(&h), Some("hostname_not_allowed"));
        let mut h = hit(FIREFOX);
        h.name = "signup";
        assert_eq!(reason(&h), Some("event_not_allowed"));
        let mut h = hit(FIREFOX);
        h.url = "not a url";
        assert_eq!(reason(&h), Some("invalid"));
    }

    #[test]
    fn denied_consent_is_counted_without_a_visitor_key() {
        let p = privacy();
        let mut h = hit(FIREFOX);
        assert!(p.process(0, &h).unwrap().visitor.is_some());
        h.consent = Some("denied");
        let event = p.process(0, &h).unwrap();
        assert!(event.visitor.is_none());
        assert_eq!(event.consent, Consent::Denied);
        assert_eq!(event.path, "/a");
        assert_eq!(event.language, "fr");
    }

    #[test]
    fn links_in_properties_lose_their_query_string() {
        assert_eq!(
            prop_value("https://elsewhere.example/path?q=1&token=abc#top"),
            "https://elsewhere.example/path"
        );
        assert_eq!(
            prop_value("HTTP://a.example/f.pdf#p2"),
            "HTTP://a.example/f.pdf"
        );
        assert_eq!(prop_value("plan?b"), "plan?b", "only links");
        assert_eq!(
            prop_value("https://a.example/u/jean@example.com"),
            "https://a.example/u/[email]"
        );
    }

    #[test]
    fn several_domains_fan_out() {
        let p = privacy();
        assert_eq!(p.sites_for("Example.org, unknown.org"), vec![0]);
        assert_eq!(
            p.sites_for("example.org,example.org,EXAMPLE.ORG"),
            vec![0],
            "a site counts once"
        );
        assert!(p.sites_for("unknown.org").is_empty());
    }
}
