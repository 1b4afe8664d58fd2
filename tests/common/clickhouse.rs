//! A real, private ClickHouse server for integration tests: nothing is mocked.
//!
//! [`ClickHouse::start`] runs `clickhouse-server` (Debian's 18.16 or a current
//! single-binary `clickhouse server`) on free loopback ports, with its data and
//! logs in a temporary directory and the configuration rendered from
//! `deploy/clickhouse/config.xml.in`. [`ClickHouse::shared`] gives one such
//! server per test binary; each test then isolates itself in a database of its
//! own from [`ClickHouse::create_database`]. A test that needs an outage
//! starts a server of its own and uses [`ClickHouse::stop`] (SIGTERM or
//! SIGKILL) and [`ClickHouse::restart`] (same ports, same data directory).
//!
//! No server outlives the test process, even when it panics, aborts or is
//! killed: the server is started by a small `sh` watchdog whose standard input
//! is a pipe held by the test process. When that pipe closes (the
//! [`ClickHouse`] is dropped, or the process exits in any way, since the kernel
//! closes its descriptors) the watchdog kills the server and removes the
//! temporary directory. Statics are never dropped, so this is what stops the
//! shared server.
//!
//! Environment:
//! - `TAMIS_TEST_CLICKHOUSE`: path of the server binary to use (a
//!   `clickhouse-server`, or a single `clickhouse` binary, which then gets the
//!   `server` subcommand); by default `/usr/sbin/clickhouse-server`, then
//!   `clickhouse-server` and `clickhouse` on `PATH`.
//! - `TAMIS_TEST_CLICKHOUSE_TIMEOUT`: seconds to wait for `/ping` (default 30).

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The server configuration template shared with `deploy/run.sh`.
const CONFIG_TEMPLATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/clickhouse/config.xml.in"
));

const NOT_FOUND: &str =
    "clickhouse-server not found: run `deploy/setup.sh` (or `apt-get install clickhouse-server`)";

/// How many times to retry when a port picked as free was taken meanwhile.
const START_ATTEMPTS: u32 = 3;

/// Lines of the server's logs quoted when it fails.
const LOG_TAIL: usize = 40;

/// Runs the server in the background and kills it when standard input closes.
/// `$1` is the temporary directory, the rest is the server command line.
/// `exec` replaces the shell that runs the server in the background, so `$ch`
/// is the server itself. Background jobs of a non-interactive shell read
/// /dev/null unless redirected, hence the pipe is kept as fd 3 for the reader.
const WATCHDOG: &str = r#"
dir=$1
shift
exec 3<&0
exec "$@" </dev/null 3<&- >"$dir/stdout.log" 2>"$dir/stderr.log" &
ch=$!
echo "$ch" >"$dir/server.pid"
(
    while read -r line; do :; done
    : >"$dir/stopping"
    kill -9 "$ch" 2>/dev/null
) <&3 &
dog=$!
wait "$ch"
rc=$?
if [ -e "$dir/stopping" ]; then
    rm -rf "$dir"
else
    kill "$dog" 2>/dev/null
fi
exit "$rc"
"#;

/// A running ClickHouse server, stopped when dropped.
pub struct ClickHouse {
    /// HTTP interface, `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    /// HTTP port (the one in `url`).
    pub http_port: u16,
    /// Native protocol port, for `clickhouse-client --port`.
    pub tcp_port: u16,
    /// The server's own directory: `config.xml`, `data/`, `log/`.
    pub dir: PathBuf,
    /// The server's command line without `--config-file`, for restarts.
    command: Vec<String>,
    tempdir: Option<tempfile::TempDir>,
    watchdog: Option<Child>,
    /// Closing this pipe makes the watchdog kill the server.
    stdin: Option<ChildStdin>,
}

