//! The stats API's bounds on one query: the ClickHouse settings every
//! stats-API statement carries (time, memory, result rows), tamis's own
//! timeout around a whole query, the count of queries each token (and
//! each shared link, and each viewer's network on it) has running and the
//! server's count of all of them, and
//! how a query stopped by one of them — or failed otherwise — is
//! answered and logged: from ClickHouse's error code
//! ([`crate::sink::refusal::clickhouse_code`]), never from its text, which
//! can quote a client's filter. Must not read statistics or decide what an
//! answer discloses.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;

use super::error::{ApiError, RunningLimit};
use crate::config::QuerySettings;
use crate::privacy::ip::TruncatedIp;
use crate::sink::refusal::clickhouse_code;

/// How long the body of a stats query may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The configured bounds and the running queries: per token and shared
/// link, and in all.
pub struct Limits {
    pub settings: QuerySettings,
    running: Mutex<Running>,
}

/// Running stats queries; a key is removed at zero.
#[derive(Default)]
struct Running {
    /// By token name, or by shared link (`share:<id>`) for all its viewers.
    tokens: HashMap<String, usize>,
    /// A shared link's by viewer: (link, the viewer's network, truncated
    /// as the sign-in throttle keys it). Held in memory while a query
    /// runs, never written or logged.
    viewers: HashMap<(String, TruncatedIp), usize>,
    /// All of them, every token and link together.
    all: usize,
}

impl Running {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.viewers.is_empty() && self.all == 0
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// One running query of a token (and, for a shared link, of its viewer),
/// counted until dropped — however the query ends: answered, failed, timed
/// out, or abandoned by its client (hyper drops the handler's future).
pub struct Permit<'a> {
    limits: &'a Limits,
    token: String,
    viewer: Option<(String, TruncatedIp)>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut running = self.limits.counts();
        running.all -= 1;
        release(&mut running.tokens, &self.token);
        if let Some(viewer) = &self.viewer {
            release(&mut running.viewers, viewer);
        }
    }
}

impl Limits {
    pub fn new(settings: &QuerySettings) -> Limits {
        Limits {
            settings: settings.clone(),
            running: Mutex::new(Running::default()),
        }
    }

    /// The running counts. The counts a change touches are changed
    /// together, with nothing between them that can panic, so a lock
    /// poisoned by a panic elsewhere holds whole counts: the guard is taken
    /// back and used.
    fn counts(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for one more query of `token`, or the answer that refuses
    /// it. A token runs at most `max_running_per_token` queries. A shared
    /// link (`viewer`: the network of the one asking) runs at most
    /// `max_running_per_link` for all its viewers, each network at most
    /// `max_running_per_token`: a public link's readers do not wait on
    /// one another, and it still bounds what a public URL asks of
    /// ClickHouse. Past those, 429: the asker's own queries are the
    /// cause. The server runs at most `max_running` in all, so that many
    /// busy tokens and links together cannot fill ClickHouse's
    /// `max_concurrent_queries` and crowd out inserts; past it, 503 (the
    /// load is the server's). A refused query counts nowhere.
    pub fn admit(&self, token: &str, viewer: Option<TruncatedIp>) -> Result<Permit<'_>, ApiError> {
        let s = &self.settings;
        let mut running = self.counts();
        let (cap, limit) = match viewer {
            Some(_) => (s.max_running_per_link, RunningLimit::Link),
            None => (s.max_running_per_token, RunningLimit::Token),
        };
        let busy = |running: usize, limit| Err(ApiError::Busy { running, limit });
        if running.tokens.get(token).is_some_and(|&n| n >= cap) {
            return busy(cap, limit);
        }
        let viewer = viewer.map(|v| (token.to_string(), v));
        if let Some(key) = &viewer {
            if running
                .viewers
                .get(key)
                .is_some_and(|&n| n >= s.max_running_per_token)
            {
                return busy(s.max_running_per_token, RunningLimit::Viewer);
            }
        }
        if running.all >= s.max_running {
            return busy(s.max_running, RunningLimit::Server);
        }
        if let Some(key) = &viewer {
            *running.viewers.entry(key.clone()).or_insert(0) += 1;
        }
        *running.tokens.entry(token.to_string()).or_insert(0) += 1;
        running.all += 1;
        Ok(Permit {
            limits: self,
            token: token.to_string(),
            viewer,
        })
    }

