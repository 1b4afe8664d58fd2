//! One durability scenario's world ([`Rig`]): a real ClickHouse (shared,
//! or of its own so the scenario may kill it), optionally a fault-injecting
//! TCP [`Proxy`] in front of it, a database, a scratch folder with tamis's
//! config and log directory, the tamis binary, and the checks every
//! scenario ends with: every 202 counted exactly once once the backlog has
//! drained ([`Rig::verify`]), and nothing of the clients in the log folder
//! ([`Rig::check_log_private`]). Shared by `durability.rs` and `faults.rs`.
//!
//! A scenario notes broken promises with [`Rig::check`] and goes on, so one
//! run shows every problem; [`Rig::finish`] fails with all of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::load::{self, Client, Load, Report, Spec};
use super::proxy::Proxy;
use super::*;

/// Client addresses the load forwards (documentation ranges). None of them,
/// in any form, may reach the log directory.
pub const IPS: [&str; 2] = ["198.51.100.77", "203.0.113.219"];
/// User agents of the load; tamis keeps only their reduced form.
pub const AGENTS: [&str; 2] = [FIREFOX, CHROME];

/// Load rate of every scenario: steady, well below what tamis handles, so
/// that what is measured is durability, not overload.
pub const RATE: u32 = 300;
pub const CONNECTIONS: usize = 4;

/// Bounded waits (never plain sleeps) for tamis to drain its backlog.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// The settings a scenario changes.
#[derive(Clone)]
pub struct Knobs {
    pub log_max_bytes: u64,
    pub shutdown_timeout_ms: u64,
    pub clickhouse_timeout_ms: u64,
    pub flush_interval_ms: u64,
    /// `server.queue_capacity`: records the aggregator holds before the
    /// feeder waits (and bounds the in-memory hand-off too).
    pub queue_capacity: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            log_max_bytes: 1 << 30,
            shutdown_timeout_ms: 10_000,
            clickhouse_timeout_ms: 10_000,
            flush_interval_ms: 200,
            queue_capacity: 250_000,
        }
    }
}

pub fn config_text(url: &str, db: &str, log_dir: &Path, knobs: &Knobs) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
shutdown_timeout_ms = {shutdown}
queue_capacity = {queue}

[clickhouse]
url = "{url}"
database = "{db}"
flush_interval_ms = {flush}
timeout_ms = {timeout}

[storage]
log_dir = "{log_dir}"
log_max_bytes = {max}

[[site]]
id = "example.org"
timezone = "America/Toronto"

[[site]]
id = "other.org"
timezone = "Europe/Paris"

[[token]]
name = "dashboard"
secret_sha256 = "{token}"
sites = ["example.org", "other.org"]
"#,
        shutdown = knobs.shutdown_timeout_ms,
        queue = knobs.queue_capacity,
        url = url,
        timeout = knobs.clickhouse_timeout_ms,
        flush = knobs.flush_interval_ms,
        log_dir = log_dir.display(),
        max = knobs.log_max_bytes,
        token = sha256_hex(TOKEN),
    )
}

/// How tamis reaches ClickHouse.
enum Wire {
    Direct,
    Proxied,
}

pub enum Server {
    Shared(&'static ClickHouse),
    Own(ClickHouse),
}

/// One scenario's world: a ClickHouse (shared or its own), a database, a
/// scratch folder with tamis's config and log directory, and tamis.
pub struct Rig {
    pub name: &'static str,
    pub server: Server,
    pub db: String,
    pub scratch: Scratch,
    pub log_dir: PathBuf,
    pub tamis: Binary,
    /// The TCP proxy between tamis and ClickHouse, when the scenario
    /// injects faults on the wire.
    pub proxy: Option<Proxy>,
    findings: std::cell::RefCell<Vec<String>>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let findings = self.findings.borrow();
        if std::thread::panicking() && !findings.is_empty() {
            eprintln!(
                "[{}] problems noted before the failure:\n- {}",
                self.name,
                findings.join("\n- ")
            );
        }
    }
}

impl Rig {
    /// On the shared ClickHouse, for scenarios that never stop it.
    pub fn shared(name: &'static str, knobs: Knobs) -> Rig {
        Self::new(
            name,
            Server::Shared(ClickHouse::shared()),
            knobs,
            Wire::Direct,
        )
    }

    /// On a ClickHouse of its own, which the scenario may stop.
    pub fn own(name: &'static str, knobs: Knobs) -> Rig {
        Self::new(name, Server::Own(ClickHouse::start()), knobs, Wire::Direct)
    }

    /// On the shared ClickHouse, reached through a [`Proxy`] the scenario
    /// controls.
    pub fn shared_via_proxy(name: &'static str, knobs: Knobs) -> Rig {
        Self::new(
            name,
            Server::Shared(ClickHouse::shared()),
            knobs,
            Wire::Proxied,
        )
    }