impl ClickHouse {
    /// Starts a new private server and waits until it answers `/ping`.
    ///
    /// Panics, with the server's own error output, if it cannot be started.
    pub fn start() -> ClickHouse {
        match Self::try_start() {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`ClickHouse::start`], with `extra` files beside its config (as
    /// for [`ClickHouse::start_on`]): a `config.d/*.xml` changes a setting.
    pub fn start_with(extra: &[(&str, String)]) -> ClickHouse {
        match Self::try_start_with(extra) {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`ClickHouse::start`], but returns the failure as text.
    pub fn try_start() -> Result<ClickHouse, String> {
        Self::try_start_with(&[])
    }

    fn try_start_with(extra: &[(&str, String)]) -> Result<ClickHouse, String> {
        let command = server_command().ok_or_else(|| NOT_FOUND.to_string())?;
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let started = free_ports()
                .map_err(|e| {
                    Failure::Fatal(format!(
                        "ClickHouse test server: cannot pick free ports: {e}"
                    ))
                })
                .and_then(|(http_port, tcp_port)| start_once(&command, http_port, tcp_port, extra));
            match started {
                Ok(server) => return Ok(server),
                Err(Failure::PortTaken(message)) if attempt < START_ATTEMPTS => {
                    last_error = message
                }
                Err(Failure::PortTaken(message)) | Err(Failure::Fatal(message)) => {
                    return Err(message)
                }
            }
        }
        Err(last_error)
    }

    /// One server for the whole test binary, started on first use and reused
    /// by every test in it. It is killed when the test process exits.
    pub fn shared() -> &'static ClickHouse {
        static SHARED: OnceLock<Result<ClickHouse, String>> = OnceLock::new();
        match SHARED.get_or_init(Self::try_start) {
            Ok(server) => server,
            Err(message) => panic!("shared ClickHouse server could not be started: {message}"),
        }
    }

    /// Runs `sql` over HTTP and returns the response body (TabSeparated unless
    /// the query says `FORMAT ...`). Panics with the server's error text if
    /// the query fails.
    pub fn query(&self, sql: &str) -> String {
        match self.try_query(sql) {
            Ok(body) => body,
            Err(message) => panic!("{message}"),
        }
    }

    /// Runs `sql` with `database` as the current database.
    pub fn query_in(&self, database: &str, sql: &str) -> String {
        match self.request(Some(database), sql) {
            Ok(body) => body,
            Err(message) => panic!("{message}"),
        }
    }

    /// Like [`ClickHouse::query`], but returns the server's error text
    /// instead of panicking, for tests that expect a query to fail.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        self.request(None, sql)
    }

    /// Creates a new, empty database with a name unique to this server
    /// (`{prefix}_{pid}_{n}`, made of `[A-Za-z0-9_]`) and returns the name.
    pub fn create_database(&self, prefix: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut name: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert_str(0, "db_");
        }
        let name = format!(
            "{name}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.query(&format!("CREATE DATABASE {name}"));
        name
    }

    /// A test-only materialized view on `database.table` that makes
    /// ClickHouse refuse every insert holding a row for which `condition`
    /// holds (code 395, from `throwIf`). ClickHouse 18.16 pushes an insert
    /// to the views of a table in the order of their names and commits each
    /// view's part as it goes, so a guard on `batch_in` named after
    /// `batch_traffic_mv` would refuse an insert whose traffic rows are
    /// already written: the guard's name sorts first. Not `throwIf(1)`:
    /// ClickHouse evaluates a constant when it creates the view, and refuses
    /// the view itself.
    pub fn refuse_rows(&self, database: &str, table: &str, condition: &str) {
        self.query(&format!(
            "CREATE MATERIALIZED VIEW {database}.a_test_guard ENGINE = Null AS SELECT throwIf({condition}) AS refused FROM {database}.{table}"
        ));
    }

    /// Removes the guard of [`ClickHouse::refuse_rows`].
    pub fn stop_refusing(&self, database: &str) {
        self.query(&format!("DROP TABLE {database}.a_test_guard"));
    }

    /// `SELECT version()`, e.g. `18.16.1` or `25.8.2.29`.
    pub fn version(&self) -> String {
        self.query("SELECT version()").trim().to_string()
    }