    /// `client` with the per-query limits every stats-API statement runs
    /// under. `result_overflow_mode = 'throw'`: a cut answer would be a
    /// wrong one. `wait_end_of_query`: ClickHouse holds the answer until
    /// the statement is done, so a limit reached late still arrives as an
    /// error with its code rather than after rows already sent.
    pub fn client(&self, client: &clickhouse::Client) -> clickhouse::Client {
        let s = &self.settings;
        client
            .clone()
            .with_setting("max_execution_time", s.max_execution_time_secs.to_string())
            .with_setting("max_memory_usage", s.max_memory_usage.to_string())
            .with_setting("max_result_rows", s.max_result_rows.to_string())
            .with_setting("result_overflow_mode", "throw")
            .with_setting("wait_end_of_query", "1")
    }

    /// 503 for a query that tamis stopped after `query.timeout_ms`.
    pub fn timed_out(&self) -> Response<Full<Bytes>> {
        ApiError::TimedOut {
            ms: self.settings.timeout.as_millis(),
        }
        .response()
    }

    /// A stats read that ClickHouse failed (`query`: which kind, for the
    /// log line): logged with the code and a category only — ClickHouse's
    /// text can quote the client's filter values and patterns — a limit as
    /// a warning, anything else as an error, and answered by [`Self::failed`].
    pub fn read_failed(
        &self,
        error: &clickhouse::error::Error,
        token: &str,
        site: &str,
        query: &str,
    ) -> Response<Full<Bytes>> {
        let (failure, code) = Failure::of(error);
        // The load or the query's size, not a fault: a warning.
        if failure.is_limit() || failure == Failure::Busy {
            tracing::warn!(token = %token, site = %site, category = failure.name(), code, "{query} failed");
        } else {
            tracing::error!(token = %token, site = %site, category = failure.name(), code, "{query} failed");
        }
        self.failed(failure, "statistics are")
    }

    /// The answer to a failed read (`what`: what was unavailable, for the
    /// generic answer), by its [`Failure`].
    pub fn failed(&self, failure: Failure, what: &'static str) -> Response<Full<Bytes>> {
        self.refusal(failure, what).response()
    }

    /// The [`ApiError`] of a failed read, as [`Self::failed`] answers it.
    pub fn refusal(&self, failure: Failure, what: &'static str) -> ApiError {
        let s = &self.settings;
        match failure {
            Failure::Time => ApiError::Time {
                secs: s.max_execution_time_secs,
            },
            Failure::Memory => ApiError::Memory {
                bytes: s.max_memory_usage,
            },
            Failure::Rows => ApiError::Rows {
                rows: s.max_result_rows,
            },
            Failure::ShardUnreachable => ApiError::ShardUnreachable { what },
            Failure::Busy => ApiError::ClickHouseBusy { what },
            Failure::Transport | Failure::ClickHouse | Failure::Other => {
                ApiError::Unavailable { what }
            }
        }
    }
}

/// Why a read failed, from what can be told without the error's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// ClickHouse stopped it at `max_execution_time`.
    Time,
    /// ClickHouse stopped it at `max_memory_usage`.
    Memory,
    /// The answer went over `max_result_rows`.
    Rows,
    /// On a cluster, no replica of one of the shards a `Distributed` read
    /// needs could be reached: the answer would miss that shard's rows.
    ShardUnreachable,
    /// ClickHouse already runs as many queries as it allows (its
    /// `max_concurrent_queries`): a passing load, not this query's fault.
    Busy,
    /// ClickHouse could not be reached or the connection broke.
    Transport,
    /// ClickHouse refused it for another reason.
    ClickHouse,
    /// Anything else (an answer tamis could not read).
    Other,
}

impl Failure {
    /// The failure behind `error` and ClickHouse's code, if it sent one.
    pub fn of(error: &clickhouse::error::Error) -> (Failure, Option<u32>) {
        let code = clickhouse_code(error);
        let failure = match code {
            Some(code) => Failure::from_code(code),
            None if crate::sink::is_transport_error(error) => Failure::Transport,
            None => Failure::Other,
        };
        (failure, code)
    }

