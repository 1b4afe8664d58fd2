//! Shared links on the HTTP side (see `crate::share`): the exchange of a
//! link's secret for a session cookie (`POST /api/share/session`), and the
//! access a request made with that cookie has — one site, protected
//! disclosure, read only.
//!
//! The dashboard page holds no secret: it reads it from the URL fragment,
//! exchanges it here, and then only names the link (`X-Tamis-Share: <id>`);
//! the cookie is `HttpOnly`, so no script of the page can read it back.
//! Every request re-reads the link's rows from ClickHouse, so a revoked or
//! expired link is refused from the next request, on every collector.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::limits::Failure;
use super::{limits, Api};
use crate::share::{self, Link, Secret, State};
use crate::sink::audit::AuditEntry;

/// The network (truncated) a shared link's stats request came from, put
/// in the request's extensions by the web layer: each viewer's running
/// queries are counted apart (`query.max_running_per_link`). Held in
/// memory for the query's time only.
#[derive(Debug, Clone, Copy)]
pub struct Viewer(pub crate::privacy::ip::TruncatedIp);

/// Names the link a dashboard request is made with.
pub const SHARE_HEADER: &str = "x-tamis-share";

/// Longest session exchange body.
const MAX_BODY: usize = 4 * 1024;

/// The cookie that holds link `id`'s session.
pub fn cookie_name(id: &str) -> String {
    format!("tamis_share_{id}")
}

/// A share session as [`Api::share_access`] admits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareAccess {
    /// `share:<link id>`, the audit log's actor.
    pub actor: String,
    pub site_id: String,
}

/// The value of cookie `name` in `headers`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What an exchange's answer means for the sign-in throttle, where it is
/// not what its status says (a 401 is a refused guess, anything else
/// nothing; `web::App::api_call`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guess {
    /// Refused, but no guess was made: the right secret of a revoked or
    /// expired link (the page says so), or of a password link before its
    /// password is typed (the page asks for it).
    None,
    /// A link's password was given right: the network's earlier refusals
    /// are forgotten, as a valid token's are. Opening a link without a
    /// password proves nothing (its URL may be public) and forgets none.
    Proven,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Exchange {
    link: String,
    secret: String,
    #[serde(default)]
    password: Option<String>,
}

impl Api {
    /// The link `id` as its stored events make it, `None` when unknown.
    async fn link(&self, id: &str) -> Result<Option<Link>, ApiError> {
        if !share::valid_id(id) {
            return Ok(None);
        }
        let events = crate::sink::shares::link_events(&self.nodes, id)
            .await
            .map_err(|error| {
                // ClickHouse's code and a category, never its text.
                let (failure, code) = Failure::of(&error);
                tracing::warn!(category = failure.name(), code, "shared link lookup failed");
                self.limits.refusal(failure, "shared links are")
            })?;
        Ok(Link::from_events(&events).into_iter().next())
    }

    /// `None` when the request names no shared link (`X-Tamis-Share`
    /// absent): it is then a token's request. Otherwise the link's access,
    /// or `Unauthorized` when the link is unknown, revoked, expired, or
    /// the cookie is not a live session of it.
    pub(crate) async fn share_access(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<ShareAccess>, ApiError> {
        let Some(id) = headers.get(SHARE_HEADER).map(|v| v.to_str().unwrap_or("")) else {
            return Ok(None);
        };
        let id = id.trim().to_string();
        let Some(session) = cookie(headers, &cookie_name(&id)) else {
            return Err(ApiError::Unauthorized);
        };
        let now = self.clock.now();
        match self.link(&id).await? {
            Some(link) if link.state(now) == State::Active && link.check_session(session, now) => {
                Ok(Some(ShareAccess {
                    actor: format!("{}{}", share::ACTOR_PREFIX, link.id),
                    site_id: link.site_id,
                }))
            }
            _ => Err(ApiError::Unauthorized),
        }
    }

    /// `POST /api/share/session` `{"link", "secret", "password"?}`: answers
    /// the link's site and sets the session cookie, or 401 (with
    /// `"password_required": true` when only the password is missing or
    /// wrong). Every session opened is audit-logged (`share_view`).
    pub async fn share_session(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST {
            return ApiError::Method { takes: "POST" }.response();
        }
        let body = match tokio::time::timeout(
            limits::BODY_TIMEOUT,
            Limited::new(request.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(_)) => return ApiError::TooLarge.response(),
            Err(_) => return ApiError::BodyTimeout.response(),
        };
        let Ok(asked) = serde_json::from_slice::<Exchange>(&body) else {
            return ApiError::Parameter("expected {\"link\", \"secret\", \"password\"?}".into())
                .response();
        };
        let link = match self.link(&asked.link).await {
            Ok(link) => link,
            Err(e) => return e.response(),
        };
        let now = self.clock.now();
        let secret = Secret::parse(&asked.secret);
        let link = match (link, secret) {
            (Some(link), Some(secret)) if secret.matches(&link.secret_sha256) => {
                if link.state(now) != State::Active {
                    let mut r = ApiError::Unauthorized.response();
                    r.extensions_mut().insert(Guess::None);
                    return r;
                }
                link
            }
            _ => return ApiError::Unauthorized.response(),
        };
        if link.has_password() {
            let matched = match asked.password.clone() {
                Some(given) => password_matches(given, link.password_hash.clone()).await,
                None => false,
            };
            if !matched {
                let mut r = Response::new(Full::new(Bytes::from(
                    json!({ "error": "password required", "password_required": true }).to_string(),
                )));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                if asked.password.is_none() {
                    r.extensions_mut().insert(Guess::None);
                }
                return r;
            }
        }
        let until = link.session_until(now);
        let value = link.session_cookie(until);
        let max_age = (until - now).num_seconds().max(0);
        let set_cookie = format!(
            "{}={value}; Path=/api/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
            cookie_name(&link.id),
        );
        self.audit.record(AuditEntry {
            at: now,
            kind: "share_view",
            actor: format!("{}{}", share::ACTOR_PREFIX, link.id),
            client: "share",
            site_id: link.site_id.clone(),
            summary: format!("session opened name={}", link.name),
            rows: 0,
            format: "json",
            detail: String::new(),
        });
        let body = json!({
            "site_id": link.site_id,
            "name": link.name,
            "expires_at": link.expires_at.map(|t| t.to_rfc3339()),
            "session_until": until.to_rfc3339(),
        });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        match HeaderValue::from_str(&set_cookie) {
            Ok(v) => {
                r.headers_mut().insert(hyper::header::SET_COOKIE, v);
            }
            Err(_) => return ApiError::Unauthorized.response(),
        }
        if link.has_password() {
            r.extensions_mut().insert(Guess::Proven);
        }
        r
    }
}

/// Password checks run one at a time.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// [`share::password_matches`] off the request threads: Argon2id takes
/// tens of milliseconds and about 19 MiB, so a burst of guesses run on
/// the runtime would stall ingest. One check at a time, queued; the
/// throttle still counts each refusal.
async fn password_matches(given: String, stored: String) -> bool {
    let Ok(_permit) = PASSWORD_CHECKS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || share::password_matches(&given, &stored))
        .await
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::COOKIE,
            HeaderValue::from_static("a=1; tamis_share_ab=x; tamis_share_abc=y"),
        );
        assert_eq!(cookie(&headers, "tamis_share_abc"), Some("y"));
        assert_eq!(cookie(&headers, "tamis_share_ab"), Some("x"));
        assert_eq!(cookie(&headers, "tamis_share_a"), None);
    }
}
