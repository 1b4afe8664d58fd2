//! The stats API's refusals and failures, and the one place they become
//! HTTP status codes, `Retry-After` and bodies (`{"error": "…"}`, as
//! Plausible's Stats API writes them). Messages name the setting or field
//! concerned and what to do; none quotes a ClickHouse error, whose text
//! can hold the client's filter values.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};

use super::request::RequestError;
use crate::ingest::handler::json_error;

/// Seconds a client should wait after a query that ClickHouse or tamis
/// stopped for its time or memory: long enough for the load to change.
const RETRY_AFTER_BUSY: &str = "10";
/// After a refusal for too many running queries (tamis's limits, or
/// ClickHouse's own): one of them is likely done within a second.
const RETRY_AFTER_RUNNING: &str = "1";
/// After a read that a shard of the cluster could not answer: about the
/// time a ClickHouse server takes to restart.
const RETRY_AFTER_SHARD: &str = "10";

/// Which bound on running queries a query met ([`ApiError::Busy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunningLimit {
    /// A token's `query.max_running_per_token`.
    Token,
    /// A shared link's `query.max_running_per_link`, all viewers together.
    Link,
    /// One viewer's network on a shared link: `max_running_per_token`.
    Viewer,
    /// The server's `query.max_running`, every token and link together.
    Server,
}