    /// The last `lines` lines of the server's error log.
    pub fn error_log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("log/clickhouse-server.err.log"), lines)
    }

    fn request(&self, database: Option<&str>, sql: &str) -> Result<String, String> {
        // wait_end_of_query: errors met while streaming the result still give
        // a non-200 status instead of text appended to a 200 body.
        let mut target = String::from("/?wait_end_of_query=1");
        if let Some(database) = database {
            target.push_str("&database=");
            target.push_str(&percent_encode(database));
        }
        let timeout = Duration::from_secs(300);
        match http(self.http_port, "POST", &target, sql.as_bytes(), timeout) {
            Ok((200, body)) => Ok(String::from_utf8_lossy(&body).into_owned()),
            Ok((status, body)) => Err(format!(
                "ClickHouse query failed (HTTP {status}): {}\nquery: {sql}",
                String::from_utf8_lossy(&body).trim_end()
            )),
            Err(e) => Err(format!(
                "ClickHouse at {} did not answer: {e}\nquery: {sql}\nserver error log:\n{}",
                self.url,
                self.error_log_tail(LOG_TAIL)
            )),
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        // End of input: the watchdog kills the server and removes the directory.
        drop(self.stdin.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            stop(&mut watchdog, &self.dir);
        }
        // Whatever is left (normally nothing) goes with the TempDir.
        drop(self.tempdir.take());
    }
}

pub enum Failure {
    /// The server could not bind a port that was free a moment before.
    PortTaken(String),
    Fatal(String),
}

impl ClickHouse {
    /// Starts a server on the given ports, with `extra` files (path
    /// relative to the server's directory, content) beside its
    /// `config.xml`: a `config.d/*.xml` is merged into it. For a cluster
    /// (`super::cluster`), whose every node's config lists every node's
    /// ports before any starts.
    pub fn start_on(
        http_port: u16,
        tcp_port: u16,
        extra: &[(&str, String)],
    ) -> Result<ClickHouse, Failure> {
        let command = server_command().ok_or_else(|| Failure::Fatal(NOT_FOUND.to_string()))?;
        start_once(&command, http_port, tcp_port, extra)
    }
}

/// The server's command line without its arguments.
fn server_command() -> Option<Vec<String>> {
    let for_binary = |path: PathBuf| {
        let single = path.file_name().is_some_and(|name| name == "clickhouse");
        let mut command = vec![path.to_string_lossy().into_owned()];
        if single {
            command.push("server".to_string());
        }
        command
    };
    if let Some(path) = std::env::var_os("TAMIS_TEST_CLICKHOUSE").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return is_executable(&path).then(|| for_binary(path));
    }
    let fixed = Path::new("/usr/sbin/clickhouse-server");
    if is_executable(fixed) {
        return Some(for_binary(fixed.to_path_buf()));
    }
    ["clickhouse-server", "clickhouse"]
        .iter()
        .find_map(|name| on_path(name).map(for_binary))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Two distinct ports that were free on 127.0.0.1 a moment ago.
