//! The one-pass reduction gives what the regular expressions and
//! `Url::parse` gave (`super::oracle`), on every string literal of the
//! crate's sources and tests and on generated URLs and texts made of the
//! pieces the patterns look for.

use proptest::prelude::*;

use super::{oracle, plain_host, redact, reduce, HashMode};
use crate::config::SiteSettings;
use crate::privacy::pipeline::test_site;

fn sites() -> Vec<SiteSettings> {
    let plain = test_site("example.org");
    let mut params = plain.clone();
    params.query_params = vec!["q".into(), "page".into(), "email".into(), "Q".into()];
    let mut everything = params.clone();
    everything.collect_campaigns = true;
    everything.hash_routing = true;
    let mut routes = plain.clone();
    routes.hash_routing = true;
    vec![plain, params, everything, routes]
}

fn check(raw: &str, sites: &[SiteSettings]) {
    assert_eq!(redact(raw), oracle::redact(raw), "redact({raw:?})");
    // The referrer's host is read by the same split.
    if let Some(host) = plain_host(raw.trim()) {
        let parsed = url::Url::parse(raw.trim()).expect("a plain URL parses");
        assert!(matches!(parsed.scheme(), "http" | "https"), "{raw:?}");
        assert!(
            matches!(parsed.host(), Some(url::Host::Domain(_))),
            "{raw:?}"
        );
        assert_eq!(
            parsed.host_str(),
            Some(host.to_ascii_lowercase().as_str()),
            "{raw:?}"
        );
    }
    for site in sites {
        for mode in [HashMode::Off, HashMode::On] {
            assert_eq!(
                reduce(raw, site, mode),
                oracle::reduce(raw, site, mode),
                "reduce({raw:?}) for {:?} {:?}",
                site.query_params,
                mode
            );
        }
    }
}

/// Every string literal in `src/` and `tests/`: the inputs of every
/// existing test, and many other texts.
fn literals() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let mut rest = text.as_str();
                while let Some(start) = rest.find('"') {
                    rest = &rest[start + 1..];
                    let mut end = 0;
                    let bytes = rest.as_bytes();
                    while end < bytes.len() && bytes[end] != b'"' {
                        end += if bytes[end] == b'\\' { 2 } else { 1 };
                    }
                    let end = end.min(bytes.len());
                    if let Some(literal) = rest.get(..end) {
                        out.push(literal.replace("\\\"", "\"").replace("\\\\", "\\"));
                    }
                    rest = rest.get(end + 1..).unwrap_or_default();
                }
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    walk(&root.join("src"), &mut out);
    walk(&root.join("tests"), &mut out);
    out
}

#[test]
fn the_scanner_matches_the_regular_expressions_on_every_literal() {
    let sites = sites();
    let literals = literals();
    assert!(literals.len() > 5_000, "{} literals", literals.len());
    for literal in &literals {
        check(literal, &sites);
        check(&format!("https://example.org/{literal}"), &sites);
        check(
            &format!("https://example.org/p?q={literal}#/{literal}"),
            &sites,
        );
    }
}

const SCHEMES: &[&str] = &[
    "https://",
    "http://",
    "HTTPS://",
    "Http://",
    "http:",
    "http:/",
    "https:\\\\",
    "ftp://",
    "javascript:",
    "",
    "//",
    " https://",
    "\thttps://",
    "ht\ttps://",
];

const HOSTS: &[&str] = &[
    "example.org",
    "EXAMPLE.Org",
    "www.example.org",
    "sub.example.org",
    "example.org.",
    "example.org..",
    "a..b.org",
    ".example.org",
    "-a.org",
    "a-.org",
    "a.-b.org",
    "x",
    "localhost",
    "xn--bcher-kva.example",
    "XN--bcher-kva.example",
    "xn--invalid-.example",
    "xn--",
    "bücher.example",
    "exa_mple.org",
    "exa%41mple.org",
    "127.0.0.1",
    "1.2.3",
    "0x7f.1",
    "example.1",
    "example.0x1",
    "example.org1",
    "1example.org",
    "256.1.1.1",
    "[::1]",
    "[2001:db8::1]",
    "[2001:db8::1",
    "user@example.org",
    "user:pw@example.org",
    "example.org:443",
    "example.org:80",
    "example.org:0",
    "example.org:65535",
    "example.org:65536",
    "example.org:",
    "example.org:99999",
    "example.org:080",
    "example.org:abc",
    "example.org:123456",
    "exam ple.org",
    "example.org\\",
    "a",
    "a.b",
    "a.b.c.d.e.f.g.h",
    "ex\u{AD}ample.org",
    "EXAMPLE.ORG:8080",
];