#[derive(Debug)]
pub enum ApiError {
    /// The endpoint takes another method (`use`: the one it takes).
    Method { takes: &'static str },
    /// No token, or one tamis does not know.
    Unauthorized,
    /// A body over 64 KiB.
    TooLarge,
    /// A body that did not arrive within 10 s.
    BodyTimeout,
    /// A query that does not validate, with the field named.
    Invalid(RequestError),
    /// A query parameter of a GET endpoint that does not validate.
    Parameter(String),
    /// A path that does not exist, or that the client may not know of.
    NoSuchEndpoint,
    /// A site the token may not read looks exactly like a missing one.
    SiteNotFound,
    /// A funnel the site does not have (`known`: the site's funnels, as
    /// configured, never the client's text).
    FunnelNotFound { known: String },
    /// The token (or the shared link, or this viewer of it, or the whole
    /// server) already runs as many queries as `limit` allows.
    Busy { running: usize, limit: RunningLimit },
    /// tamis stopped the query after `query.timeout_ms`.
    TimedOut { ms: u128 },
    /// ClickHouse stopped it at `query.max_execution_time`.
    Time { secs: u64 },
    /// ClickHouse stopped it at `query.max_memory_usage`.
    Memory { bytes: u64 },
    /// The answer would exceed `query.max_result_rows`.
    Rows { rows: u64 },
    /// ClickHouse failed otherwise (`what`: what is unavailable).
    Unavailable { what: &'static str },
    /// On a cluster, a shard that the read needs has no replica that
    /// answers (`what`: what is unavailable). tamis refuses rather than
    /// answer without that shard's rows.
    ShardUnreachable { what: &'static str },
    /// ClickHouse refused the read: it already runs as many queries as its
    /// `max_concurrent_queries` allows (`what`: what is unavailable).
    ClickHouseBusy { what: &'static str },
    /// The site's rounding key comes from the installation's secret stored
    /// in ClickHouse, which this collector has not read yet (ClickHouse
    /// down since start-up): no answer is rounded with anything else.
    RoundingSecretUnread,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Invalid(_) | ApiError::Parameter(_) => StatusCode::BAD_REQUEST,
            ApiError::SiteNotFound | ApiError::FunnelNotFound { .. } | ApiError::NoSuchEndpoint => {
                StatusCode::NOT_FOUND
            }
            // The server's load, not this client's: 503, as for ingest.
            ApiError::Busy {
                limit: RunningLimit::Server,
                ..
            } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            // The same query overflows again whatever the load: a client
            // error, without Retry-After.
            ApiError::Rows { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TimedOut { .. }
            | ApiError::Time { .. }
            | ApiError::Memory { .. }
            | ApiError::Unavailable { .. }
            | ApiError::ShardUnreachable { .. }
            | ApiError::ClickHouseBusy { .. }
            | ApiError::RoundingSecretUnread => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// `Retry-After`, for failures that the load caused.
    fn retry_after(&self) -> Option<&'static str> {
        match self {
            ApiError::Busy { .. } | ApiError::ClickHouseBusy { .. } => Some(RETRY_AFTER_RUNNING),
            ApiError::TimedOut { .. } | ApiError::Time { .. } | ApiError::Memory { .. } => {
                Some(RETRY_AFTER_BUSY)
            }
            ApiError::ShardUnreachable { .. } | ApiError::RoundingSecretUnread => {
                Some(RETRY_AFTER_SHARD)
            }
            _ => None,
        }
    }

    /// The bound a [`ApiError::Busy`] met, for log lines.
    pub fn running_limit(&self) -> Option<RunningLimit> {
        match self {
            ApiError::Busy { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Method { takes } => format!("use {takes}"),
            ApiError::Unauthorized => "missing or invalid API token".into(),
            ApiError::TooLarge => "query body is larger than 64 KiB".into(),
            ApiError::BodyTimeout => {
                "the query body did not arrive within 10 s: send it whole, at once".into()
            }
            ApiError::Invalid(e) => e.to_string(),
            ApiError::Parameter(p) => p.clone(),
            ApiError::SiteNotFound => "site not found".into(),
            ApiError::NoSuchEndpoint => "no such endpoint".into(),
            ApiError::FunnelNotFound { known } => format!("funnel: no such funnel; {known}"),
            ApiError::Busy { running, limit } => {
                let (who, setting) = match limit {
                    RunningLimit::Token => ("this token already has", "max_running_per_token"),
                    RunningLimit::Link => ("this shared link already has", "max_running_per_link"),
                    RunningLimit::Viewer => (
                        "your network already has this shared link's",
                        "max_running_per_token",
                    ),
                    RunningLimit::Server => {
                        return format!(
                            "the server already has {running} stats queries running, for all users together (query.max_running): try again in a moment"
                        )
                    }
                };
                format!(
                    "{who} {running} queries running (query.{setting}): wait for one to finish, then try again"
                )
            }
            ApiError::TimedOut { ms } => format!(
                "the query did not finish within {ms} ms (query.timeout_ms): narrow the date range or add filters, or try again later"
            ),
            ApiError::Time { secs } => format!(
                "the query ran longer than its limit of {secs} s (query.max_execution_time): narrow the date range or add filters, or try again later"
            ),
            ApiError::Memory { bytes } => format!(
                "the query needed more memory than its limit of {bytes} bytes (query.max_memory_usage): narrow the date range, add filters or ask for fewer dimensions"
            ),
            ApiError::Rows { rows } => format!(
                "the answer would have more than {rows} rows (query.max_result_rows): narrow the date range, add filters or ask for fewer dimensions"
            ),
            ApiError::Unavailable { what } => format!("{what} unavailable right now"),
            ApiError::ShardUnreachable { what } => format!(
                "{what} unavailable right now: part of the data is on a ClickHouse shard none of whose replicas can be reached, and tamis does not answer with partial numbers; try again later"
            ),
            ApiError::ClickHouseBusy { what } => format!(
                "{what} unavailable right now: ClickHouse is running as many queries as it allows (its max_concurrent_queries); try again in a moment"
            ),
            ApiError::RoundingSecretUnread => "statistics are unavailable right now: the installation's rounding secret has not been read from ClickHouse yet; try again later".into(),
        }
    }

    pub fn response(&self) -> Response<Full<Bytes>> {
        let mut r = json_error(self.status(), &self.message());
        if let Some(secs) = self.retry_after() {
            r.headers_mut()
                .insert("retry-after", HeaderValue::from_static(secs));
        }
        r
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> ApiError {
        ApiError::Invalid(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_failures_say_when_to_retry_and_client_errors_do_not() {
        let cases = [
            (
                ApiError::Busy {
                    running: 4,
                    limit: RunningLimit::Token,
                },
                429,
                Some("1"),
            ),
            (ApiError::TimedOut { ms: 30_000 }, 503, Some("10")),
            (ApiError::Time { secs: 20 }, 503, Some("10")),
            (ApiError::Memory { bytes: 1 << 30 }, 503, Some("10")),
            (ApiError::Rows { rows: 100_000 }, 422, None),
            (
                ApiError::Unavailable {
                    what: "statistics are",
                },
                503,
                None,
            ),
            (
                ApiError::ShardUnreachable {
                    what: "statistics are",
                },
                503,
                Some("10"),
            ),
            (ApiError::RoundingSecretUnread, 503, Some("10")),
            (
                ApiError::Busy {
                    running: 16,
                    limit: RunningLimit::Server,
                },
                503,
                Some("1"),
            ),
            (
                ApiError::ClickHouseBusy {
                    what: "statistics are",
                },
                503,
                Some("1"),
            ),
            (ApiError::SiteNotFound, 404, None),
            (ApiError::Method { takes: "POST" }, 405, None),
        ];
        for (error, status, retry) in cases {
            let r = error.response();
            assert_eq!(r.status().as_u16(), status, "{error:?}");
            assert_eq!(
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                retry,
                "{error:?}"
            );
        }
    }
}
