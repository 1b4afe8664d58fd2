//! URL reduction: the page becomes a host and a path. Query strings and
//! fragments go, except allow-listed parameters (and the fragment's route
//! when the hit asks for hash mode and its site declares hash routing); e-mail addresses, IP addresses (IPv4 and IPv6),
//! long digit runs, UUIDs and token-like strings in what remains are
//! replaced by placeholders.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

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
///
/// A URL in the plain form nearly every page has is cut into its parts
/// by hand ([`Parts::split`]); anything else goes through `Url::parse`,
/// whose answer the plain form is known to give (the equivalence test
/// compares both on every input it makes).
pub fn reduce(raw: &str, site: &SiteSettings, hash_mode: HashMode) -> Result<PageUrl, UrlError> {
    let raw = raw.trim();
    if let Some(parts) = Parts::split(raw) {
        return Ok(reduce_parts(&parts, site, hash_mode));
    }
    let parsed = url::Url::parse(raw).map_err(|_| UrlError::NotHttp)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(UrlError::NotHttp);
    }
    let parts = Parts {
        host: parsed.host_str().ok_or(UrlError::NotHttp)?,
        path: parsed.path(),
        query: parsed.query(),
        fragment: parsed.fragment(),
    };
    Ok(reduce_parts(&parts, site, hash_mode))
}

/// What the reduction reads of an absolute http(s) URL, as `Url` gives
/// them (its path, query and fragment may still be percent-encoded).
struct Parts<'a> {
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Parts<'a> {
    /// The parts of `http(s)://host[:port][/path][?query][#fragment]` when
    /// `Url::parse` would give the same ones once decoded: a lower-case
    /// scheme, a host of ASCII letters, digits, dots and hyphens that is
    /// neither an address nor punycode, a port that is a port, and no
    /// byte `Url` rewrites (controls, spaces, backslashes, quotes and the
    /// like, dot segments). Non-ASCII text is kept: `Url` percent-encodes
    /// it and the reduction decodes it back. `None` means "ask `Url`", not
    /// "refused".
    fn split(raw: &'a str) -> Option<Parts<'a>> {
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))?;
        let host_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
            .count();
        let (host, mut rest) = rest.split_at(host_len);
        if !is_plain_host(host) {
            return None;
        }
        if let Some(after) = rest.strip_prefix(':') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if !(1..=5).contains(&digits) || after[..digits].parse::<u16>().is_err() {
                return None;
            }
            rest = &after[digits..];
        }
        if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) || !rest.bytes().all(plain_byte)
        {
            return None;
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (rest, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        // `Url` resolves `.` and `..` segments, also percent-encoded.
        if path.contains("/.") || path.contains("%2e") || path.contains("%2E") {
            return None;
        }
        Some(Parts {
            host,
            path: if path.is_empty() { "/" } else { path },
            query,
            fragment,
        })
    }
}

/// The host of a plain absolute http(s) URL ([`Parts::split`]), as
/// written: `Url::parse` would give the same, lower-cased, and read it as
/// a domain name, not an address.
pub(crate) fn plain_host(raw: &str) -> Option<&str> {
    Parts::split(raw).map(|parts| parts.host)
}

/// A host `Url` keeps as written but for its case: it starts with a
/// letter or digit, its last label starts with a letter (a host ending
/// in a number is read as an IPv4 address) and no label is punycode
/// (which `Url` checks).
fn is_plain_host(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or_default();
    host.as_bytes()
        .first()
        .is_some_and(u8::is_ascii_alphanumeric)
        && last.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
        && !host.split('.').any(|label| {
            label
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("xn--"))
        })
}

/// A byte of a path, query or fragment that `Url` leaves as it is, or
/// percent-encodes in a way the reduction's decoding undoes (non-ASCII).
fn plain_byte(b: u8) -> bool {
    !matches!(
        b,
        0..=0x20 | 0x7f | b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
    )
}

fn reduce_parts(parts: &Parts<'_>, site: &SiteSettings, hash_mode: HashMode) -> PageUrl {
    let hostname = parts.host.to_ascii_lowercase();
    let mut path = redact(&decode(parts.path));
    if path.is_empty() {
        path.push('/');
    }

    let mut campaign = Campaign::default();
    let mut separator = '?';
    let query = parts.query.unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
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
                // The last of repeated tags wins.
                slot.clear();
                redact_into(value.trim(), slot);
                slot.truncate(cut(slot, MAX_CAMPAIGN).len());
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
            path.push(separator);
            separator = '&';
            path.push_str(&name);
            path.push('=');
            redact_into(&value, &mut path);
        }
    }
    if site.hash_routing && hash_mode == HashMode::On {
        if let Some(fragment) = parts
            .fragment
            .filter(|f| f.starts_with('/') || f.starts_with("!/"))
        {
            let route = redact(&decode(fragment));
            // The route's own query string is dropped like the page's.
            let route = route.split('?').next().unwrap_or_default();
            path.push('#');
            path.push_str(route);
        }
    }
    path.truncate(cut(&path, MAX_PATH).len());
    PageUrl {
        hostname,
        path,
        campaign,
    }
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_decode_str(s).decode_utf8_lossy()
}