    /// On a ClickHouse of its own, reached through a [`Proxy`]: the
    /// scenario may stop the server at a moment the proxy shows it.
    pub fn own_via_proxy(name: &'static str, knobs: Knobs) -> Rig {
        Self::new(name, Server::Own(ClickHouse::start()), knobs, Wire::Proxied)
    }

    fn new(name: &'static str, server: Server, knobs: Knobs, wire: Wire) -> Rig {
        let ch = match &server {
            Server::Shared(ch) => *ch,
            Server::Own(ch) => ch,
        };
        let db = ch.create_database(name);
        let proxy = match wire {
            Wire::Direct => None,
            Wire::Proxied => Some(Proxy::start(SocketAddr::from((
                [127, 0, 0, 1],
                ch.http_port,
            )))),
        };
        let url = proxy.as_ref().map_or(ch.url.clone(), Proxy::url);
        let scratch = Scratch::new();
        let log_dir = scratch.path("log");
        let tamis = Binary::serve(&scratch, &config_text(&url, &db, &log_dir, &knobs));
        Rig {
            name,
            server,
            db,
            scratch,
            log_dir,
            tamis,
            proxy,
            findings: Default::default(),
        }
    }

    /// The URL tamis is configured with: the proxy's, or ClickHouse's.
    fn tamis_url(&self) -> String {
        self.proxy
            .as_ref()
            .map_or(self.ch().url.clone(), Proxy::url)
    }

    /// The proxy in front of ClickHouse (`*_via_proxy` rigs only).
    pub fn proxy(&self) -> &Proxy {
        self.proxy
            .as_ref()
            .unwrap_or_else(|| panic!("{}: this rig has no proxy", self.name))
    }

    pub fn ch(&self) -> &ClickHouse {
        match &self.server {
            Server::Shared(ch) => ch,
            Server::Own(ch) => ch,
        }
    }

    pub fn ch_mut(&mut self) -> &mut ClickHouse {
        match &mut self.server {
            Server::Shared(_) => panic!("{}: the shared ClickHouse must not be stopped", self.name),
            Server::Own(ch) => ch,
        }
    }

    /// Rewrites tamis's config; it applies from the next (re)start.
    pub fn reconfigure(&self, knobs: &Knobs) {
        let text = config_text(&self.tamis_url(), &self.db, &self.log_dir, knobs);
        std::fs::write(self.scratch.path("tamis.toml"), text).expect("rewrite config");
    }

    pub fn load(&self, duration: Duration) -> Load {
        let clients = IPS
            .iter()
            .flat_map(|ip| {
                AGENTS.iter().map(move |ua| Client {
                    ip: ip.to_string(),
                    user_agent: ua.to_string(),
                })
            })
            .collect();
        Load::start(
            self.tamis.addr,
            Spec {
                rate: RATE,
                connections: CONNECTIONS,
                duration,
                max_requests: u64::from(RATE) * duration.as_secs().max(1) * 2,
                clients,
                hosts: vec!["example.org".to_string(), "other.org".to_string()],
            },
        )
    }

    pub fn metrics(&self) -> Option<HashMap<String, f64>> {
        scrape(self.tamis.admin)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics()?.get(name).copied()
    }

