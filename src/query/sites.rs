//! `GET /api/v2/sites`: the sites a token may read, with what a dashboard
//! needs to show them (language, time zone, small-count threshold). Reads
//! the configuration only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use serde_json::json;

use super::auth::{self, Access};
use super::error::ApiError;
use super::Api;

impl Api {
    /// A shared link's session sees its one site (see `query::share`).
    pub async fn sites(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET {
            return ApiError::Method { takes: "GET" }.response();
        }
        let authorization = request
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let tokens = self.tokens.load();
        let (token, allowed) = match self.share_access(request.headers()).await {
            Err(refused) => return refused.response(),
            Ok(Some(share)) => (share.actor, vec![share.site_id]),
            Ok(None) => match auth::authorize(authorization, &tokens) {
                Access::Unauthorized => return ApiError::Unauthorized.response(),
                Access::Granted { token, sites, .. } => (token.to_string(), sites.to_vec()),
            },
        };
        let sites: Vec<_> = self
            .sites
            .load()
            .iter()
            .filter(|s| allowed.contains(&s.id))
            .map(|s| {
                json!({
                    "id": s.id,
                    "language": s.language,
                    "timezone": s.timezone.name(),
                    "k_threshold": s.k_threshold,
                    "campaigns": s.collect_campaigns,
                    "prop_keys": sorted(s.prop_keys.iter()),
                    "event_names": sorted(s.event_names.iter()),
                    "goals": s.goals.iter().map(|g| g.to_json()).collect::<Vec<_>>(),
                    "funnels": crate::config::fingerprint::funnels_json(s),
                })
            })
            .collect();
        let body = json!({ "token": token, "sites": sites });
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-store"));
        r
    }
}

fn sorted<'a>(items: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = items.collect();
    v.sort();
    v
}
