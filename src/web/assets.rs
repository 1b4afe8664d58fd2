//! Static files compiled into the binary: the beacon (`/js/tamis.js`) and
//! the dashboard (`/`, `/assets/…`). Each is served with its content type,
//! an ETag and a cache policy; the dashboard's pages carry a strict
//! Content-Security-Policy (scripts, styles and requests from this origin
//! only, no inline script, no external font or CDN). Nothing here reads
//! statistics or hits: the dashboard is a client of `/api/v2/query`.

use std::sync::LazyLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};

/// The beacon's source, as served.
pub const BEACON: &str = include_str!("assets/tamis.js");

/// The dashboard may run scripts and styles from this origin only, talk to
/// this origin only, and may not be framed.
pub const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; manifest-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: String,
}

fn asset(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
    Asset {
        path,
        content_type,
        body,
        etag: format!("\"{}\"", version_of(body)),
    }
}

/// First 12 hex digits of the content's blake3 hash: changes with every
/// edit of the file, so a URL carrying it can be cached forever.
fn version_of(body: &[u8]) -> String {
    blake3::hash(body).to_hex()[..12].to_string()
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    vec![
        asset(
            "/js/tamis.js",
            "text/javascript; charset=utf-8",
            BEACON.as_bytes(),
        ),
        asset(
            "/",
            "text/html; charset=utf-8",
            include_bytes!("assets/index.html"),
        ),
        asset(
            "/assets/dashboard.js",
            "text/javascript; charset=utf-8",
            include_bytes!("assets/dashboard.js"),
        ),
        asset(
            "/assets/i18n.js",
            "text/javascript; charset=utf-8",
            include_bytes!("assets/i18n.js"),
        ),
        asset(
            "/assets/dashboard.css",
            "text/css; charset=utf-8",
            include_bytes!("assets/dashboard.css"),
        ),
        asset(
            "/assets/favicon.svg",
            "image/svg+xml",
            include_bytes!("assets/favicon.svg"),
        ),
    ]
});

/// The beacon's current version, for its cacheable URL
/// `/js/tamis.js?v=<version>`.
pub fn beacon_version() -> String {
    version_of(BEACON.as_bytes())
}

/// Whether `path` is a static file served here.
pub fn serves(path: &str) -> bool {
    path == "/index.html" || shared_page(path) || ASSETS.iter().any(|a| a.path == path)
}

/// `/share/<link id>`: the dashboard page itself, which finds its link's
/// secret in the URL fragment (see `query::share`). The page is the same
/// for every link: nothing about a link is in it.
fn shared_page(path: &str) -> bool {
    path.strip_prefix("/share/")
        .is_some_and(crate::share::valid_id)
}

pub fn serve(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = match request.uri().path() {
        "/index.html" => "/",
        p if shared_page(p) => "/",
        p => p,
    };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return status(StatusCode::NOT_FOUND);
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let fresh = request
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == asset.etag)
        });
    let mut r = if fresh {
        status(StatusCode::NOT_MODIFIED)
    } else if request.method() == Method::HEAD {
        Response::new(Full::new(Bytes::new()))
    } else {
        Response::new(Full::new(Bytes::from_static(asset.body)))
    };
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(asset.content_type));
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert("etag", etag);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if asset.path == "/js/tamis.js" {
        // Loaded by other sites' pages: cacheable everywhere; forever when
        // the URL names this exact version.
        let versioned = request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p.strip_prefix("v=") == Some(&asset.etag[1..13]))
        });
        h.insert(
            "cache-control",
            HeaderValue::from_static(if versioned {
                "public, max-age=31536000, immutable"
            } else {
                "public, max-age=3600"
            }),
        );
        h.insert(
            "cross-origin-resource-policy",
            HeaderValue::from_static("cross-origin"),
        );
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    } else {
        h.insert("cache-control", HeaderValue::from_static("no-cache"));
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(DASHBOARD_CSP),
        );
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    r
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacon_stays_under_one_and_a_half_kilobytes_gzipped() {
        // The gzip size is checked by the browser test (it has gzip at
        // hand); here, that the served file is the plain script.
        assert!(BEACON.starts_with("/*! tamis.js"));
        assert_eq!(beacon_version().len(), 12);
    }

    #[test]
    fn dashboard_policy_allows_no_other_origin_and_no_inline_code() {
        assert!(!DASHBOARD_CSP.contains("unsafe"));
        assert!(!DASHBOARD_CSP.contains("http"));
        assert!(DASHBOARD_CSP.contains("default-src 'none'"));
    }
}
