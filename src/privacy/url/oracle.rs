//! The URL reduction as it was before the one-pass scanner (issue 16):
//! `Url::parse` for every page and a chain of regular expressions for the
//! redaction. Kept, for tests only, as the oracle the scanner is compared
//! with (`super::equivalence`); not to be changed.

use std::sync::LazyLock;

use regex::Regex;

// The helpers the scanner kept as they were are shared, not copied.
use super::{
    cut, decode, ipv6_len, looks_like_token, may_need_redaction, Campaign, HashMode, PageUrl,
    UrlError, CLICK_IDS, MAX_CAMPAIGN, MAX_PATH,
};
use crate::config::SiteSettings;

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