    /// ClickHouse's error codes for the limits (the same in 18.16 and
    /// current releases): 159 TIMEOUT_EXCEEDED, 160 TOO_SLOW (the time
    /// estimated from the speed so far exceeds `max_execution_time`), 241
    /// MEMORY_LIMIT_EXCEEDED, 158 TOO_MANY_ROWS and 396
    /// TOO_MANY_ROWS_OR_BYTES (what `max_result_rows` raises, by version);
    /// 279 ALL_CONNECTION_TRIES_FAILED, what a `Distributed` read raises
    /// when no replica of a shard can be reached (a single server never
    /// does: it connects to no other server); 202
    /// TOO_MANY_SIMULTANEOUS_QUERIES, ClickHouse's own cap on running
    /// queries.
    pub fn from_code(code: u32) -> Failure {
        match code {
            202 => Failure::Busy,
            159 | 160 => Failure::Time,
            241 => Failure::Memory,
            158 | 396 => Failure::Rows,
            279 => Failure::ShardUnreachable,
            _ => Failure::ClickHouse,
        }
    }

    /// Whether a configured limit stopped the query (the client's query
    /// is too big, not tamis or ClickHouse failing).
    pub fn is_limit(self) -> bool {
        matches!(self, Failure::Time | Failure::Memory | Failure::Rows)
    }

    /// A failed read in words for an operator at a terminal (`tamis
    /// export`): what failed and ClickHouse's code, never ClickHouse's
    /// text, which may quote the statement.
    pub fn explain(error: &clickhouse::error::Error) -> String {
        match Failure::of(error) {
            (Failure::Transport, _) => {
                "ClickHouse cannot be reached (is it running? is clickhouse.url right?)".into()
            }
            (failure, Some(code)) => {
                format!(
                    "ClickHouse refused the read ({}, code {code})",
                    failure.name()
                )
            }
            (failure, None) => format!("ClickHouse failed the read ({})", failure.name()),
        }
    }

