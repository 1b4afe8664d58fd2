//! A load driver for the durability tests: several client threads, each with
//! one keep-alive HTTP/1.1 connection to tamis on loopback, send pageviews
//! at a fixed total rate and record what happened to every single request.
//!
//! Every request carries a page path that names it (`/d/<id in letters>`:
//! letters only, since tamis redacts runs of 6+ digits and token-like
//! segments), so ClickHouse's per-page counts can be compared with the
//! answers, request by request ([`Report::check`]).
//!
//! It never retries a request: a retry would blur "answered 202" into "sent
//! twice". After a connection error the next request opens a new connection.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What happened to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 202 without `X-Tamis-Dropped`: tamis promised to count it.
    Accepted,
    /// 202 with `X-Tamis-Dropped: <reason>` (not expected for these hits).
    AcceptedDropped(String),
    /// 503; whether `Retry-After` came with it.
    Refused { retry_after: bool },
    /// Any other status.
    Other(u16),
    /// The request was written but no complete answer came back
    /// (connection reset or closed mid-request): tamis may or may not have
    /// logged it.
    NoAnswer(String),
    /// The request never left (connection refused, or the write failed, so
    /// tamis cannot have read a complete request).
    NotSent(String),
}

/// One request: its id (its page is [`page`]`(id)`), what happened, and
/// when the answer (or error) came, from the start of the load.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: u64,
    pub outcome: Outcome,
    pub at: Duration,
}

/// One simulated visitor network: the address the trusted proxy (the test,
/// on 127.0.0.1) forwards, and the browser's user agent.
#[derive(Clone, Debug)]
pub struct Client {
    pub ip: String,
    pub user_agent: String,
}

#[derive(Clone, Debug)]
pub struct Spec {
    /// Total requests per second over all connections.
    pub rate: u32,
    /// Client threads, one keep-alive connection each.
    pub connections: usize,
    /// The load stops after this long...
    pub duration: Duration,
    /// ...or after this many requests, whichever comes first.
    pub max_requests: u64,
    /// Requests go to these clients in turn.
    pub clients: Vec<Client>,
    /// Site hostnames of the page URLs, taken in turn: several sites make
    /// every batch several inserts (one per table, site and hour).
    pub hosts: Vec<String>,
}

/// Answers so far, readable while the load runs.
#[derive(Default, Debug)]
pub struct Live {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub refused_without_retry_after: AtomicU64,
    pub no_answer: AtomicU64,
    pub not_sent: AtomicU64,
    pub other: AtomicU64,
}

impl Live {
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// A running load.
pub struct Load {
    pub live: Arc<Live>,
    pub started: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Record>>>,
}

/// The page path of request `id`: `/d/` and the id in base 26, letters
/// `a`..`z`, least significant first.
pub fn page(id: u64) -> String {
    let mut s = String::from("/d/");
    let mut n = id;
    loop {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
        if n == 0 {
            return s;
        }
    }
}

/// The request id of a page path made by [`page`].
pub fn id_of(page: &str) -> Option<u64> {
    let letters = page.strip_prefix("/d/")?;
    if letters.is_empty() || letters.len() > 12 {
        return None;
    }
    let mut n = 0u64;
    for c in letters.bytes().rev() {
        if !c.is_ascii_lowercase() {
            return None;
        }
        n = n * 26 + u64::from(c - b'a');
    }
    (page_is_canonical(n, letters)).then_some(n)
}

fn page_is_canonical(n: u64, letters: &str) -> bool {
    page(n)[3..] == *letters
}

impl Load {
    pub fn start(addr: SocketAddr, spec: Spec) -> Load {
        assert!(spec.rate > 0 && spec.connections > 0 && !spec.clients.is_empty());
        let live = Arc::new(Live::default());
        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let interval = Duration::from_secs_f64(spec.connections as f64 / f64::from(spec.rate));
        let threads = (0..spec.connections)
            .map(|i| {
                let (live, stop, next_id, spec) =
                    (live.clone(), stop.clone(), next_id.clone(), spec.clone());
                // Stagger the threads so the total rate is smooth.
                let first = started + interval.mul_f64(i as f64 / spec.connections as f64);
                std::thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn(move || {
                        client_thread(
                            addr, &spec, interval, first, started, &live, &stop, &next_id,
                        )
                    })
                    .expect("spawn load thread")
            })
            .collect();
        Load {
            live,
            started,
            stop,
            threads,
        }
    }

