//! User-agent handling: bot detection, reduction of the user agent to
//! browser name + major.minor version, OS name + major version and device
//! class, and the prefetch check.
//!
//! Owns the bot lists (isbot, crawler-user-agents) and uap-core's
//! `regexes.yaml`, all compiled once at start-up, the translation of
//! uap-core's families into the names Plausible stores, plus a bounded cache
//! of results. It must never log, store or return the raw user agent or
//! anything finer than name / major.minor version / device class (no device
//! model, no OS minor version, no patch or build numbers).
//!
//! Names and versions are written as Plausible writes them
//! (`plausible/analytics`, `lib/plausible/ingestion/event.ex`: `os_name`,
//! `browser_name`, `browser_version`, `major_minor`): Plausible takes
//! UAInspector's names (Matomo's device-detector: "Mac", "GNU/Linux",
//! "Microsoft Edge", "Samsung Browser"), merges mobile variants into their
//! browser ("Chrome Mobile" is "Chrome", "Mobile Safari" is "Safari"), calls
//! in-app browsers "Mobile App" without a version, and keeps a browser's
//! version to its first two parts ("70.0"). tamis parses with uap-core and
//! translates its families ([`BROWSER_NAMES`], [`MOBILE_APPS`],
//! [`OS_NAMES`]); families not listed are the same in both. Data stored
//! before this translation keeps uap-core's names ("Mac OS X", "Linux",
//! "Mobile Safari") and major versions ("70").

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use crate::privacy::coded::coded_enum;

const ISBOT: &str = include_str!("../../data/lists/isbot.json");
const CRAWLERS: &str = include_str!("../../data/lists/crawler-user-agents.json");
const UAP_REGEXES: &str = include_str!("../../data/lists/uap-regexes.yaml");

