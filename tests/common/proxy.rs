//! A fault-injecting TCP proxy in front of ClickHouse's HTTP port, for the
//! fault scenarios: tamis's `[clickhouse] url` points at it, and the test
//! thread decides, while tamis runs, what happens to the requests that
//! match a [`Rule`]: cut mid-request, answered late, reset after being
//! fully sent, or held at a chosen point until the test has done something
//! (killed ClickHouse) and releases them. Everything else passes through.
//!
//! It understands just enough HTTP/1.1 to find where a request and an
//! answer end (`Content-Length`, chunked transfer encoding, or the end of
//! the connection for an answer), so that keep-alive connections carry
//! several exchanges and a fault hits one request, not a connection. It
//! reads a whole request before forwarding any of it, which is what lets a
//! rule look at the body. It runs on a runtime of its own in a thread of its
//! own; it must not change a byte of what it forwards.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What part of a request goes to ClickHouse before a fault.
#[derive(Clone, Copy, Debug)]
pub enum Part {
    Nothing,
    /// The first bytes of the request (head included).
    First(usize),
    /// All but its last bytes: `AllBut(5)` withholds a chunked body's
    /// terminator `0\r\n\r\n`.
    AllBut(usize),
    /// The head and the first chunks of a chunked body (the `clickhouse`
    /// crate ends its chunks at row boundaries); all of a shorter request.
    Chunks(usize),
    All,
}

impl Part {
    /// How many bytes of `request` this part is.
    fn of(self, request: &[u8]) -> usize {
        let len = request.len();
        match self {
            Part::Nothing => 0,
            Part::First(n) => n.min(len),
            Part::AllBut(n) => len.saturating_sub(n),
            Part::Chunks(n) => {
                let head = head_len(request).unwrap_or(len);
                head + chunks_len(&request[head..], n).unwrap_or(len - head)
            }
            Part::All => len,
        }
    }
}

/// What happens to a matching request.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Forwards `Part` of the request, then closes both connections.
    Cut(Part),
    /// Forwards the request, and ClickHouse's answer only after this long.
    Delay(Duration),
    /// Forwards the whole request, waits for ClickHouse's answer and, instead
    /// of forwarding it, resets the client's connection (`SO_LINGER` 0):
    /// applied, but the client never hears it.
    ResetAfterAnswer,
    /// Forwards `Part` of the request, tells the test ([`Proxy::wait_held`])
    /// and waits for [`Proxy::release`] (forward the rest and the answer)
    /// or [`Proxy::release_without_answer`] (reset the client instead).
    Hold(Part),
    /// Forwards the whole request, reads ClickHouse's answer, then holds it
    /// as [`Fault::Hold`] does: the request is applied, and the test decides
    /// whether the client hears of it.
    HoldAnswer,
}

type Predicate = Box<dyn FnMut(&str, &[u8]) -> bool + Send>;

/// Which requests a rule applies to, from their request line and body.
pub struct Matcher(Predicate);

impl Matcher {
    /// Requests whose first line (method, path and query string) contains
    /// `text`, e.g. `-receipt` or `query_id=tamis-`.
    pub fn line(text: &str) -> Matcher {
        let text = text.to_string();
        Matcher(Box::new(move |line, _| line.contains(&text)))
    }

    /// Requests whose body, as sent (chunk framing included), contains `text`.
    pub fn body(text: &str) -> Matcher {
        let needle = text.as_bytes().to_vec();
        Matcher(Box::new(move |_, body| {
            body.windows(needle.len()).any(|w| w == needle.as_slice())
        }))
    }

    /// Any predicate on (request line, body); it may keep state, since it
    /// sees every request in the order they come.
    pub fn new(predicate: impl FnMut(&str, &[u8]) -> bool + Send + 'static) -> Matcher {
        Matcher(Box::new(predicate))
    }
}

/// A fault for matching requests: the first `skip` matches pass, the next
/// `times` get the fault, later ones pass.
pub struct Rule {
    matcher: Matcher,
    fault: Fault,
    skip: u64,
    times: u64,
}

impl Rule {
    /// Faults the first matching request only.
    pub fn new(matcher: Matcher, fault: Fault) -> Rule {
        Rule {
            matcher,
            fault,
            skip: 0,
            times: 1,
        }
    }

    pub fn skip(self, skip: u64) -> Rule {
        Rule { skip, ..self }
    }

