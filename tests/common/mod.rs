//! Shared pieces of the integration tests: a real ClickHouse
//! ([`clickhouse`]), a DB-IP-schema GeoIP file ([`geodb`]), real tamis
//! servers (the binary as a child process, or the library in-process with a
//! manual clock) and a minimal blocking HTTP client; for the durability
//! tests, a load driver that records every answer ([`load`]), readers of
//! tamis's durable log on disk ([`journal`]), a fault-injecting TCP proxy
//! in front of ClickHouse ([`proxy`]) and the scenario rig ([`rig`]).

#![allow(dead_code)]

pub mod clickhouse;
pub mod cluster;
pub mod geodb;
pub mod journal;
pub mod load;
pub mod proxy;
pub mod rig;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use clickhouse::ClickHouse;

/// The bearer token every test config accepts (its SHA-256 is configured).
pub const TOKEN: &str = "test-token-for-tamis";
/// A second token, for another site only.
pub const OTHER_TOKEN: &str = "other-site-token";
/// A third token, for example.org with the default (protected) disclosure.
/// [`TOKEN`] reads exact numbers: most tests check the counts themselves.
pub const PROTECTED_TOKEN: &str = "protected-token-for-tamis";

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Removes `$1` once its standard input closes: when the test process exits
/// in any way (the kernel closes the pipe's last writer), even killed.
const SCRATCH_WATCHDOG: &str = r#"while read -r line; do :; done; rm -rf "$1""#;

/// A folder for what outlives a single server but not the test process: the
/// durable logs named by [`config`], which a restarted server must find
/// again. Each log preallocates its segments, so leaving them behind filled
/// the disk over repeated runs; a small `sh` watchdog removes the folder
/// when the process ends, as [`clickhouse`] does for its servers.
pub fn process_scratch() -> &'static Path {
    // The watchdog is never waited for: it outlives the process on purpose.
    static SCRATCH: std::sync::OnceLock<(PathBuf, std::process::ChildStdin, Child)> =
        std::sync::OnceLock::new();
    let (dir, _pipe, _watchdog) = SCRATCH.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("tamis-test-")
            .tempdir()
            .expect("temporary directory")
            .keep();
        let mut watchdog = Command::new("sh")
            .args(["-c", SCRATCH_WATCHDOG, "sh"])
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh, for the scratch folder's watchdog");
        let pipe = watchdog.stdin.take().expect("watchdog pipe");
        (dir, pipe, watchdog)
    });
    dir
}

/// A scratch folder for one test: config, GeoIP file, logs.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the DB-IP-schema test database and returns its path.
    pub fn geodb(&self) -> PathBuf {
        let path = self.path("dbip-test.mmdb");
        geodb::write_dbip_test_db(&path).expect("test GeoIP database");
        path
    }
}

/// [`config`] for `database` on `cluster`: `url` is shard 1 replica 1,
/// `cluster` and `urls` name every node.
pub fn cluster_config(cluster: &cluster::Cluster, database: &str) -> String {
    cluster.with_cluster(&config(cluster.node(1, 1), database, None, ""))
}

/// A config for `database` on `ch`, with `example.org` and `other.org`,
/// flushing every 200 ms. `site_extra` is appended to example.org's table.
pub fn config(ch: &ClickHouse, database: &str, geoip: Option<&Path>, site_extra: &str) -> String {
    let geo = geoip
        .map(|p| format!("[geoip]\npath = \"{}\"\n", p.display()))
        .unwrap_or_default();
    // Each server gets its own durable log (the same config text, the same
    // log: a restarted server replays it).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let log_dir = process_scratch().join(format!("log-{database}-{nanos}"));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[storage]
log_dir = "{log_dir}"

[clickhouse]
url = "{url}"
database = "{database}"
flush_interval_ms = 200

{geo}
[[site]]
id = "example.org"
hostnames = ["example.org", "www.example.org"]
timezone = "America/Toronto"
{site_extra}

[[site]]
id = "other.org"

[[token]]
name = "dashboard"
secret_sha256 = "{token}"
sites = ["example.org"]
disclosure = "exact"

[[token]]
name = "public"
secret_sha256 = "{protected}"
sites = ["example.org"]

[[token]]
name = "other"
secret_sha256 = "{other}"
sites = ["other.org"]
"#,
        url = ch.url,
        log_dir = log_dir.display(),
        token = sha256_hex(TOKEN),
        other = sha256_hex(OTHER_TOKEN),
        protected = sha256_hex(PROTECTED_TOKEN),
    )
}

/// The `tamis` binary, serving in a child process; stderr (its log) goes to
/// a file so tests can read everything it said. It can be killed (SIGKILL,
/// as in a crash) and restarted with the same config, port and working
/// directory, so whatever it keeps on disk survives; each run's stderr is
/// appended to the same file after a `=== tamis run N ===` line.
pub struct Binary {
    pub addr: SocketAddr,
    /// The operators' listener: `/metrics`, `/readyz` details, the audit log.
    pub admin: SocketAddr,
    pub log: PathBuf,
    config_path: PathBuf,
    dir: PathBuf,
    runs: u32,
    child: Child,
}