    /// Whether every thread has finished (duration or count reached).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops sending now and returns every request's record.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the duration or count is reached.
    pub fn wait(self) -> Report {
        self.join()
    }

    fn join(self) -> Report {
        let mut records: Vec<Record> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread panicked"))
            .collect();
        records.sort_by_key(|r| r.id);
        Report {
            records,
            elapsed: self.started.elapsed(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn client_thread(
    addr: SocketAddr,
    spec: &Spec,
    interval: Duration,
    first: Instant,
    started: Instant,
    live: &Live,
    stop: &AtomicBool,
    next_id: &AtomicU64,
) -> Vec<Record> {
    let mut records = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut next = first;
    loop {
        if stop.load(Ordering::Relaxed) || started.elapsed() >= spec.duration {
            return records;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            // Far behind (tamis was down, or answers were slow): restart the
            // schedule instead of bursting to catch up.
            next = now;
        }
        next += interval;
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        if id >= spec.max_requests {
            return records;
        }
        let client = &spec.clients[id as usize % spec.clients.len()];
        let outcome = exchange(addr, &mut conn, &request(addr, spec, client, id));
        live.sent.fetch_add(1, Ordering::Relaxed);
        let counter = match &outcome {
            Outcome::Accepted => &live.accepted,
            Outcome::Refused { retry_after } => {
                if !retry_after {
                    live.refused_without_retry_after
                        .fetch_add(1, Ordering::Relaxed);
                }
                &live.refused
            }
            Outcome::NoAnswer(_) => &live.no_answer,
            Outcome::NotSent(_) => &live.not_sent,
            Outcome::AcceptedDropped(_) | Outcome::Other(_) => &live.other,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if matches!(outcome, Outcome::NotSent(_)) {
            // tamis is down: don't spin on refused connections.
            std::thread::sleep(Duration::from_millis(10));
        }
        records.push(Record {
            id,
            outcome,
            at: started.elapsed(),
        });
    }
}

fn request(addr: SocketAddr, spec: &Spec, client: &Client, id: u64) -> Vec<u8> {
    let host = &spec.hosts[id as usize % spec.hosts.len()];
    let body = serde_json::json!({
        "n": "pageview",
        "u": format!("https://{host}{}", page(id)),
        "d": host,
        "r": null,
    })
    .to_string();
    format!(
        "POST /api/event HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nUser-Agent: {}\r\nX-Forwarded-For: {}\r\nContent-Length: {}\r\n\r\n{body}",
        client.user_agent,
        client.ip,
        body.len()
    )
    .into_bytes()
}

/// Sends one request on the kept connection (opening one if needed) and
/// reads its answer. Any failure closes the connection.
fn exchange(addr: SocketAddr, conn: &mut Option<BufReader<TcpStream>>, request: &[u8]) -> Outcome {
    if conn.is_none() {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(20)));
                *conn = Some(BufReader::new(stream));
            }
            Err(e) => return Outcome::NotSent(format!("connect: {e}")),
        }
    }
    let Some(reader) = conn.as_mut() else {
        unreachable!()
    };
    // The request is one small write: if it fails, tamis cannot have read
    // a complete request.
    if let Err(e) = reader.get_mut().write_all(request) {
        *conn = None;
        return Outcome::NotSent(format!("write: {e}"));
    }
    match read_response(reader) {
        Ok((status, headers, close)) => {
            if close {
                *conn = None;
            }
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            match status {
                202 => match header("x-tamis-dropped") {
                    None => Outcome::Accepted,
                    Some(reason) => Outcome::AcceptedDropped(reason),
                },
                503 => Outcome::Refused {
                    retry_after: header("retry-after").is_some(),
                },
                other => Outcome::Other(other),
            }
        }
        Err(e) => {
            *conn = None;
            Outcome::NoAnswer(e.to_string())
        }
    }
}

/// A response's status, headers, and whether the server closes the
/// connection after it.
type ResponseHead = (u16, Vec<(String, String)>, bool);

/// Reads one HTTP/1.1 response: status, headers, and whether the server
/// closes the connection after it. The body is read and discarded.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<ResponseHead> {
    let eof = || {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a complete answer",
        )
    };
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(eof());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Err(eof());
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
        }
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
    }
    let close = header("connection").is_some_and(|v| v.contains("close"));
    Ok((status, headers, close))
}

/// Every request of a finished load.
pub struct Report {
    pub records: Vec<Record>,
    pub elapsed: Duration,
}

