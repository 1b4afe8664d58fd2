//! URL reduction: the page becomes a host and a path. Query strings and
//! fragments go, except allow-listed parameters (and the fragment's route
//! when the hit asks for hash mode and its site declares hash routing); e-mail addresses, IP addresses (IPv4 and IPv6),
//! long digit runs, UUIDs and token-like strings in what remains are
//! replaced by placeholders.

use std::borrow::Cow;
use std::sync::LazyLock;

use percent_encoding::percent_decode_str;
use regex::Regex;

use crate::config::SiteSettings;

/// Longest path kept, in bytes; longer ones are cut at a character boundary.
pub const MAX_PATH: usize = 1024;
/// Longest campaign value kept.
pub const MAX_CAMPAIGN: usize = 100;

/// What a site collecting campaigns keeps of a page's tags: the five
/// `utm_*` values, and which advertising click id the URL carried
/// (`gclid`, `msclkid`), by name only: the id's value identifies a click
/// and is never read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Campaign {
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub content: String,
    pub term: String,
    /// `gclid` or `msclkid` when the URL had one (the first), else "".
    pub click_id: String,
}

/// The advertising click ids whose presence Plausible's channels read
/// (`lib/plausible/ingestion/acquisition.ex`): Google Ads and Microsoft
/// Ads.
const CLICK_IDS: [&str; 2] = ["gclid", "msclkid"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    /// Lower-cased host, for the site's host-name allow-list.
    pub hostname: String,
    /// Redacted path, with allow-listed parameters (and the hash route) kept.
    pub path: String,
    /// Empty unless the site collects campaigns.
    pub campaign: Campaign,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`url` is not an absolute http(s) URL")]
    NotHttp,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}").expect("static regex")
});
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
        .expect("static regex")
});
static IPV4: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b").expect("static regex"));
/// Candidates for IPv6 addresses: a run of hex digits, colons and dots
/// holding at least two colons, not glued to a word on its left (so
/// `std::vec` is not read as `d::`). Whether a candidate is an address is
/// decided by parsing it ([`is_ipv6`]).
static IPV6: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[^0-9A-Za-z:.])([0-9A-Fa-f.]*:[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)")
        .expect("static regex")
});
static DIGITS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[0-9]{6,}").expect("static regex"));
/// Candidates for tokens: long runs of letters and digits, or long
/// base64url-like runs. Whether a candidate is a token is decided by
/// [`looks_like_token`], so slugs such as `rapport-annuel-2024` survive.
static TOKEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9_\-]{24,}|[A-Za-z0-9]{16,}").expect("static regex"));

/// Whether a hit asks for its fragment to count as part of the page
/// (Plausible's `h: 1`, which `tamis.js` sends with `data-hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashMode {
    #[default]
    Off,
    On,
}

/// The page of a hit. The fragment's route (`#/…`, `#!/…`) is kept only
/// when both the hit asks for it (`hash_mode`) and the site declares
/// `hash_routing`: the site's setting is the published policy, the hit's
/// flag says whether this page routes by fragment at all.
pub fn reduce(raw: &str, site: &SiteSettings, hash_mode: HashMode) -> Result<PageUrl, UrlError> {
    let parsed = url::Url::parse(raw.trim()).map_err(|_| UrlError::NotHttp)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::NotHttp);
    }
    let hostname = parsed
        .host_str()
        .ok_or(UrlError::NotHttp)?
        .to_ascii_lowercase();

    let mut path = redact(&decode(parsed.path()));
    if path.is_empty() {
        path.push('/');
    }

    let mut campaign = Campaign::default();
    let mut kept = Vec::new();
    for (name, value) in parsed.query_pairs() {
        if site.collect_campaigns {
            let slot = match name.as_ref() {
                "utm_source" => Some(&mut campaign.source),
                "utm_medium" => Some(&mut campaign.medium),
                "utm_campaign" => Some(&mut campaign.campaign),
                "utm_content" => Some(&mut campaign.content),
                "utm_term" => Some(&mut campaign.term),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = cut(&redact(value.trim()), MAX_CAMPAIGN).to_string();
                continue;
            }
            if let Some(id) = CLICK_IDS.iter().find(|id| **id == name.as_ref()) {
                if campaign.click_id.is_empty() && !value.trim().is_empty() {
                    campaign.click_id = (*id).to_string();
                }
                continue;
            }
        }
        if site
            .query_params
            .iter()
            .any(|allowed| allowed == name.as_ref())
        {
            kept.push(format!("{}={}", name, redact(&value)));
        }
    }
    if !kept.is_empty() {
        path.push('?');
        path.push_str(&kept.join("&"));
    }
    if site.hash_routing && hash_mode == HashMode::On {
        if let Some(fragment) = parsed
            .fragment()
            .filter(|f| f.starts_with('/') || f.starts_with("!/"))
        {
            let route = redact(&decode(fragment));
            // The route's own query string is dropped like the page's.
            let route = route.split('?').next().unwrap_or_default();
            path.push('#');
            path.push_str(route);
        }
    }
    Ok(PageUrl {
        hostname,
        path: cut(&path, MAX_PATH).to_string(),
        campaign,
    })
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