/// How a SIGTERM ended the process ([`Binary::terminate`]).
#[derive(Debug)]
pub struct Terminated {
    /// From the signal to the process's exit.
    pub after: Duration,
    /// `None` when it had not exited after the wait and was killed.
    pub status: Option<std::process::ExitStatus>,
}

impl Binary {
    pub fn serve(scratch: &Scratch, config_text: &str) -> Binary {
        let config_path = scratch.path("tamis.toml");
        std::fs::write(&config_path, config_text).expect("write config");
        let port = free_port();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = scratch.path("tamis.log");
        let dir = scratch.dir.path().to_path_buf();
        let child = spawn_tamis(&config_path, &dir, port, admin, &log, 1);
        let mut server = Binary {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin,
            log,
            config_path,
            dir,
            runs: 1,
            child,
        };
        server.wait_healthy();
        server
    }

    /// The process id of the current run.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The durable log folder its configuration names (`storage.log_dir`).
    pub fn log_dir(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let config: toml::Value = toml::from_str(&text).expect("config parses");
        let dir = config["storage"]["log_dir"]
            .as_str()
            .expect("storage.log_dir");
        self.dir.join(dir)
    }

    /// Everything every run wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: no handler runs, nothing is flushed, as in a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts tamis again (after [`Binary::kill9`] or [`Binary::terminate`])
    /// with the same config, port and working directory, and waits until it
    /// answers `/healthz`.
    /// Changes the configuration the next [`Binary::restart`] reads.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        std::fs::write(&self.config_path, edit(text)).expect("write config");
    }

    pub fn restart(&mut self) {
        assert!(
            self.child.try_wait().expect("child status").is_some(),
            "tamis is still running; stop it first"
        );
        self.runs += 1;
        self.child = spawn_tamis(
            &self.config_path,
            &self.dir,
            self.addr.port(),
            self.admin,
            &self.log,
            self.runs,
        );
        self.wait_healthy();
    }

    /// SIGTERM, then waits up to `wait` for the exit and measures it; kills
    /// the process if it is still there after `wait`.
    pub fn terminate(&mut self, wait: Duration) -> Terminated {
        let start = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        while start.elapsed() < wait {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Terminated {
                    after: start.elapsed(),
                    status: Some(status),
                };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = start.elapsed();
        self.kill9();
        Terminated {
            after,
            status: None,
        }
    }

    /// Whether the current run has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_some()
    }

    /// Resident set size of the running process, from /proc/PID/status
    /// (`VmRSS`), in KiB; `None` once it has exited.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.child.id())
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("child status") {
                panic!("tamis exited with {status}:\n{}", self.log_text());
            }
            if try_http(self.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tamis did not become healthy:\n{}", self.log_text());
    }

    /// SIGTERM, then wait: tamis flushes everything before exiting.
    pub fn stop(mut self) -> String {
        self.terminate(Duration::from_secs(30));
        self.log_text()
    }
}

fn spawn_tamis(
    config_path: &Path,
    dir: &Path,
    port: u16,
    admin: SocketAddr,
    log: &Path,
    run: u32,
) -> Child {
    use std::io::Write as _;
    let mut log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    if run > 1 {
        let _ = writeln!(log_file, "=== tamis run {run} ===");
    }
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tamis.stdout"))
        .expect("stdout file");
    Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(["serve", "--config"])
        .arg(config_path)
        .env("TAMIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("TAMIS_ADMIN_LISTEN", admin.to_string())
        .env("TAMIS_LOG", "debug")
        .current_dir(dir)
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("start the tamis binary")
}

/// `VmRSS` of process `pid` in KiB, `None` if it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tamis as a library, in this process, with a clock the test controls.
pub struct InProcess {
    pub addr: SocketAddr,
    /// The operators' listener: `/metrics`, `/readyz` details, the audit log.
    pub admin: SocketAddr,
    pub clock: tamis::clock::Clock,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub fn serve(config_text: &str, clock: tamis::clock::Clock) -> InProcess {
        InProcess::serve_with_rollups(config_text, clock, None)
    }

    /// Like [`InProcess::serve`], rolling finished days up every `period`
    /// and reading the rollups (`None`: neither, as `serve`).
    pub fn serve_with_rollups(
        config_text: &str,
        clock: tamis::clock::Clock,
        rollup_period: Option<Duration>,
    ) -> InProcess {
        let config: tamis::config::Config = toml::from_str(config_text).expect("config parses");
        let settings =
            tamis::config::Settings::from_config(config, Path::new(".")).expect("config valid");
        let bind = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.set_nonblocking(true).expect("nonblocking");
            listener
        };
        let (listener, admin_listener) = (bind(), bind());
        let addr = listener.local_addr().expect("addr");
        let admin = admin_listener.local_addr().expect("admin addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let options = tamis::server::Options {
            clock: clock.clone(),
            salt_period: Duration::from_millis(100),
            drain: Duration::from_secs(5),
            startup_wait: Duration::from_secs(30),
            rollup_period,
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listeners = tamis::server::Listeners {
                    public: tokio::net::TcpListener::from_std(listener).expect("listener"),
                    admin: tokio::net::TcpListener::from_std(admin_listener).expect("listener"),
                };
                tamis::server::serve(
                    settings,
                    listeners,
                    async {
                        let _ = rx.await;
                    },
                    options,
                )
                .await
                .expect("serve");
            });
        });
        let server = InProcess {
            addr,
            admin,
            clock,
            shutdown: Some(tx),
            thread: Some(thread),
        };
        wait_until(Duration::from_secs(60), "in-process tamis healthy", || {
            try_http(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
        });
        server
    }

    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().expect("server thread");
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.finish();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The rows tamis dead-lettered, one JSON value per line of
/// `log_dir/dead-letter/*.jsonl`, with the name of the file each is in.
pub fn dead_letters(log_dir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(log_dir.join("dead-letter")) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        lines.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| (name.clone(), l.to_string())),
        );
    }
    lines
}