/// Replaces personal-looking parts of a path or value by placeholders.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    redact_into(s, &mut out);
    out
}

/// What each pattern becomes, in the order the patterns apply: an e-mail
/// address, an IPv6 address (first, so that an IPv4-mapped one goes
/// whole), an IPv4 address, a UUID, a token, a long digit run. A pattern
/// is looked for only in the text the earlier ones left.
const PLACEHOLDERS: [&str; 6] = ["[email]", "[ip]", "[ip]", "[uuid]", "[token]", "[number]"];

/// [`redact`], appended to `out`, in one walk over `s`.
///
/// Every pattern is made of ASCII letters, digits and `._%+-@:` only, so
/// the text splits into chunks of those bytes between other characters,
/// which no match crosses; each chunk is searched pattern by pattern
/// (each one in the text the earlier ones left, a placeholder standing
/// between) by hand-written matchers, without regular expressions or
/// intermediate strings. What a pattern sees of the text around a chunk
/// is only whether the character next to it is a word character (the
/// `\b` of an IPv4 address).
fn redact_into(s: &str, out: &mut String) {
    if !may_need_redaction(s) {
        out.push_str(s);
        return;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && !in_chunk(bytes[i]) {
            i += 1;
        }
        out.push_str(&s[start..i]);
        if i == bytes.len() {
            break;
        }
        let chunk = i;
        while i < bytes.len() && in_chunk(bytes[i]) {
            i += 1;
        }
        // Most chunks are plain words: the same quick test as for the whole.
        if !may_need_redaction(&s[chunk..i]) {
            out.push_str(&s[chunk..i]);
            continue;
        }
        let edges = Edges {
            left_word: s[..chunk].chars().next_back().is_some_and(is_word),
            right_word: s[i..].chars().next().is_some_and(is_word),
        };
        Scanner { s, out: &mut *out }.pattern(0, chunk, i, edges);
    }
}

/// Whether a byte can be part of any pattern.
fn in_chunk(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'.' | b'_' | b'%' | b'+' | b'-' | b'@' | b':')
}

/// A word character as `\b` reads one (Unicode's, for the regular
/// expressions replaced).
fn is_word(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        regex_syntax::is_word_character(c)
    }
}

/// Whether the characters just outside a stretch of text are word
/// characters (`\w`); a placeholder is not.
#[derive(Clone, Copy)]
struct Edges {
    left_word: bool,
    right_word: bool,
}

/// A pattern found: `start..end` is replaced; the search for the same
/// pattern goes on from `resume` (past the end when a candidate was only
/// partly an address).
struct Found {
    start: usize,
    end: usize,
    resume: usize,
}

struct Scanner<'s, 'o> {
    s: &'s str,
    out: &'o mut String,
}

impl Scanner<'_, '_> {
    /// Writes `s[a..b]` with pattern `level` and the later ones replaced.
    fn pattern(&mut self, level: usize, a: usize, b: usize, edges: Edges) {
        if a == b {
            return;
        }
        if level == PLACEHOLDERS.len() {
            self.out.push_str(&self.s[a..b]);
            return;
        }
        let (mut cursor, mut from) = (a, a);
        while let Some(found) = self.find(level, a, b, from, edges) {
            let before = Edges {
                left_word: cursor == a && edges.left_word,
                right_word: false,
            };
            self.pattern(level + 1, cursor, found.start, before);
            self.out.push_str(PLACEHOLDERS[level]);
            cursor = found.end;
            from = found.resume;
        }
        let rest = Edges {
            left_word: cursor == a && edges.left_word,
            right_word: edges.right_word,
        };
        self.pattern(level + 1, cursor, b, rest);
    }

    /// The first match of pattern `level` in `s[a..b]` starting at or
    /// after `from`.
    fn find(&self, level: usize, a: usize, b: usize, from: usize, edges: Edges) -> Option<Found> {
        let bytes = &self.s.as_bytes()[..b];
        match level {
            0 => email(bytes, from),
            1 => ipv6(self.s, bytes, a, from),
            2 => ipv4(bytes, a, from, edges),
            3 => uuid(bytes, from),
            4 => token(self.s, bytes, from),
            _ => digits(bytes, from),
        }
    }
}

/// `[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`, leftmost and, for
/// the domain, longest.
fn email(bytes: &[u8], from: usize) -> Option<Found> {
    let local = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
    let mut at = from;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'@') {
        at += offset;
        let mut start = at;
        while start > from && local(bytes[start - 1]) {
            start -= 1;
        }
        let host = &bytes[at + 1..];
        let run = host.iter().take_while(|&&b| domain(b)).count();
        // The last dot, not the first character, followed by two letters.
        let dot = (1..run.saturating_sub(2)).rev().find(|&j| {
            host[j] == b'.'
                && host[j + 1].is_ascii_alphabetic()
                && host[j + 2].is_ascii_alphabetic()
        });
        if let (true, Some(dot)) = (start < at, dot) {
            let letters = host[dot + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            let end = at + 1 + dot + 1 + letters;
            return Some(Found {
                start,
                end,
                resume: end,
            });
        }
        at += 1;
    }
    None
}