/// Replaces personal-looking parts of a path or value by placeholders.
pub fn redact(s: &str) -> String {
    if !may_need_redaction(s) {
        return s.to_string();
    }
    let s = EMAIL.replace_all(s, "[email]");
    // IPv6 first: an IPv4-mapped address (`::ffff:198.51.100.7`) goes whole.
    let s = IPV6.replace_all(&s, |caps: &regex::Captures<'_>| {
        let (before, candidate) = (&caps[1], &caps[2]);
        match ipv6_len(candidate) {
            Some(len) => format!("{before}[ip]{}", &candidate[len..]),
            None => caps[0].to_string(),
        }
    });
    let s = IPV4.replace_all(&s, "[ip]");
    let s = UUID.replace_all(&s, "[uuid]");
    let s = TOKEN.replace_all(&s, |caps: &regex::Captures<'_>| {
        let candidate = &caps[0];
        if looks_like_token(candidate) {
            "[token]".to_string()
        } else {
            candidate.to_string()
        }
    });
    DIGITS.replace_all(&s, "[number]").into_owned()
}

/// How much of a candidate is an IPv6 address: it parses as one once the
/// dots and colons that punctuation may have glued to its end are left
/// out, and it holds a hex digit (`::` alone is punctuation, not the
/// unspecified address).
fn ipv6_len(candidate: &str) -> Option<usize> {
    if !candidate.bytes().any(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let parses = |s: &str| s.parse::<std::net::Ipv6Addr>().is_ok();
    let dots = candidate.trim_end_matches('.');
    let both = dots.trim_end_matches(':');
    [candidate, dots, both]
        .into_iter()
        .find(|s| parses(s))
        .map(str::len)
}

/// A single pass that rules out every pattern at once for the common
/// path (no `@`, no run of 6 digits, no long run of letters and digits), so
/// most pages never reach the regular expressions.
fn may_need_redaction(s: &str) -> bool {
    let (mut digits, mut alnum, mut word, mut colons) = (0, 0, 0, 0);
    let mut previous = 0u8;
    for b in s.bytes() {
        // `@` may start an e-mail; a digit after `digit.` may be an address,
        // and so may anything with two colons (IPv6).
        colons += usize::from(b == b':');
        if b == b'@' || (b.is_ascii_digit() && previous == b'.' && digits > 0) || colons >= 2 {
            return true;
        }
        previous = b;
        digits = if b.is_ascii_digit() {
            digits + 1
        } else if b == b'.' {
            digits.min(1)
        } else {
            0
        };
        alnum = if b.is_ascii_alphanumeric() {
            alnum + 1
        } else {
            0
        };
        word = if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            word + 1
        } else {
            0
        };
        if digits >= 6 || alnum >= 16 || word >= 24 {
            return true;
        }
    }
    false
}