    pub fn times(self, times: u64) -> Rule {
        Rule { times, ..self }
    }
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// Requests the current rule matched.
    matched: u64,
    /// Requests the current rule faulted.
    faulted: u64,
    /// Requests held now.
    held: u64,
    /// Releases so far; a held request goes on once this passes the value
    /// it saw when it stopped.
    releases: u64,
    /// Whether the last release drops the answer.
    without_answer: bool,
    /// The longest request seen, in bytes (for failure messages).
    longest: usize,
    /// Bytes of the answers (head and body) to requests the current rule
    /// matched.
    answered: u64,
}

#[derive(Default)]
struct Control {
    state: Mutex<State>,
    changed: Condvar,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault for this request, if the rule matches it and is not
    /// spent, and whether the rule matches it.
    fn fault_for(&self, line: &str, body: &[u8]) -> (Option<Fault>, bool) {
        let mut state = self.lock();
        state.longest = state.longest.max(body.len());
        let Some(rule) = state.rule.as_mut() else {
            return (None, false);
        };
        if !(rule.matcher.0)(line, body) {
            return (None, false);
        }
        let fault = if rule.skip > 0 {
            rule.skip -= 1;
            None
        } else if rule.times > 0 {
            rule.times -= 1;
            Some(rule.fault)
        } else {
            None
        };
        state.matched += 1;
        state.faulted += u64::from(fault.is_some());
        self.changed.notify_all();
        (fault, true)
    }

    /// Counts a held request and waits (polling, so the proxy's runtime
    /// keeps serving other connections) for the next release; returns
    /// whether the answer is to be dropped.
    async fn hold(&self) -> bool {
        let seen = {
            let mut state = self.lock();
            state.held += 1;
            self.changed.notify_all();
            state.releases
        };
        loop {
            {
                let mut state = self.lock();
                if state.releases > seen {
                    state.held -= 1;
                    return state.without_answer;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A running proxy; stopped when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to `upstream`, passing
    /// everything through until a rule is armed.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy: bind");
        listener.set_nonblocking(true).expect("proxy: nonblocking");
        let addr = listener.local_addr().expect("proxy: address");
        let control = Arc::new(Control::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = {
            let control = control.clone();
            std::thread::Builder::new()
                .name("proxy".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("proxy: runtime");
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener).expect("proxy: listener");
                        tokio::select! {
                            _ = stopped => {}
                            _ = accept(listener, upstream, control) => {}
                        }
                    });
                })
                .expect("proxy: thread")
        };
        Proxy {
            addr,
            control,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://` and the proxy's address, for tamis's config.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the rule (and zeroes its counters).
    pub fn arm(&self, rule: Rule) {
        let mut state = self.control.lock();
        state.rule = Some(rule);
        state.matched = 0;
        state.faulted = 0;
        state.answered = 0;
    }

    /// Back to passing everything through.
    pub fn disarm(&self) {
        self.control.lock().rule = None;
    }

    /// Requests the current rule matched so far.
    pub fn matched(&self) -> u64 {
        self.control.lock().matched
    }

    /// Bytes of ClickHouse's answers (head and body) to the requests the
    /// current rule matched, as forwarded to the client.
    pub fn answered_bytes(&self) -> u64 {
        self.control.lock().answered
    }

    /// The longest request body seen so far, in bytes.
    pub fn longest_body(&self) -> usize {
        self.control.lock().longest
    }

    /// Requests the current rule faulted so far.
    pub fn faulted(&self) -> u64 {
        self.control.lock().faulted
    }

    /// Waits up to `timeout` for the current rule to have faulted `n`
    /// requests; whether it did.
    pub fn wait_faulted(&self, n: u64, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.faulted >= n)
    }

    /// Waits up to `timeout` until a request is held; whether one is.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        self.wait(timeout, |s| s.held > 0)
    }

    /// Lets the held requests go on: the rest of each request, then
    /// ClickHouse's answer (if there is still a ClickHouse to answer).
    pub fn release(&self) {
        self.release_with(false);
    }

    /// Lets the held requests go on without an answer: each client's
    /// connection is reset instead.
    pub fn release_without_answer(&self) {
        self.release_with(true);
    }