    /// A word for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Time => "time_limit",
            Failure::Memory => "memory_limit",
            Failure::Rows => "result_rows_limit",
            Failure::ShardUnreachable => "shard_unreachable",
            Failure::Busy => "clickhouse_busy",
            Failure::Transport => "transport",
            Failure::ClickHouse => "clickhouse",
            Failure::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_running_per_token: usize) -> QuerySettings {
        QuerySettings {
            max_execution_time_secs: 10,
            max_memory_usage: 1 << 30,
            max_result_rows: 1_000_000,
            timeout: Duration::from_secs(12),
            max_running_per_token,
            max_running_per_link: 3,
            max_running: 100,
            pushdown: true,
        }
    }

    /// The 429's message, which names the limit reached.
    fn refusal(admitted: Result<Permit<'_>, ApiError>) -> String {
        let Err(refused) = admitted else {
            panic!("admitted")
        };
        let response = refused.response();
        assert_eq!(response.status(), 429);
        format!("{:?}", response.body())
    }

    #[test]
    fn a_token_runs_at_most_its_limit_and_a_dropped_permit_frees_a_place() {
        let limits = Limits::new(&settings(2));
        let a = limits.admit("t", None).expect("first");
        let b = limits.admit("t", None).expect("second");
        let third = refusal(limits.admit("t", None));
        assert!(
            third
                .contains("this token already has 2 queries running (query.max_running_per_token)"),
            "{third}"
        );
        assert!(
            limits.admit("u", None).is_ok(),
            "another token is not counted"
        );
        drop(a);
        let c = limits.admit("t", None).expect("a place again");
        drop((b, c));
        assert!(limits.counts().is_empty(), "no count left");
    }

    /// A popular shared link: each viewer's network has a token's places,
    /// all viewers together the link's, and nothing stays counted.
    #[test]
    fn a_shared_link_s_viewers_each_have_places_within_the_link_s() {
        let limits = Limits::new(&settings(2));
        let net = |ip: &str| crate::privacy::ip::truncate(ip.parse().unwrap(), 24, 48);
        let (one, two, three) = (net("192.0.2.1"), net("198.51.100.1"), net("203.0.113.1"));
        let a = limits.admit("share:x", Some(one)).expect("viewer one");
        let b = limits
            .admit("share:x", Some(one))
            .expect("viewer one again");
        let refused = refusal(limits.admit("share:x", Some(net("192.0.2.200"))));
        assert!(
            refused.contains(
                "your network already has this shared link's 2 queries running (query.max_running_per_token)"
            ),
            "same network: {refused}"
        );
        let c = limits
            .admit("share:x", Some(two))
            .expect("another viewer is not kept waiting");
        let refused = refusal(limits.admit("share:x", Some(three)));
        assert!(
            refused.contains(
                "this shared link already has 3 queries running (query.max_running_per_link)"
            ),
            "{refused}"
        );
        assert!(
            limits.admit("share:y", Some(three)).is_ok(),
            "another link is not counted"
        );
        drop(a);
        let d = limits.admit("share:x", Some(three)).expect("a place again");
        drop((b, c, d));
        assert!(limits.counts().is_empty(), "no count left");
    }

    /// `max_running` bounds every token and link together, with a 503
    /// (the server's load), and only once a query would be admitted by its
    /// own limits: a refusal counts nowhere.
    #[test]
    fn the_server_runs_at_most_max_running_in_all() {
        let limits = Limits::new(&QuerySettings {
            max_running: 3,
            ..settings(2)
        });
        let net = |ip: &str| crate::privacy::ip::truncate(ip.parse().unwrap(), 24, 48);
        let a = limits.admit("t", None).expect("t");
        let b = limits.admit("u", None).expect("u");
        let c = limits
            .admit("share:x", Some(net("192.0.2.1")))
            .expect("a viewer");
        let Err(refused) = limits.admit("v", None) else {
            panic!("admitted past max_running")
        };
        let r = refused.response();
        assert_eq!(r.status(), hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get("retry-after").unwrap(), "1");
        let body = format!("{:?}", r.body());
        assert!(
            body.contains("the server already has 3 stats queries running, for all users together (query.max_running)"),
            "{body}"
        );
        let Err(refused) = limits.admit("share:x", Some(net("198.51.100.1"))) else {
            panic!("a link's viewer admitted past max_running")
        };
        assert_eq!(
            refused.running_limit(),
            Some(RunningLimit::Server),
            "a link's viewer too"
        );
        drop(b);
        let d = limits.admit("v", None).expect("a place again");
        drop((a, c, d));
        assert!(limits.counts().is_empty(), "no count left");
    }

    #[test]
    fn limit_codes_and_others() {
        let check = |text: &str, expected: Failure, code: Option<u32>| {
            let error = clickhouse::error::Error::BadResponse(text.to_string());
            assert_eq!(Failure::of(&error), (expected, code), "{text}");
        };
        check(
            "Code: 159, e.displayText() = DB::Exception: Timeout exceeded: elapsed 10.2 seconds, maximum: 10",
            Failure::Time,
            Some(159),
        );
        check(
            "Code: 160. DB::Exception: Estimated query execution time (12 seconds) is too long.",
            Failure::Time,
            Some(160),
        );
        check(
            "Code: 241, e.displayText() = DB::Exception: Memory limit (for query) exceeded",
            Failure::Memory,
            Some(241),
        );
        check(
            "Code: 396. DB::Exception: Limit for result exceeded, max rows: 5",
            Failure::Rows,
            Some(396),
        );
        check(
            "Code: 158, e.displayText() = DB::Exception: Limit for result rows exceeded",
            Failure::Rows,
            Some(158),
        );
        // A client's pattern quoted in the text decides nothing.
        check("Code: 427, e.displayText() = DB::Exception: OptimizedRegularExpression: cannot compile re2: Code: 241", Failure::ClickHouse, Some(427));
        // A Distributed read with every replica of a shard down (18.16's
        // text).
        check(
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed. Log: \n\nCode: 210, e.displayText() = DB::NetException: Connection refused (127.0.0.1:9000)",
            Failure::ShardUnreachable,
            Some(279),
        );
        // ClickHouse's own cap on running queries (18.16's text).
        check(
            "Code: 202, e.displayText() = DB::Exception: Too many simultaneous queries. Maximum: 64",
            Failure::Busy,
            Some(202),
        );
        check("garbage", Failure::Other, None);
    }

    #[test]
    fn answers_name_the_limit_and_never_clickhouse_text() {
        let limits = Limits::new(&settings(1));
        for (failure, status, retry) in [
            (Failure::Time, 503, Some("10")),
            (Failure::Memory, 503, Some("10")),
            (Failure::Rows, 422, None),
            (Failure::ShardUnreachable, 503, Some("10")),
            (Failure::Busy, 503, Some("1")),
            (Failure::ClickHouse, 503, None),
        ] {
            let r = limits.failed(failure, "statistics are");
            assert_eq!(r.status().as_u16(), status, "{failure:?}");
            assert_eq!(
                r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                retry,
                "{failure:?}"
            );
        }
        let _running = limits.admit("t", None).expect("a place");
        let Err(refused) = limits.admit("t", None) else {
            panic!("admitted over the limit")
        };
        let r = refused.response();
        assert_eq!(r.status(), hyper::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get("retry-after").unwrap(), "1");
        assert_eq!(
            limits.timed_out().status(),
            hyper::StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