/// An IPv6 candidate (a run of hex digits, colons and dots with two
/// colons, not glued on its left to a letter, digit, colon or dot) that
/// [`ipv6_len`] reads as an address, at least in part.
fn ipv6(s: &str, bytes: &[u8], a: usize, from: usize) -> Option<Found> {
    let hex_or_dot = |b: u8| b.is_ascii_hexdigit() || b == b'.';
    let mut q = from;
    while q < bytes.len() {
        // At `a` the left is a placeholder, a non-pattern character or the start.
        let glued =
            q > a && (bytes[q - 1].is_ascii_alphanumeric() || b":.".contains(&bytes[q - 1]));
        if glued {
            q += 1;
            continue;
        }
        let mut end = q;
        let mut colons = 0;
        while end < bytes.len() {
            if bytes[end] == b':' {
                colons += 1;
            } else if !hex_or_dot(bytes[end]) {
                break;
            }
            end += 1;
        }
        if colons < 2 {
            q += 1;
            continue;
        }
        match ipv6_len(&s[q..end]) {
            Some(len) => {
                return Some(Found {
                    start: q,
                    end: q + len,
                    resume: end,
                })
            }
            None => q = end,
        }
    }
    None
}

/// `\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b`.
fn ipv4(bytes: &[u8], a: usize, from: usize, edges: Edges) -> Option<Found> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = from;
    while start < bytes.len() {
        let bounded = if start == a {
            !edges.left_word
        } else {
            !word(bytes[start - 1])
        };
        if bounded && bytes[start].is_ascii_digit() {
            if let Some(end) = dotted_quad(&bytes[start..]).map(|len| start + len) {
                let closed = match bytes.get(end) {
                    Some(&b) => !word(b),
                    None => !edges.right_word,
                };
                if closed {
                    return Some(Found {
                        start,
                        end,
                        resume: end,
                    });
                }
            }
        }
        start += 1;
    }
    None
}

/// The length of four runs of one to three digits joined by dots at the
/// start of `bytes`, each run whole.
fn dotted_quad(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    for part in 0..4 {
        if part > 0 {
            if bytes.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=3).contains(&run) {
            return None;
        }
        i += run;
    }
    Some(i)
}

/// `(?i)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`.
fn uuid(bytes: &[u8], from: usize) -> Option<Found> {
    const LEN: usize = 36;
    let is_uuid = |w: &[u8]| {
        w.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
    };
    (from..(bytes.len() + 1).saturating_sub(LEN))
        .find(|&start| is_uuid(&bytes[start..start + LEN]))
        .map(|start| Found {
            start,
            end: start + LEN,
            resume: start + LEN,
        })
}

/// A candidate of `[A-Za-z0-9_-]{24,}|[A-Za-z0-9]{16,}` (leftmost, the
/// first alternative first) that [`looks_like_token`]; candidates that do
/// not are kept and skipped whole.
fn token(s: &str, bytes: &[u8], from: usize) -> Option<Found> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let run = |from: usize, class: &dyn Fn(u8) -> bool| {
        from + bytes[from..].iter().take_while(|&&b| class(b)).count()
    };
    let mut p = from;
    while p < bytes.len() {
        if !word(bytes[p]) {
            p += 1;
            continue;
        }
        let word_end = run(p, &word);
        let mut candidate = (word_end - p >= 24).then_some((p, word_end));
        let mut q = p;
        while candidate.is_none() && q < word_end {
            if !bytes[q].is_ascii_alphanumeric() {
                q += 1;
                continue;
            }
            let alnum_end = run(q, &|b: u8| b.is_ascii_alphanumeric());
            if alnum_end - q >= 16 {
                candidate = Some((q, alnum_end));
            }
            q = alnum_end;
        }
        match candidate {
            Some((start, end)) if looks_like_token(&s[start..end]) => {
                return Some(Found {
                    start,
                    end,
                    resume: end,
                })
            }
            Some((_, end)) => p = end,
            None => p = word_end,
        }
    }
    None
}

/// `[0-9]{6,}`.
fn digits(bytes: &[u8], from: usize) -> Option<Found> {
    let mut p = from;
    while p < bytes.len() {
        if !bytes[p].is_ascii_digit() {
            p += 1;
            continue;
        }
        let end = p + bytes[p..].iter().take_while(|b| b.is_ascii_digit()).count();
        if end - p >= 6 {
            return Some(Found {
                start: p,
                end,
                resume: end,
            });
        }
        p = end;
    }
    None
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
mod equivalence;
#[cfg(test)]
mod oracle;

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