    fn release_with(&self, without_answer: bool) {
        let mut state = self.control.lock();
        state.releases += 1;
        state.without_answer = without_answer;
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.control.lock();
        while !done(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .control
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Held requests would otherwise wait for ever.
        self.release_without_answer();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, control: Arc<Control>) {
    loop {
        if let Ok((client, _)) = listener.accept().await {
            let _ = client.set_nodelay(true);
            tokio::spawn(connection(client, upstream, control.clone()));
        }
    }
}

/// One client connection, exchange by exchange, over one upstream
/// connection opened at the first request. Any I/O error ends both.
async fn connection(mut client: TcpStream, upstream: SocketAddr, control: Arc<Control>) {
    let mut from_client = Vec::new();
    let mut from_server = Vec::new();
    let mut server: Option<TcpStream> = None;
    loop {
        let Ok(Some(request)) = read_message(&mut client, &mut from_client, Side::Request).await
        else {
            return;
        };
        let head = head_len(&request).unwrap_or(request.len());
        let line = String::from_utf8_lossy(request.split(|&b| b == b'\r').next().unwrap_or(&[]))
            .into_owned();
        let (fault, matched) = control.fault_for(&line, &request[head..]);
        if server.is_none() {
            server = TcpStream::connect(upstream).await.ok();
        }
        let Some(up) = server.as_mut() else {
            // ClickHouse is not there: as for tamis, the connection ends.
            return;
        };
        let answer = match fault {
            None => exchange(up, &mut from_server, &request).await,
            Some(Fault::Cut(part)) => {
                let _ = up.write_all(&request[..part.of(&request)]).await;
                return;
            }
            Some(Fault::Delay(delay)) => {
                let answer = exchange(up, &mut from_server, &request).await;
                tokio::time::sleep(delay).await;
                answer
            }
            Some(Fault::ResetAfterAnswer) => {
                let _ = exchange(up, &mut from_server, &request).await;
                let _ = client.set_zero_linger();
                return;
            }
            Some(Fault::Hold(part)) => {
                let sent = part.of(&request);
                if up.write_all(&request[..sent]).await.is_err() {
                    return;
                }
                if control.hold().await {
                    let _ = client.set_zero_linger();
                    return;
                }
                exchange(up, &mut from_server, &request[sent..]).await
            }
            Some(Fault::HoldAnswer) => {
                let answer = exchange(up, &mut from_server, &request).await;
                if control.hold().await {
                    let _ = client.set_zero_linger();
                    return;
                }
                answer
            }
        };
        let Ok((answer, open)) = answer else {
            return;
        };
        if matched {
            control.lock().answered += answer.len() as u64;
        }
        if client.write_all(&answer).await.is_err() || !open {
            return;
        }
    }
}

/// Sends `bytes` upstream and reads the answer; whether the connection
/// stays open after it.
async fn exchange(
    up: &mut TcpStream,
    buffer: &mut Vec<u8>,
    bytes: &[u8],
) -> io::Result<(Vec<u8>, bool)> {
    up.write_all(bytes).await?;
    match read_message(up, buffer, Side::Answer).await? {
        Some(answer) => Ok((answer, true)),
        // Delimited by the end of the connection: what came is the answer.
        None if head_len(buffer).is_some() => Ok((std::mem::take(buffer), false)),
        None => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Request,
    Answer,
}

/// Reads until `buffer` holds a whole message, and takes it out; `None`
/// when the peer closed first (what came stays in `buffer`).
async fn read_message(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    side: Side,
) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(end) = message_end(buffer, side) {
            return Ok(Some(buffer.drain(..end).collect()));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn head_len(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Where the first message in `bytes` ends, if it is all there. An answer
/// with neither `Content-Length` nor chunked encoding ends with the
/// connection, so never here.
pub fn message_end(bytes: &[u8], side: Side) -> Option<usize> {
    let head = head_len(bytes)?;
    let text = String::from_utf8_lossy(&bytes[..head]).to_ascii_lowercase();
    let first = text.split("\r\n").next().unwrap_or("");
    let header = |name: &str| {
        text.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return chunked_end(&bytes[head..]).map(|n| head + n);
    }
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().ok()?;
        return (bytes.len() >= head + length).then_some(head + length);
    }
    let status = first.split_whitespace().nth(1).unwrap_or("");
    let bodiless = status.starts_with('1') || status == "204" || status == "304";
    (side == Side::Request || bodiless).then_some(head)
}

/// The length of a complete chunked body at the start of `body`.
fn chunked_end(body: &[u8]) -> Option<usize> {
    chunks_len(body, usize::MAX)
}

/// The length of the first `n` chunks of a chunked body, or of all of it
/// (terminator and trailers included) when it has fewer.
pub fn chunks_len(body: &[u8], n: usize) -> Option<usize> {
    let line_end = |from: usize| {
        body.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut at = 0;
    for _ in 0..n {
        let end = line_end(at)?;
        let size = std::str::from_utf8(&body[at..end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        at = end + 2;
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let end = line_end(at)?;
                if end == at {
                    return Some(at + 2);
                }
                at = end + 2;
            }
        }
        at += size + 2;
        if at > body.len() {
            return None;
        }
    }
    Some(at)
}