/// Words of ClickHouse's error text (and of the test-only guard of
/// [`ClickHouse::refuse_rows`]) that tamis must never quote.
pub const CLICKHOUSE_WORDS: [&str; 5] = [
    "throwIf",
    "DB::Exception",
    "non zero",
    "a_test_guard",
    "Code:",
];

/// Sends one hit as the Plausible script would, through a trusted proxy
/// (the test connects from 127.0.0.1) that forwards `client_ip`.
pub fn send_hit(
    addr: SocketAddr,
    client_ip: &str,
    user_agent: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Response {
    let mut headers = vec![
        ("Content-Type", "text/plain"),
        ("User-Agent", user_agent),
        ("X-Forwarded-For", client_ip),
    ];
    headers.extend_from_slice(extra);
    http(addr, "POST", "/api/event", &headers, body.as_bytes())
}

pub fn pageview(url: &str) -> String {
    serde_json::json!({"n": "pageview", "u": url, "d": "example.org", "r": null}).to_string()
}

pub fn stats(addr: SocketAddr, token: &str, query: serde_json::Value) -> Response {
    let auth = format!("Bearer {token}");
    http(
        addr,
        "POST",
        "/api/v2/query",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        query.to_string().as_bytes(),
    )
}

pub fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// Runs a node script of `tests/browser/` (most drive Debian's Chromium
/// through npm `playwright-core`) and returns the JSON of the last line it
/// prints.
pub fn node(script: &str, args: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium not found: run ./deploy/setup.sh (installs the Debian packages chromium and chromium-driver)"
    );
    assert!(
        root.join("node_modules/playwright-core/package.json")
            .exists(),
        "npm module playwright-core not found in node_modules: run ./deploy/setup.sh (runs npm ci)"
    );
    let output = Command::new("node")
        .arg(root.join("tests/browser").join(script))
        .args(args)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run node ({e}): run ./deploy/setup.sh (installs nodejs and npm)")
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stderr}\n{stdout}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

pub const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
pub const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
pub const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
pub const SAMSUNG: &str = "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36";
pub const BROWSERS: [&str; 5] = [FIREFOX, CHROME, SAFARI_IPHONE, EDGE, SAMSUNG];

/// A validator for one schema of the OpenAPI document `doc` (as served at
/// `/api/v2/openapi.json`), its references resolved within the document.
pub fn openapi_validator(doc: &serde_json::Value, name: &str) -> jsonschema::Validator {
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"].clone(),
    });
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Runs the tamis binary with `args` and `--config config`, `env` set;
/// whether it succeeded, its standard output and its standard error.
pub fn run_tamis(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tamis"));
    cmd.args(args).arg("--config").arg(config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run tamis");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A shared link `tamis share create` made: its id and secret, from the
/// printed URL.
pub struct SharedLink {
    pub id: String,
    pub secret: String,
}

/// Creates a shared link for `site` with the CLI (`extra` arguments,
/// `env`), its URL based on the server at `addr`.
pub fn create_shared_link(
    config: &Path,
    addr: SocketAddr,
    site: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> SharedLink {
    let base = format!("http://{addr}");
    let mut args = vec!["share", "create", "--site", site, "--base-url", &base];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_tamis(config, &args, env);
    assert!(ok, "share create failed: {err}");
    let url = out.trim();
    let (id, secret) = url
        .strip_prefix(&format!("{base}/share/"))
        .and_then(|rest| rest.split_once('#'))
        .unwrap_or_else(|| panic!("unexpected URL {url}"));
    assert_eq!(secret.len(), 64, "{url}");
    SharedLink {
        id: id.into(),
        secret: secret.into(),
    }
}