/// A token mixes letters and digits with no word structure: a slug like
/// `guide-du-citoyen-2025` has short hyphen-separated words, a session id
/// like `a8f3K29xLq0Zp7Rt` does not.
fn looks_like_token(s: &str) -> bool {
    let digits = s.bytes().filter(u8::is_ascii_digit).count();
    let letters = s.bytes().filter(u8::is_ascii_alphabetic).count();
    if digits < 2 || letters == 0 {
        return false;
    }
    let longest_word = s.split(['-', '_']).map(str::len).max().unwrap_or(0);
    longest_word >= 16
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::pipeline::test_site;

    fn check(raw: &str, configure: impl Fn(&mut SiteSettings), expected_path: Option<&str>) {
        let mut site = test_site("example.org");
        configure(&mut site);
        let got = reduce(raw, &site, HashMode::On).ok().map(|u| u.path);
        assert_eq!(got.as_deref(), expected_path, "{raw}");
    }

    fn defaults(_: &mut SiteSettings) {}

    #[test]
    fn path_only_by_default() {
        check("https://example.org/", defaults, Some("/"));
        check("https://example.org", defaults, Some("/"));
        check("https://example.org/a/b?x=1#top", defaults, Some("/a/b"));
        check("https://example.org/users/jean.tremblay@example.com/4501234567?email=a@b.c&utm_source=x#top", defaults, Some("/users/[email]/[number]"));
        check(
            "https://example.org/users/jean.tremblay%40example.com/",
            defaults,
            Some("/users/[email]/"),
        );
        check(
            "https://example.org/dossier/123e4567-e89b-12d3-a456-426614174000",
            defaults,
            Some("/dossier/[uuid]"),
        );
        check(
            "https://example.org/reset/a8f3K29xLq0Zp7Rt",
            defaults,
            Some("/reset/[token]"),
        );
        check(
            "https://example.org/commande-1234567",
            defaults,
            Some("/commande-[number]"),
        );
        check(
            "https://example.org/whois/198.51.100.77/details",
            defaults,
            Some("/whois/[ip]/details"),
        );
        check(
            "https://example.org/whois/2001:db8:85a3::8a2e:370:7334/details",
            defaults,
            Some("/whois/[ip]/details"),
        );
        check(
            "https://example.org/v1.2/guide",
            defaults,
            Some("/v1.2/guide"),
        );
        check(
            "https://example.org/guide-du-citoyen-2025/annexe-12",
            defaults,
            Some("/guide-du-citoyen-2025/annexe-12"),
        );
        check(
            "https://example.org/programme/aide-financiere-aux-etudes",
            defaults,
            Some("/programme/aide-financiere-aux-etudes"),
        );
        check(
            "https://example.org/2025/11/nouvelles",
            defaults,
            Some("/2025/11/nouvelles"),
        );
        check("ftp://example.org/", defaults, None);
        check("/relative", defaults, None);
        check("javascript:alert(1)", defaults, None);
    }

    fn check_redact(value: &str, expected: &str) {
        assert_eq!(redact(value), expected, "{value}");
    }

    /// Issue 12, point 10: an IPv6 address in a path or a property value
    /// was kept while IPv4 was redacted.
    #[test]
    fn ipv6_in_content_is_redacted() {
        check_redact("/whois/2001:db8::1", "/whois/[ip]");
        check_redact("/whois/2001:db8::1/", "/whois/[ip]/");
        check_redact("/peer/[2001:db8:0:0:1::7]:443", "/peer/[[ip]]:443");
        check_redact("client 2001:DB8::A8F3 said hi", "client [ip] said hi");
        check_redact("fe80::1%eth0", "[ip]%eth0");
        check_redact("(2001:db8::1:)", "([ip]:)");
        check_redact("::1", "[ip]");
        check_redact("from ::ffff:198.51.100.77.", "from [ip].");
        check_redact("ip=2001:db8::1&x=1", "ip=[ip]&x=1");
        check_redact("/std::vec::Vec", "/std::vec::Vec");
        check_redact("at 12:30:00", "at 12:30:00");
        check_redact("a::b::c", "a::b::c");
        check_redact("/x::", "/x::");
        check_redact("/::/", "/::/");
    }

    #[test]
    fn allow_listed_parameters_and_hash_routes() {
        check(
            "https://example.org/recherche?q=permis&page=2&token=abc",
            |s| s.query_params = vec!["q".into()],
            Some("/recherche?q=permis"),
        );
        check(
            "https://example.org/recherche?q=moi@ici.ca",
            |s| s.query_params = vec!["q".into()],
            Some("/recherche?q=[email]"),
        );
        check(
            "https://example.org/app#/dossiers/4501234567?x=1",
            |s| s.hash_routing = true,
            Some("/app#/dossiers/[number]"),
        );
        check(
            "https://example.org/app#section-2",
            |s| s.hash_routing = true,
            Some("/app"),
        );
    }

    #[test]
    fn the_route_needs_both_the_hit_and_the_site() {
        let mut site = test_site("example.org");
        let raw = "https://example.org/app#/dossiers";
        let path = |site: &SiteSettings, mode| reduce(raw, site, mode).unwrap().path;
        assert_eq!(
            path(&site, HashMode::On),
            "/app",
            "site without hash_routing"
        );
        site.hash_routing = true;
        assert_eq!(path(&site, HashMode::Off), "/app", "hit without h: 1");
        assert_eq!(path(&site, HashMode::On), "/app#/dossiers");
    }

    #[test]
    fn campaigns_only_when_enabled() {
        let mut site = test_site("example.org");
        let raw = "https://example.org/?utm_source=infolettre&utm_medium=email&utm_campaign=hiver\
                   &utm_content=bouton&utm_term=permis&gclid=Cj0KCQ123&msclkid=abc";
        assert_eq!(
            reduce(raw, &site, HashMode::Off).unwrap().campaign,
            Campaign::default()
        );
        site.collect_campaigns = true;
        let got = reduce(raw, &site, HashMode::Off).unwrap();
        assert_eq!(
            got.campaign,
            Campaign {
                source: "infolettre".into(),
                medium: "email".into(),
                campaign: "hiver".into(),
                content: "bouton".into(),
                term: "permis".into(),
                click_id: "gclid".into(),
            },
            "the click id by name, never its value"
        );
        assert_eq!(got.path, "/");
        let got = reduce("https://example.org/?gclid=", &site, HashMode::Off).unwrap();
        assert_eq!(got.campaign.click_id, "", "an empty id is no click");
    }

    #[test]
    fn long_paths_are_cut_on_a_char_boundary() {
        let raw = format!("https://example.org/{}", "é".repeat(2000));
        let got = reduce(&raw, &test_site("example.org"), HashMode::Off).unwrap();
        assert!(got.path.len() <= MAX_PATH);
    }
}