/// Pieces of paths, values and fragments: what each pattern needs, what
/// sits next to it, and what `Url` rewrites.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    "a",
    "Z",
    "e",
    "x",
    "com",
    ".",
    ".",
    "..",
    "-",
    "_",
    "%",
    "+",
    "@",
    ":",
    "::",
    "?",
    "&",
    "=",
    "#",
    "#/",
    "#!/",
    "1",
    "12",
    "123",
    "2001",
    "db8",
    "ffff",
    "9",
    "0",
    "4501234567",
    "198.51.100.77",
    "1.2.3.4",
    "2001:db8::1",
    "::ffff:198.51.100.7",
    "fe80::1%eth0",
    "12:30:00",
    "std::vec",
    "jean.tremblay@example.com",
    "a@b.c",
    "moi@ici.ca",
    "x@y",
    "@example.org",
    "123e4567-e89b-12d3-a456-426614174000",
    "ABCDEF12-abcd-ABCD-abcd-0123456789AB",
    "a8f3K29xLq0Zp7Rt",
    "abcdefghij0123456789",
    "guide-du-citoyen-2025",
    "aide_financiere_aux_etudes_2",
    "Cj0KCQiA_abcdefghijklmnop12",
    "%40",
    "%2e",
    "%2E",
    "%2f",
    "%20",
    "%",
    "%4",
    "%zz",
    "%C3%A9",
    "é",
    "ß",
    "٣",
    "\u{301}",
    "中文",
    " ",
    "\t",
    "\n",
    "\u{0}",
    "\"",
    "'",
    "<",
    ">",
    "\\",
    "^",
    "`",
    "{",
    "}",
    "|",
    "[",
    "]",
    "[ip]",
    "[email]",
    "utm_source=",
    "utm_medium=x",
    "q=",
    "page=2",
    "email=",
    "gclid=",
    "msclkid=abc",
    "Q=1",
    "q",
    "/./",
    "/../",
    "/.",
    "/..",
    "/%2e%2e/",
    ";",
    "!",
    "$",
    "(",
    ")",
    "*",
    ",",
    "~",
];

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(PIECES), 0..max).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn the_scanner_matches_the_regular_expressions_on_generated_text(s in text(24)) {
        assert_eq!(redact(&s), oracle::redact(&s), "redact({s:?})");
    }

    #[test]
    fn the_reduction_matches_url_parse_on_generated_urls(
        scheme in proptest::sample::select(SCHEMES),
        host in proptest::sample::select(HOSTS),
        rest in text(16),
    ) {
        check(&format!("{scheme}{host}{rest}"), &sites());
    }
}

/// Hosts and schemes each with a few paths, all of them.
#[test]
fn the_reduction_matches_url_parse_on_every_host() {
    let sites = sites();
    let rests = [
        "",
        "/",
        "?q=1",
        "#/a",
        "/a/b?q=moi@ici.ca&utm_source=x#/r/4501234567?x",
        "/users/jean.tremblay@example.com/4501234567?email=a@b.c&utm_source=x#top",
        "/é/%C3%A9?q=é#/é",
        "/a b",
        "/a\"b",
        "/./a",
        "/a/../b",
        "/%2e/",
        "?q=a+b%20c",
        ":8080/",
    ];
    for scheme in SCHEMES {
        for host in HOSTS {
            for rest in rests {
                check(&format!("{scheme}{host}{rest}"), &sites);
            }
        }
    }
}