    /// Pageviews per page in ClickHouse, read directly (both sites; every
    /// page of the load is unique). Delivery marks are rows of their own.
    pub fn pageviews(&self) -> HashMap<String, u64> {
        let text = self.ch().query_in(
            &self.db,
            "SELECT page, sumMerge(pageviews) FROM traffic_hourly WHERE event != 'tamis:delivered' GROUP BY page FORMAT TabSeparated",
        );
        text.lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(page, n)| {
                (
                    page.to_string(),
                    n.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("bad count {n:?}")),
                )
            })
            .collect()
    }

    /// Waits until tamis reports an empty backlog and ClickHouse's total
    /// stays the same over two readings, then returns the counts.
    pub fn drained(&self) -> HashMap<String, u64> {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut previous: Option<u64> = None;
        loop {
            let backlog = self.metric("tamis_log_backlog_hits");
            let counts = self.pageviews();
            let total: u64 = counts.values().sum();
            if backlog == Some(0.0) && previous == Some(total) {
                return counts;
            }
            previous = (backlog == Some(0.0)).then_some(total);
            if Instant::now() > deadline {
                panic!(
                    "{}: backlog not drained after {DRAIN_TIMEOUT:?}: tamis_log_backlog_hits = {backlog:?}, {total} pageviews in ClickHouse\n{}",
                    self.name,
                    self.tamis_log_excerpt()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Notes a broken promise; the scenario goes on so that one run shows
    /// every problem, and [`Rig::finish`] fails with all of them.
    pub fn check(&self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            let problem = problem();
            eprintln!("[{}] PROBLEM: {problem}", self.name);
            self.findings.borrow_mut().push(problem);
        }
    }

    /// Fails with every problem noted, tamis's warnings and errors, and
    /// the end of ClickHouse's error log (which tells, for instance, which
    /// unfinished parts it removed after a kill).
    pub fn finish(self) {
        let findings = self.findings.take();
        assert!(
            findings.is_empty(),
            "{}: {} problem(s):\n- {}\n{}\n--- ClickHouse error log (last 20 lines):\n{}",
            self.name,
            findings.len(),
            findings.join("\n- "),
            self.tamis_log_excerpt(),
            self.ch().error_log_tail(20)
        );
    }

    /// Drains, compares ClickHouse's counts with the answers, prints the
    /// summary and notes every broken promise.
    pub fn verify(&self, report: &Report, lost_on_purpose: &[u64]) -> load::Verdict {
        let counts = self.drained();
        self.verify_counts(report, &counts, lost_on_purpose)
    }

    /// [`Rig::verify`] on counts already drained (and, for instance, with
    /// pages the load did not send taken out).
    pub fn verify_counts(
        &self,
        report: &Report,
        counts: &HashMap<String, u64>,
        lost_on_purpose: &[u64],
    ) -> load::Verdict {
        let verdict = report.check(counts, lost_on_purpose);
        eprintln!("[{}] {}", self.name, verdict.summary());
        self.check(verdict.problems.is_empty(), || {
            format!(
                "delivery promises broken ({}):\n{}",
                verdict.summary(),
                verdict.problems.join("\n")
            )
        });
        self.check(
            verdict.counted == verdict.accepted + verdict.doubled + verdict.no_answer_counted,
            || {
                format!(
                    "pageviews in ClickHouse ({}) != 202s ({}) + counted twice ({}) + unanswered requests found counted ({})",
                    verdict.counted, verdict.accepted, verdict.doubled, verdict.no_answer_counted
                )
            },
        );
        self.check(verdict.accepted > 0, || {
            "no request was accepted at all".to_string()
        });
        self.check(verdict.other.is_empty(), || {
            format!("unexpected answers {:?}", verdict.other)
        });
        verdict
    }

    /// The log directory holds no client IP (dotted, or its four raw
    /// bytes) and no raw user agent, and is private to its owner.
    pub fn check_log_private(&self) {
        let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
        for ip in IPS {
            needles.push((format!("client IP {ip}"), ip.as_bytes().to_vec()));
            let octets: Vec<u8> = ip.split('.').map(|o| o.parse().expect("octet")).collect();
            needles.push((format!("client IP {ip} as 4 raw bytes"), octets));
        }
        for ua in AGENTS {
            needles.push((format!("raw user agent {ua:?}"), ua.as_bytes().to_vec()));
        }
        self.check(self.log_dir.is_dir(), || {
            format!("no log directory at {}", self.log_dir.display())
        });
        let found = super::journal::find_needles(&self.log_dir, &needles);
        self.check(found.is_empty(), || {
            format!(
                "the log directory holds what it must not:\n{}",
                found.join("\n")
            )
        });
        let loose = super::journal::loose_permissions(&self.log_dir);
        self.check(loose.is_empty(), || {
            format!("the log directory is not private:\n{}", loose.join("\n"))
        });
    }

    pub fn log_bytes_on_disk(&self) -> u64 {
        super::journal::files(&self.log_dir)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Bytes of records in the log's segments (what the cap counts).
    pub fn log_record_bytes(&self) -> u64 {
        super::journal::segments(&self.log_dir)
            .iter()
            .filter_map(|s| std::fs::read(s).ok())
            .map(|b| super::journal::walk(&b).data_end as u64)
            .sum()
    }

    /// Warnings and errors tamis logged, with the run separators, for
    /// failure messages.
    pub fn tamis_log_excerpt(&self) -> String {
        let text = self.tamis.log_text();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.contains("WARN")
                    || l.contains("ERROR")
                    || l.contains("=== tamis run")
                    || l.contains("panicked")
            })
            .collect();
        format!(
            "--- tamis warnings and errors ({} of {} lines; full log {}):\n{}",
            lines.len().min(60),
            lines.len(),
            self.tamis.log.display(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }
}

/// `/metrics` as name (with labels) → value.
pub fn scrape(addr: std::net::SocketAddr) -> Option<HashMap<String, f64>> {
    let r = try_http(addr, "GET", "/metrics", &[], b"").ok()?;
    (r.status == 200).then(|| {
        r.body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
            .collect()
    })
}

/// `/readyz`: status and JSON body (`Null` if the body is not JSON).
pub fn readyz(addr: std::net::SocketAddr) -> Option<(u16, serde_json::Value)> {
    let r = try_http(addr, "GET", "/readyz", &[], b"").ok()?;
    Some((
        r.status,
        serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null),
    ))
}

/// Polls `what` every 50 ms until it holds or `timeout` passes; false on timeout.
pub fn eventually(timeout: Duration, mut what: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if what() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