/// 16 shards × 1024 entries ≈ 16k cached user agents; at most ~10 MB even
/// if every key is as long as allowed.
const SHARDS: usize = 16;
const SHARD_CAPACITY: usize = 1024;
/// Longer user agents are classified on every request instead of cached, so
/// that an attacker cannot grow the cache with huge keys. Real browsers stay
/// well below this.
const MAX_CACHED_LEN: usize = 512;
/// Families coming out of uap may be copied from the user agent (`$1`), so
/// anything long or odd is replaced with "Other" rather than passed on.
const MAX_FAMILY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("bot list is not valid JSON: {0}")]
    BotList(#[from] serde_json::Error),
    #[error("combined bot pattern does not compile: {0}")]
    BotRegex(#[from] regex::Error),
    /// Boxed: fancy-regex's error is large and this is a cold path.
    #[error("combined look-around bot pattern does not compile: {0}")]
    BotFancyRegex(#[from] Box<fancy_regex::Error>),
    #[error("uap regexes.yaml is not valid YAML: {0}")]
    UapYaml(#[from] serde_yaml::Error),
    #[error("uap regexes do not compile: {0}")]
    Uap(#[from] ua_parser::Error),
}

coded_enum! {
    /// The device class, from the user agent. Codes are written to the
    /// journal; labels are the `device` column's values.
    pub enum Device {
        Desktop = 0 => "Desktop",
        Mobile = 1 => "Mobile",
        Tablet = 2 => "Tablet",
    }
}

/// uap-core browser families whose name in Plausible differs: the merges
/// of `browser_name/1` in Plausible's `lib/plausible/ingestion/event.ex`
/// ("Chrome Mobile" → "Chrome"…) and UAInspector's own spellings
/// (device-detector's `Parser/Client/Browser.php`).
const BROWSER_NAMES: &[(&str, &str)] = &[
    ("Chrome Mobile", "Chrome"),
    ("Chrome Mobile iOS", "Chrome"),
    ("Firefox Mobile", "Firefox"),
    ("Firefox iOS", "Firefox"),
    ("Mobile Safari", "Safari"),
    ("Mobile Safari UI/WKWebView", "Safari"),
    ("Opera Mobile", "Opera"),
    ("Opera Mini", "Opera"),
    ("Edge", "Microsoft Edge"),
    ("Edge Mobile", "Microsoft Edge"),
    ("IE", "Internet Explorer"),
    ("Samsung Internet", "Samsung Browser"),
    ("Amazon Silk", "Mobile Silk"),
    ("DuckDuckGo Mobile", "DuckDuckGo Privacy Browser"),
    ("QQ Browser Mobile", "QQ Browser"),
    ("Whale", "Whale Browser"),
    ("Seznam prohlížeč", "Seznam Browser"),
    ("BlackBerry WebKit", "BlackBerry Browser"),
    ("Android", "Android Browser"),
    ("Epiphany", "GNOME Web"),
];

/// uap-core families of in-app browsers, which UAInspector classes as
/// mobile apps and Plausible stores as "Mobile App" without a version.
const MOBILE_APPS: &[&str] = &[
    "Facebook",
    "Facebook Messenger",
    "Instagram",
    "Pinterest",
    "Snapchat",
    "Twitter",
    "LINE",
    // The Google Search app (GSA).
    "Google",
    // Plausible maps UAInspector's "Chrome Webview" to "Mobile App".
    "Chrome Mobile WebView",
];

/// Plausible's name for an in-app browser.
const MOBILE_APP: &str = "Mobile App";

/// uap-core OS families whose UAInspector name (device-detector's
/// `Parser/OperatingSystem.php`), which Plausible stores, differs.
const OS_NAMES: &[(&str, &str)] = &[
    ("Mac OS X", "Mac"),
    ("Mac OS", "Mac"),
    ("Linux", "GNU/Linux"),
    ("ATV OS X", "tvOS"),
    ("WatchOS", "watchOS"),
    ("Linux Mint", "Mint"),
    ("Brew MP", "Brew"),
    ("BREW", "Brew"),
];

/// Everything tamis keeps from a user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReducedAgent {
    pub browser: String,
    /// Major and minor version ("131.0"), or the major alone when the user
    /// agent gives no minor; "" when unknown, and for in-app browsers.
    pub browser_version: String,
    pub os: String,
    /// The OS's major version ("10", "17"), or "" when unknown. Plausible
    /// keeps major.minor; PRIVACY.md keeps versions to their major. It is
    /// not part of the visitor key (`privacy::visitor::key`), so adding it
    /// changed no visitor's key.
    pub os_version: String,
    pub device: Device,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Matched a bot pattern, or the user agent was empty.
    pub bot: bool,
    pub reduced: ReducedAgent,
}

/// Built once at start-up and shared; `classify` is cheap on a cache hit
/// (one hash, one short lock).
pub struct AgentClassifier {
    /// Every bot pattern the `regex` crate accepts, as one alternation.
    bots: regex::bytes::Regex,
    /// The few patterns that need look-around, as one alternation.
    bots_lookaround: fancy_regex::Regex,
    browsers: ua_parser::user_agent::Extractor<'static>,
    systems: ua_parser::os::Extractor<'static>,
    cache: Cache,
}

impl AgentClassifier {
    pub fn new() -> Result<Self, AgentError> {
        let patterns = bot_patterns()?;
        let bots = regex::bytes::RegexBuilder::new(&alternation(&patterns.plain))
            // No `u` flag in the JS originals: \w, \d, \b are ASCII there too.
            .unicode(false)
            .case_insensitive(true)
            .size_limit(256 << 20)
            .dfa_size_limit(64 << 20)
            .build()?;
        // Inline `(?i)`, not the builder flag: fancy-regex 0.14 ignores the
        // builder flag inside look-behinds, and isbot's `(?<!google/)google`
        // would then flag "Google/google" in Instagram's user agent.
        let bots_lookaround =
            fancy_regex::Regex::new(&format!("(?i){}", alternation(&patterns.lookaround)))
                .map_err(Box::new)?;
        // The device extractor is not built: it is the largest part of
        // uap-core and only yields models, which tamis must not keep.
        let uap: ua_parser::Regexes<'static> = serde_yaml::from_str(UAP_REGEXES)?;
        let browsers = ua_parser::user_agent::Builder::new()
            .push_all(uap.user_agent_parsers)?
            .build()
            .map_err(ua_parser::Error::from)?;
        let systems = ua_parser::os::Builder::new()
            .push_all(uap.os_parsers)
            .map_err(ua_parser::Error::from)?
            .build()
            .map_err(ua_parser::Error::from)?;
        Ok(Self {
            bots,
            bots_lookaround,
            browsers,
            systems,
            cache: Cache::new(),
        })
    }

    /// Classifies a user agent, from the cache when it was seen recently.
    pub fn classify(&self, user_agent: &str) -> Arc<Agent> {
        if user_agent.len() > MAX_CACHED_LEN {
            return Arc::new(self.compute(user_agent));
        }
        let hash = self.cache.hasher.hash_one(user_agent);
        let shard = self.cache.shard(hash);
        if let Some((key, agent)) = lock(shard).get(&hash) {
            if **key == *user_agent {
                return Arc::clone(agent);
            }
        }
        // Computed outside the lock so that a miss never blocks hits on
        // the same shard; a racing duplicate computation is harmless.
        let agent = Arc::new(self.compute(user_agent));
        let mut map = lock(shard);
        if map.len() >= SHARD_CAPACITY {
            map.clear();
        }
        map.insert(hash, (user_agent.into(), Arc::clone(&agent)));
        agent
    }

    fn compute(&self, user_agent: &str) -> Agent {
        Agent {
            bot: self.is_bot(user_agent),
            reduced: self.reduce(user_agent),
        }
    }

    fn is_bot(&self, user_agent: &str) -> bool {
        user_agent.trim().is_empty()
            || self.bots.is_match(user_agent.as_bytes())
            // A backtracking-limit error is not evidence of a bot.
            || self.bots_lookaround.is_match(user_agent).unwrap_or(false)
    }

    fn reduce(&self, user_agent: &str) -> ReducedAgent {
        let (browser, browser_version) = match self.browsers.extract(user_agent) {
            Some(ua) => browser_name_and_version(&ua.family, ua.major, ua.minor),
            None => (family("Other"), String::new()),
        };
        let (os, os_version) = match self.systems.extract(user_agent) {
            Some(os) => (
                os_name(&os.os, os.major.as_deref(), user_agent),
                major(os.major.as_deref()),
            ),
            None => (family("Other"), String::new()),
        };
        ReducedAgent {
            browser,
            browser_version,
            os,
            os_version,
            device: device(user_agent),
        }
    }
}

/// Plausible's browser name and version for a uap-core family and version.
fn browser_name_and_version(
    uap_family: &str,
    major: Option<&str>,
    minor: Option<&str>,
) -> (String, String) {
    if MOBILE_APPS.contains(&uap_family) {
        return (MOBILE_APP.to_owned(), String::new());
    }
    let name = BROWSER_NAMES
        .iter()
        .find(|(uap, _)| *uap == uap_family)
        .map_or_else(
            || family(uap_family),
            |(_, plausible)| (*plausible).to_owned(),
        );
    // "Other" has no meaningful version.
    let version = if name == "Other" {
        String::new()
    } else {
        major_minor(major, minor)
    };
    (name, version)
}

/// A version's major part when it is a number ("10"), else "": uap-core
/// sometimes puts words there ("Vista", "XP").
fn major(major: Option<&str>) -> String {
    major
        .filter(|m| !m.is_empty() && m.len() <= 4 && m.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_default()
        .to_owned()
}

/// Plausible's OS name for a uap-core family. iPads on iOS 13 and later
/// run iPadOS, which UAInspector names so (uap-core says "iOS").
fn os_name(uap_family: &str, major: Option<&str>, user_agent: &str) -> String {
    if uap_family == "iOS" && user_agent.contains("iPad") {
        let version = major.and_then(|m| m.parse::<u32>().ok());
        if version.is_some_and(|v| v >= 13) {
            return "iPadOS".to_owned();
        }
    }
    OS_NAMES
        .iter()
        .find(|(uap, _)| *uap == uap_family)
        .map_or_else(
            || family(uap_family),
            |(_, plausible)| (*plausible).to_owned(),
        )
}

/// True when the request is a speculative prefetch (Chrome's
/// `Sec-Purpose: prefetch;prerender`, the legacy `Purpose: prefetch`):
/// nobody has seen the page yet.
pub fn is_prefetch(sec_purpose: Option<&str>, purpose: Option<&str>) -> bool {
    [sec_purpose, purpose].into_iter().flatten().any(|v| {
        v.split([',', ';'])
            .any(|t| t.trim().eq_ignore_ascii_case("prefetch"))
    })
}

struct BotPatterns {
    plain: Vec<String>,
    lookaround: Vec<String>,
    /// Patterns neither engine accepts; expected to be empty (tested).
    rejected: Vec<String>,
}

/// Reads both lists, translates JS regex quirks, dedupes, and sorts each
/// pattern into the engine that can run it.
fn bot_patterns() -> Result<BotPatterns, AgentError> {
    #[derive(serde::Deserialize)]
    struct Crawler {
        pattern: String,
    }
    let isbot: Vec<String> = serde_json::from_str(ISBOT)?;
    let crawlers: Vec<Crawler> = serde_json::from_str(CRAWLERS)?;
    let mut seen = std::collections::HashSet::new();
    let mut out = BotPatterns {
        plain: Vec::new(),
        lookaround: Vec::new(),
        rejected: Vec::new(),
    };
    for p in isbot
        .into_iter()
        .chain(crawlers.into_iter().map(|c| c.pattern))
    {
        let p = js_to_rust(&p);
        if !seen.insert(p.clone()) {
            continue;
        }
        if regex::bytes::RegexBuilder::new(&p)
            .unicode(false)
            .build()
            .is_ok()
        {
            out.plain.push(p);
        } else if fancy_regex::Regex::new(&p).is_ok() {
            out.lookaround.push(p);
        } else {
            out.rejected.push(p);
        }
    }
    Ok(out)
}

fn alternation(patterns: &[String]) -> String {
    let mut all = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    if all.is_empty() {
        all.push_str("[^\\s\\S]"); // matches nothing
    }
    all
}

/// Rewrites the JS character-class syntax Rust reads differently: inside
/// `[...]`, JS takes `[`, `&`, `~` literally (Rust: nesting, set operations)
/// and a `-` next to `\w`, `\d`, `\s` as a literal dash (Rust: an error).
fn js_to_rust(p: &str) -> String {
    let is_set = |c: Option<char>| matches!(c, Some('d' | 'D' | 'w' | 'W' | 's' | 'S'));
    let mut out = String::with_capacity(p.len() + 4);
    let (mut in_class, mut after_set) = (false, false);
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        let was_after_set = std::mem::take(&mut after_set);
        match c {
            '\\' => {
                out.push('\\');
                let escaped = chars.next();
                out.extend(escaped);
                after_set = in_class && is_set(escaped);
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '[' | '&' | '~' if in_class => out.push('\\'),
            '-' if in_class => {
                let mut ahead = chars.clone();
                if was_after_set || (ahead.next() == Some('\\') && is_set(ahead.next())) {
                    out.push('\\');
                }
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// Keeps a uap family only when it looks like a family name, not like text
/// lifted from an unusual user agent.
fn family(name: &str) -> String {
    let ok = !name.is_empty()
        && name.len() <= MAX_FAMILY_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if ok { name } else { "Other" }.to_owned()
}

/// "major.minor" as Plausible's `major_minor/1` keeps it ("131.0", "17.6"),
/// the major alone when there is no minor, "" when the major is not a plain
/// number. Parts beyond the minor (patch, build) are never kept.
fn major_minor(major: Option<&str>, minor: Option<&str>) -> String {
    let plain = |v: &&str| !v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit());
    match (major.filter(plain), minor.filter(plain)) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        (Some(major), None) => major.to_owned(),
        (None, _) => String::new(),
    }
}

/// Device class from the user agent's own tokens. iPads say "Mobile" too,
/// and Android tablets are the Android user agents without "Mobile", so the
/// tablet checks come first. iPadOS in desktop mode looks like a Mac and is
/// counted as desktop; nothing can tell them apart.
fn device(ua: &str) -> Device {
    let has = |needle: &str| ua.contains(needle);
    if has("iPad") || has("; Tablet") || has("Kindle") || has("Silk/") {
        Device::Tablet
    } else if has("Mobi")
        || has("iPhone")
        || has("iPod")
        || has("Opera Mini")
        || has("Windows Phone")
    {
        Device::Mobile
    } else if has("Android") {
        Device::Tablet
    } else {
        Device::Desktop
    }
}

type Entries = HashMap<u64, (Box<str>, Arc<Agent>), BuildHasherDefault<PreHashed>>;
type Shard = Mutex<Entries>;

/// Sharded, bounded map from user agent to result. Keys are the user agent's
/// hash (computed once, with a per-process random key so collisions cannot
/// be forced); the stored string is compared on hit, and a collision just
/// replaces the entry. A full shard is cleared: crude, but O(1) and bounded.
struct Cache {
    /// Seeded per process; a collision only costs a miss (the key is
    /// compared whole), and the capacity is fixed whatever the keys.
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
}

impl Cache {
    fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        // Middle bits: hashbrown uses the low bits for the bucket and the
        // top 7 bits as tag, so these leave both evenly spread.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }
}

/// A panic while holding the lock cannot leave the map inconsistent in a way
/// that matters for a cache, so poisoning is ignored.
fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, Entries> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Identity hasher for keys that already are hashes.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys, which this cache does not use.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    #[test]
    fn device_codes_round_trip_and_labels_are_unique() {
        crate::privacy::coded::check_codes(&Device::ALL, |d| d as u8, Device::as_str);
    }

    fn classifier() -> &'static AgentClassifier {
        static C: OnceLock<AgentClassifier> = OnceLock::new();
        C.get_or_init(|| AgentClassifier::new().expect("embedded lists compile"))
    }

    /// `None` = bot; otherwise (browser, version, os, device), as Plausible
    /// writes them.
    fn check(ua: &str, expected: Option<(&str, &str, &str, Device)>) {
        let agent = classifier().classify(ua);
        match expected {
            None => assert!(agent.bot, "should be a bot: {ua:?}"),
            Some((browser, version, os, device)) => {
                assert!(!agent.bot, "should not be a bot: {ua:?}");
                let want = ReducedAgent {
                    browser: browser.into(),
                    browser_version: version.into(),
                    os: os.into(),
                    // Checked by `os_versions_keep_their_major_only`.
                    os_version: agent.reduced.os_version.clone(),
                    device,
                };
                assert_eq!(agent.reduced, want, "{ua:?}");
            }
        }
    }

    /// Plausible writes major.minor ("10.15", "17.6"); tamis the major, the
    /// finest PRIVACY.md keeps of a version.
    #[test]
    fn os_versions_keep_their_major_only() {
        for (ua, version) in [
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15", "10"),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", "17"),
            ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", "14"),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "10"),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", ""),
        ] {
            assert_eq!(classifier().classify(ua).reduced.os_version, version, "{ua:?}");
        }
        assert_eq!(major(Some("XP")), "", "words are no version");
    }

    /// Expected values are Plausible's (UAInspector's names, remapped and cut
    /// to major.minor as `lib/plausible/ingestion/event.ex` does).
    #[test]
    fn browsers_are_reduced_to_plausibles_names() {
        use Device::*;
        let table = [
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
             ("Chrome", "131.0", "Windows", Desktop)),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
             ("Chrome", "131.0", "Mac", Desktop)),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
             ("Microsoft Edge", "131.0", "Windows", Desktop)),
            ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
             ("Firefox", "133.0", "GNU/Linux", Desktop)),
            ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
             ("Firefox", "128.0", "Ubuntu", Desktop)),
            ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
             ("Safari", "17.6", "Mac", Desktop)),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
             ("Safari", "17.6", "iOS", Mobile)),
            ("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
             ("Safari", "17.6", "iPadOS", Tablet)),
            ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
             ("Chrome", "131.0", "Android", Mobile)),
            ("Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
             ("Chrome", "131.0", "Android", Tablet)),
            ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
             ("Samsung Browser", "26.0", "Android", Mobile)),
            ("Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
             ("Firefox", "133.0", "Android", Mobile)),
            ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
             ("Chrome", "131.0", "Chrome OS", Desktop)),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
             ("Opera", "115.0", "Windows", Desktop)),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
             ("Chrome", "131.0", "iOS", Mobile)),
            ("Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)",
             ("Internet Explorer", "9.0", "Windows", Desktop)),
            ("Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 Instagram 343.0.0.33.101 Android (34/14; 420dpi; 1080x2205; Google/google; Pixel 8; shiba; shiba; en_US; 629271287)",
             ("Mobile App", "", "Android", Mobile)),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.38.109;FBBV/614862612;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/617124011]",
             ("Mobile App", "", "iOS", Mobile)),
            ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/337.0.684269735 Mobile/15E148 Safari/604.1",
             ("Mobile App", "", "iOS", Mobile)),
            ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Safari/537.36",
             ("Samsung Browser", "26.0", "Android", Tablet)),
            ("Mozilla/5.0 (Linux; U; Android 4.4.3; KFTHWI Build/KTU84M) AppleWebKit/537.36 (KHTML, like Gecko) Silk/3.68 like Chrome/39.0.2171.93 Safari/537.36",
             ("Mobile Silk", "3.68", "Android", Tablet)),
            ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 YaBrowser/24.10.0.0 Safari/537.36",
             ("Yandex Browser", "24.10", "Windows", Desktop)),
        ];
        for (ua, (browser, version, os, device)) in table {
            check(ua, Some((browser, version, os, device)));
        }
    }

    #[test]
    fn ipads_run_ipados_from_version_13() {
        assert_eq!(
            os_name(
                "iOS",
                Some("17"),
                "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X)"
            ),
            "iPadOS"
        );
        assert_eq!(
            os_name(
                "iOS",
                Some("12"),
                "Mozilla/5.0 (iPad; CPU OS 12_5 like Mac OS X)"
            ),
            "iOS"
        );
        assert_eq!(
            os_name(
                "iOS",
                Some("17"),
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X)"
            ),
            "iOS"
        );
        assert_eq!(os_name("Mac OS X", Some("10"), ""), "Mac");
    }

    #[test]
    fn unknown_browsers_have_no_version() {
        assert_eq!(
            browser_name_and_version("Other", Some("1"), Some("2")),
            ("Other".to_owned(), String::new())
        );
        assert_eq!(
            browser_name_and_version("Instagram", Some("343"), Some("0")),
            ("Mobile App".to_owned(), String::new())
        );
    }

    #[test]
    fn bots_are_detected() {
        let table = [
            "",
            "   ",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "python-requests/2.32.3",
            "Wget/1.21.4",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Go-http-client/1.1",
            "okhttp/4.12.0",
        ];
        for ua in table {
            check(ua, None);
        }
    }

    #[test]
    fn every_crawler_instance_is_a_bot() {
        #[derive(serde::Deserialize)]
        struct Crawler {
            #[serde(default)]
            instances: Vec<String>,
        }
        let crawlers: Vec<Crawler> = serde_json::from_str(CRAWLERS).expect("list parses");
        let missed: Vec<_> = crawlers
            .iter()
            .flat_map(|c| &c.instances)
            .filter(|ua| !classifier().classify(ua).bot)
            .collect();
        assert!(missed.is_empty(), "not detected: {missed:#?}");
    }

    #[test]
    fn every_bot_pattern_is_used() {
        let p = bot_patterns().expect("lists parse");
        assert!(
            p.rejected.is_empty(),
            "patterns neither engine accepts: {:?}",
            p.rejected
        );
        assert!(
            p.lookaround.len() < 20,
            "look-around patterns are slow: {}",
            p.lookaround.len()
        );
    }

    #[test]
    fn js_patterns_are_translated() {
        let table = [
            (r"[\w\d-.]+", r"[\w\d\-.]+"),
            (r"[a-\d]", r"[a\-\d]"),
            (r"[a-z]-\d", r"[a-z]-\d"),
            (r"[[&~]", r"[\[\&\~]"),
            (r"\[x-y\]", r"\[x-y\]"),
        ];
        for (js, rust) in table {
            assert_eq!(js_to_rust(js), rust);
        }
    }

    #[test]
    fn nothing_fine_grained_leaks() {
        // uap families with `$1` copy text from the user agent: kept only
        // when short and plain.
        assert_eq!(family("Chrome"), "Chrome");
        assert_eq!(family(&"x".repeat(40)), "Other");
        assert_eq!(family("a\u{7}b"), "Other");
        assert_eq!(major_minor(Some("131"), Some("0")), "131.0");
        assert_eq!(major_minor(Some("17"), None), "17");
        assert_eq!(major_minor(Some("131"), Some("0b1")), "131");
        assert_eq!(major_minor(Some("131.0"), Some("1")), "");
        assert_eq!(major_minor(None, Some("1")), "");
    }

    #[test]
    fn cache_is_consistent_and_bounded() {
        let c = classifier();
        let ua = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert!(
            Arc::ptr_eq(&c.classify(ua), &c.classify(ua)),
            "second call is a hit"
        );
        let long = format!(
            "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) {} Firefox/133.0",
            "a ".repeat(400)
        );
        assert_eq!(c.classify(&long).reduced.browser, "Firefox");
        for i in 0..SHARDS * SHARD_CAPACITY * 2 {
            c.classify(&format!("tamis-test/{i}"));
        }
        let total: usize = c.cache.shards.iter().map(|s| lock(s).len()).sum();
        assert!(total <= SHARDS * SHARD_CAPACITY, "{total}");
    }

    #[test]
    fn prefetch_headers() {
        let table = [
            ((Some("prefetch;prerender"), None), true),
            ((Some("prefetch"), None), true),
            ((Some("Prefetch; anonymous-client-ip"), None), true),
            ((None, Some("prefetch")), true),
            ((None, Some("preview")), false),
            ((Some(""), None), false),
            ((None, None), false),
        ];
        for ((sec, purpose), want) in table {
            assert_eq!(is_prefetch(sec, purpose), want, "{sec:?} {purpose:?}");
        }
    }
}
