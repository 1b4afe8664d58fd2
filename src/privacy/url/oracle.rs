//! The URL reduction as it was before the one-pass scanner (issue 16):
//! `Url::parse` for every page and a chain of regular expressions for the
//! redaction. Kept, for tests only, as the oracle the scanner is compared
//! with (`super::equivalence`); not to be changed.

use std::borrow::Cow;
use std::sync::LazyLock;

use percent_encoding::percent_decode_str;
use regex::Regex;

use super::{Campaign, HashMode, PageUrl, UrlError, CLICK_IDS, MAX_CAMPAIGN, MAX_PATH};
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