/// The comparison of a [`Report`] with ClickHouse's per-page counts.
#[derive(Debug, Default)]
pub struct Verdict {
    pub accepted: u64,
    pub refused: u64,
    pub refused_without_retry_after: u64,
    pub no_answer: u64,
    /// Unanswered requests that ClickHouse counted (once).
    pub no_answer_counted: u64,
    pub not_sent: u64,
    pub other: BTreeMap<String, u64>,
    /// Total pageviews of `/d/` pages in ClickHouse.
    pub counted: u64,
    /// 202s counted twice (a broken promise).
    pub doubled: u64,
    /// Every broken promise, one line each (empty when all is well).
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn summary(&self) -> String {
        format!(
            "202: {} ({} counted twice), 503: {} ({} without Retry-After), no answer: {} (counted: {}), not sent: {}, other: {:?}; pageviews in ClickHouse: {}",
            self.accepted,
            self.doubled,
            self.refused,
            self.refused_without_retry_after,
            self.no_answer,
            self.no_answer_counted,
            self.not_sent,
            self.other,
            self.counted
        )
    }
}

impl Report {
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> u64 {
        self.records.iter().filter(|r| pred(&r.outcome)).count() as u64
    }

    pub fn accepted_ids(&self) -> Vec<u64> {
        self.records
            .iter()
            .filter(|r| r.outcome == Outcome::Accepted)
            .map(|r| r.id)
            .collect()
    }

    /// Compares the answers with `counts` (page → pageviews from
    /// ClickHouse). The promises: a 202 is counted exactly once; a 503, a
    /// dropped hit, another status or a request never sent is counted zero
    /// times; a request without an answer may be counted 0 or 1 times (it
    /// may have been logged before the connection broke). `lost_on_purpose`
    /// are ids the test destroyed itself (a corrupted record): counted 0.
    pub fn check(&self, counts: &HashMap<String, u64>, lost_on_purpose: &[u64]) -> Verdict {
        let mut v = Verdict::default();
        let mut by_id: HashMap<u64, u64> = HashMap::new();
        for (page, n) in counts {
            match id_of(page) {
                Some(id) => {
                    by_id.insert(id, *n);
                    v.counted += n;
                }
                None => v.problems.push(format!(
                    "page {page:?} ({n} pageviews) was never sent by the load"
                )),
            }
        }
        let mut problems_by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for r in &self.records {
            let n = by_id.remove(&r.id).unwrap_or(0);
            let on_purpose = lost_on_purpose.contains(&r.id);
            let (kind, ok) = match &r.outcome {
                Outcome::Accepted if on_purpose => {
                    ("202 (record corrupted by the test) counted", n == 0)
                }
                Outcome::Accepted => {
                    v.accepted += 1;
                    if n == 2 {
                        v.doubled += 1;
                    }
                    (
                        if n == 0 {
                            "202 lost (counted 0 times)"
                        } else {
                            "202 counted more than once"
                        },
                        n == 1,
                    )
                }
                Outcome::Refused { retry_after } => {
                    v.refused += 1;
                    if !retry_after {
                        v.refused_without_retry_after += 1;
                    }
                    ("503 counted", n == 0)
                }
                Outcome::NoAnswer(_) => {
                    v.no_answer += 1;
                    v.no_answer_counted += n.min(1);
                    ("unanswered request counted more than once", n <= 1)
                }
                Outcome::NotSent(_) => {
                    v.not_sent += 1;
                    ("request never sent but counted", n == 0)
                }
                Outcome::AcceptedDropped(reason) => {
                    *v.other
                        .entry(format!("202 dropped ({reason})"))
                        .or_default() += 1;
                    ("dropped hit counted", n == 0)
                }
                Outcome::Other(status) => {
                    *v.other.entry(format!("HTTP {status}")).or_default() += 1;
                    ("refused hit counted", n == 0)
                }
            };
            if !ok {
                problems_by_kind.entry(kind).or_default().push(format!(
                    "{} ({:?} at {:.3}s): counted {n}",
                    page(r.id),
                    r.outcome,
                    r.at.as_secs_f64()
                ));
            }
        }
        for (id, n) in by_id {
            v.problems.push(format!(
                "{} counted {n} but no such request was recorded",
                page(id)
            ));
        }
        for (kind, list) in problems_by_kind {
            let shown: Vec<&String> = list.iter().take(10).collect();
            v.problems
                .push(format!("{kind}: {} requests, e.g. {shown:#?}", list.len()));
        }
        v
    }
}