fn free_ports() -> io::Result<(u16, u16)> {
    let ports = free_port_list(2)?;
    Ok((ports[0], ports[1]))
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago (all bound
/// at once, so none is picked twice).
///
/// The ports are drawn below the kernel's ephemeral range: a port the
/// kernel hands out (what `bind(…:0)` gives) can be taken as the source
/// port of any outgoing connection while a test has the server stopped,
/// and the restart then fails with "Address already in use" (seen in CI
/// after a 10 s stop). Ports below that range are only ever taken by a
/// listener that asks for them.
pub fn free_port_list(n: usize) -> io::Result<Vec<u16>> {
    let ephemeral_start = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let low = 10_000u16;
    if ephemeral_start <= low + 1_000 {
        // An unusual range: fall back to what the kernel hands out.
        let listeners = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<io::Result<Vec<_>>>()?;
        return listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect();
    }
    // Held until all are chosen, so no two are the same.
    let mut listeners = Vec::with_capacity(n);
    let mut attempts = 0;
    while listeners.len() < n {
        attempts += 1;
        if attempts > 10_000 {
            return Err(io::Error::other(format!(
                "no free port between {low} and {ephemeral_start}"
            )));
        }
        let port = rand::random_range(low..ephemeral_start);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

fn start_once(
    command: &[String],
    http_port: u16,
    tcp_port: u16,
    extra: &[(&str, String)],
) -> Result<ClickHouse, Failure> {
    let fatal =
        |what: &str, e: io::Error| Failure::Fatal(format!("ClickHouse test server: {what}: {e}"));
    let tempdir = tempfile::Builder::new()
        .prefix("tamis-clickhouse-")
        .tempdir()
        .map_err(|e| fatal("cannot create a temporary directory", e))?;
    let dir = tempdir.path().to_path_buf();
    let data = dir.join("data");
    let log = dir.join("log");
    for sub in [&data, &log] {
        fs::create_dir_all(sub).map_err(|e| fatal("cannot create the server's directories", e))?;
    }
    let config = CONFIG_TEMPLATE
        .replace("@HTTP_PORT@", &http_port.to_string())
        .replace("@TCP_PORT@", &tcp_port.to_string())
        .replace("@DATA_DIR@", &data.to_string_lossy())
        .replace("@LOG_DIR@", &log.to_string_lossy());
    let config_path = dir.join("config.xml");
    fs::write(&config_path, config).map_err(|e| fatal("cannot write config.xml", e))?;
    for (name, content) in extra {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| fatal("cannot create a config folder", e))?;
        }
        fs::write(&path, content).map_err(|e| fatal("cannot write an extra config file", e))?;
    }

    let (watchdog, stdin) = spawn_watchdog(command, &dir)
        .map_err(|e| fatal("cannot run `sh` to start the server", e))?;

    let mut server = ClickHouse {
        url: format!("http://127.0.0.1:{http_port}"),
        http_port,
        tcp_port,
        dir,
        command: command.to_vec(),
        tempdir: Some(tempdir),
        watchdog: Some(watchdog),
        stdin,
    };
    server.wait_ready()?;
    Ok(server)
}

/// Starts the watchdog (and through it the server) for the server directory
/// `dir`, which holds `config.xml`.
fn spawn_watchdog(command: &[String], dir: &Path) -> io::Result<(Child, Option<ChildStdin>)> {
    let config_path = dir.join("config.xml");
    let mut args = command.to_vec();
    args.push(format!("--config-file={}", config_path.display()));
    spawn_watched(&args, dir)
}

/// Runs `args` under the [`WATCHDOG`] in `dir`: the process is killed and
/// `dir` removed when the returned standard input closes (dropped, or the
/// test process gone); its pid is in `dir/server.pid`, its output in
/// `dir/stdout.log` and `dir/stderr.log`.
pub(super) fn spawn_watched(
    args: &[String],
    dir: &Path,
) -> io::Result<(Child, Option<ChildStdin>)> {
    let mut watchdog = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("tamis-clickhouse-watchdog")
        .arg(dir)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let stdin = watchdog.stdin.take();
    Ok((watchdog, stdin))
}

/// How [`ClickHouse::stop`] ends the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: ClickHouse finishes what it can and exits.
    Graceful,
    /// SIGKILL: the process disappears mid-query, as in a crash.
    Kill,
}

impl ClickHouse {
    /// The server's process id, while it runs (for CPU accounting).
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        pid_in(&self.dir)
    }

    /// Stops the server, keeping its directory (data, config, ports) so
    /// [`ClickHouse::restart`] brings the same server back. Returns once the
    /// process is gone; a graceful stop that takes over a minute is finished
    /// with SIGKILL.
    pub fn stop(&mut self, how: Stop) {
        let Some(mut watchdog) = self.watchdog.take() else {
            panic!("ClickHouse at {} is already stopped", self.url);
        };
        let pid = fs::read_to_string(self.dir.join("server.pid")).unwrap_or_default();
        let pid = pid.trim().to_string();
        let signal = match how {
            Stop::Graceful => "-TERM",
            Stop::Kill => "-KILL",
        };
        let _ = Command::new("kill")
            .args([signal, &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The watchdog exits when the server does; since the "stopping"
        // marker is absent it leaves the directory in place.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match watchdog.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(20)),
                _ => {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let _ = watchdog.wait();
                    break;
                }
            }
        }
        drop(self.stdin.take());
        assert!(
            !ping(self.http_port),
            "ClickHouse at {} still answers after being stopped",
            self.url
        );
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the running server: a frozen
    /// server holds whatever request it was reading or applying.
    pub fn freeze(&self, frozen: bool) {
        let pid = fs::read_to_string(self.dir.join("server.pid")).unwrap_or_default();
        let status = Command::new("kill")
            .args([if frozen { "-STOP" } else { "-CONT" }, pid.trim()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot signal ClickHouse (pid {:?}) at {}",
            pid.trim(),
            self.url
        );
    }

    /// Starts the stopped server again on the same ports with the same data
    /// directory, and waits until it answers `/ping`.
    pub fn restart(&mut self) {
        assert!(
            self.watchdog.is_none(),
            "ClickHouse at {} is running; stop it first",
            self.url
        );
        let _ = fs::remove_file(self.dir.join("server.pid"));
        let (watchdog, stdin) = spawn_watchdog(&self.command, &self.dir)
            .unwrap_or_else(|e| panic!("cannot run `sh` to restart ClickHouse: {e}"));
        self.watchdog = Some(watchdog);
        self.stdin = stdin;
        if let Err(Failure::PortTaken(message) | Failure::Fatal(message)) = self.wait_ready() {
            panic!("ClickHouse did not come back on its ports: {message}");
        }
    }

    /// Whether the server answers `/ping` now.
    pub fn is_up(&self) -> bool {
        ping(self.http_port)
    }

    /// Waits until the (re)started server answers `/ping`.
    fn wait_ready(&mut self) -> Result<(), Failure> {
        let fatal = |what: &str, e: io::Error| {
            Failure::Fatal(format!("ClickHouse test server: {what}: {e}"))
        };
        let config_path = self.dir.join("config.xml");
        let timeout = std::env::var("TAMIS_TEST_CLICKHOUSE_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(30), Duration::from_secs);
        let started = Instant::now();
        loop {
            let status = match self.watchdog.as_mut().map(|w| w.try_wait()) {
                Some(Ok(status)) => status,
                Some(Err(e)) => return Err(fatal("cannot watch the server process", e)),
                None => None,
            };
            if let Some(status) = status {
                let logs = self.logs();
                let message = format!(
                    "ClickHouse test server `{}` exited during start-up ({status}); config {}\n{logs}",
                    self.command.join(" "),
                    config_path.display()
                );
                return Err(if logs.contains("Address already in use") {
                    Failure::PortTaken(message)
                } else {
                    Failure::Fatal(message)
                });
            }
            if ping(self.http_port) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let logs = self.logs();
                return Err(Failure::Fatal(format!(
                    "ClickHouse test server `{}` did not answer GET {}/ping within {} s; config {}\n{logs}",
                    self.command.join(" "),
                    self.url,
                    timeout.as_secs(),
                    config_path.display()
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl ClickHouse {
    /// The tails of the error log and of the server's stderr, for failure messages.
    fn logs(&self) -> String {
        format!(
            "--- last {LOG_TAIL} lines of {}:\n{}\n--- last {LOG_TAIL} lines of the server's stderr:\n{}",
            self.dir.join("log/clickhouse-server.err.log").display(),
            self.error_log_tail(LOG_TAIL),
            tail(&self.dir.join("stderr.log"), LOG_TAIL)
        )
    }
}

/// Waits for the watchdog, which exits once the server is dead; kills the
/// server by its pid if that takes too long.
pub(super) fn stop(watchdog: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match watchdog.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            _ => break,
        }
    }
    if let Ok(pid) = fs::read_to_string(dir.join("server.pid")) {
        let _ = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = watchdog.kill();
    let _ = watchdog.wait();
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let text = all[all.len().saturating_sub(lines)..].join("\n");
            if text.trim().is_empty() {
                "(empty)".to_string()
            } else {
                text
            }
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

fn ping(port: u16) -> bool {
    matches!(http(port, "GET", "/ping", b"", Duration::from_secs(2)), Ok((200, body)) if body.starts_with(b"Ok."))
}

/// A minimal blocking HTTP/1.0 exchange with 127.0.0.1:`port`: returns the
/// status code and the body. ClickHouse closes the connection after an
/// HTTP/1.0 response and does not chunk it (chunked bodies are decoded anyway).
fn http(
    port: u16,
    method: &str,
    target: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<(u16, Vec<u8>)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {target} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;

    let invalid = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad HTTP response: {what}"),
        )
    };
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let mut body = response.split_off(end + 4);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let chunked = head.lines().skip(1).any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| invalid("bad chunked body"))?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The pid a watchdog wrote in `dir/server.pid`, if any.
pub fn pid_in(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("server.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
