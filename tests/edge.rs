//! The edge, attacked as issue 12 (point 4 and points 7 to 14) did: the
//! operators' endpoints on the public listener, hostile durations,
//! forged log lines, a dual-stack listener behind a trusted proxy, IP
//! addresses inside content, idle connections, guessed tokens, sniffing
//! and spreadsheets, origins and credentials. Real ClickHouse, real tamis
//! (the binary where its log or command line matters), real HTTP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const ADMIN_TOKEN: &str = "edge-admin-token";

/// The common test config with `server_extra` in `[server]` and an admin
/// token.
fn edge_config(ch: &ClickHouse, db: &str, server_extra: &str, site_extra: &str) -> String {
    let text = config(ch, db, None, site_extra).replacen(
        "[server]\n",
        &format!("[server]\n{server_extra}\n"),
        1,
    );
    format!(
        "{text}\n[[token]]\nname = \"admin\"\nsecret_sha256 = \"{}\"\nsites = [\"example.org\"]\nadmin = true\n",
        sha256_hex(ADMIN_TOKEN)
    )
}

fn get(addr: SocketAddr, path: &str, token: &str, extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    http(addr, "GET", path, &headers, b"")
}

fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = http(addr, "GET", "/metrics", &[], b"").body;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// The tamis binary on a fresh database `name`, with one pageview sent
/// and answered 202.
fn served_with_a_hit(name: &str) -> (Scratch, Binary, String) {
    let ch = ClickHouse::shared();
    let db = ch.create_database(name);
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &edge_config(ch, &db, "", ""));
    let hit = send_hit(
        server.addr,
        "198.51.100.7",
        FIREFOX,
        &pageview("https://example.org/"),
        &[],
    );
    assert_eq!(hit.status, 202, "{}", hit.body);
    (scratch, server, db)
}

fn tamis_cli(args: &[&str], config_path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tamis"))
        .args(args)
        .arg("--config")
        .arg(config_path)
        .output()
        .expect("run the tamis binary")
}

/// Point 4: `/metrics` was open on the public listener and gave exact live
/// counts (accepted hits +1 per hit, open sessions) to anyone; `/readyz`
/// gave the backlog and `/api/v2/audit` was there to be guessed at. The
/// public listener now serves none of them (a bare readiness only); the
/// operators' listener (`server.admin_listen`) serves them all.
#[test]
fn metrics_open_without_token() {
    let (_scratch, server, _db) = served_with_a_hit("edge_admin");

    // Public: no metrics, no audit log, no details, whatever the token.
    let unknown = http(server.addr, "GET", "/no-such-path", &[], b"");
    assert_eq!(unknown.status, 404);
    for path in ["/metrics", "/api/v2/audit", "/api/v2/audit?since=1h"] {
        for token in [None, Some(TOKEN), Some(ADMIN_TOKEN)] {
            let r = match token {
                Some(t) => get(server.addr, path, t, &[]),
                None => http(server.addr, "GET", path, &[], b""),
            };
            assert_eq!(
                (r.status, &r.body),
                (unknown.status, &unknown.body),
                "public {path} with {token:?}"
            );
        }
    }
    let ready = http(server.addr, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("JSON");
    assert_eq!(body, json!({"ready": true}), "public /readyz says no more");
    let about = http(server.addr, "GET", "/about", &[], b"").body;
    assert!(!about.contains("/metrics "), "{about}");

    // Operators: everything, with the exact counts.
    assert_eq!(metric(server.admin, "tamis_hits_accepted_total"), 1);
    let ready = http(server.admin, "GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let body: serde_json::Value = serde_json::from_str(&ready.body).expect("JSON");
    for key in [
        "accepting",
        "clickhouse",
        "backlog_hits",
        "log_bytes",
        "delivery",
    ] {
        assert!(body.get(key).is_some(), "admin /readyz has {key}: {body}");
    }
    let audit = get(server.admin, "/api/v2/audit?since=1h", ADMIN_TOKEN, &[]);
    assert_eq!(audit.status, 200, "{}", audit.body);
    // The stats API, hits and the dashboard are the public listener's alone.
    for path in ["/api/v2/sites", "/js/tamis.js", "/"] {
        let r = get(server.admin, path, TOKEN, &[]);
        assert_eq!(r.status, 404, "admin {path}: {}", r.body);
    }
    server.stop();
}

/// Point 7: `?since=99999999999999999m` and `?since=1000000000000h`
/// panicked in chrono, in the API and in `tamis audit`.
#[test]
fn audit_since_out_of_range_is_a_clear_400() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_since");
    let scratch = Scratch::new();
    let text = edge_config(ch, &db, "", "");
    let server = Binary::serve(&scratch, &text);
    for since in [
        "99999999999999999m",
        "1000000000000h",
        "36601d",
        "9223372036854775807m",
    ] {
        let r = get(
            server.admin,
            &format!("/api/v2/audit?since={since}"),
            ADMIN_TOKEN,
            &[],
        );
        assert_eq!(r.status, 400, "{since}: {}", r.body);
        assert!(r.body.contains("at most"), "{since}: {}", r.body);
    }
    // The server is still whole.
    let r = get(server.admin, "/api/v2/audit?since=7d", ADMIN_TOKEN, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");

    let config_path = scratch.path("tamis.toml");
    for since in ["99999999999999999m", "1000000000000h"] {
        let out = tamis_cli(&["audit", "--since", since], &config_path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{since}: {stderr}");
        assert!(stderr.contains("at most"), "{since}: {stderr}");
        assert!(!stderr.contains("panicked"), "{since}: {stderr}");
    }
}

/// Point 8: ClickHouse's error text quoting a client's pattern reached the
/// ERROR log with a newline in it, so a client could forge log lines.
#[test]
fn log_forging_client_text_stays_on_one_line() {
    let ch = ClickHouse::shared();
    // ClickHouse compiles a pattern only when it has rows to match.
    let (_scratch, server, db) = served_with_a_hit("edge_log");
    wait_until(Duration::from_secs(10), "the hit stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "1\n"
    });
    let forged = "2030-01-01T00:00:00.000000Z ERROR forged: tamis lost every hit";
    // Patterns Rust's regex takes and ClickHouse's re2 may refuse, quoting
    // them in its error.
    let mut failed = 0;
    for pattern in [
        // tamis checks the syntax only (query::pattern); a Unicode class
        // name re2 does not know reaches ClickHouse and fails there.
        format!("x\n{forged}\n\\p{{NoSuchClass}}"),
        format!("\\p{{Nope}}\n{forged}"),
        format!("\\b{{start}}x\n{forged}"),
        format!("[a-z&&[^x]]\n{forged}"),
    ] {
        let r = stats(
            server.addr,
            TOKEN,
            json!({
                "site_id": "example.org", "metrics": ["visitors"], "date_range": "day",
                "filters": [["matches", "event:page", [pattern]]],
            }),
        );
        failed += usize::from(r.status == 503);
    }
    let log = server.stop();
    assert!(
        failed > 0 && log.contains("stats query failed"),
        "no query reached a ClickHouse error:\n{log}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2030-01-01") && !line.starts_with("a{1001}"),
            "a client's text began a log line: {line:?}\n{log}"
        );
    }
}

/// Point 9: a trusted IPv4 proxy reaching a dual-stack listener was seen
/// as `::ffff:127.0.0.1`, not matched by `127.0.0.1/32`, and every visitor
/// became the proxy.
#[test]
fn trusted_ipv4_proxy_on_dual_stack_listener() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_dual");
    let text = config(ch, &db, None, "k_threshold = 1");
    let listener = std::net::TcpListener::bind("[::]:0").expect("a dual-stack listener on [::]");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let settings = tamis::config::Settings::from_config(
        toml::from_str(&text).expect("config parses"),
        Path::new("."),
    )
    .expect("config valid");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("admin listener");
            let listeners = tamis::server::Listeners {
                public: tokio::net::TcpListener::from_std(listener).expect("listener"),
                admin,
            };
            let options = tamis::server::Options {
                clock: tamis::clock::Clock::system(),
                salt_period: Duration::from_millis(100),
                drain: Duration::from_secs(5),
                startup_wait: Duration::from_secs(30),
                rollup_period: None,
            };
            tamis::server::serve(
                settings,
                listeners,
                async {
                    let _ = stopped.await;
                },
                options,
            )
            .await
            .expect("serve");
        });
    });
    // Over IPv4, to the [::] listener: the peer is ::ffff:127.0.0.1.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(Duration::from_secs(60), "tamis healthy", || {
        try_http(addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
    });
    for visitor in ["198.51.100.7", "203.0.113.9", "::ffff:192.0.2.44"] {
        let r = send_hit(
            addr,
            visitor,
            FIREFOX,
            &pageview("https://example.org/"),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    wait_until(Duration::from_secs(10), "3 pageviews stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "3\n"
    });
    // Three forwarded visitors, not one proxy.
    let r = stats(
        addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": "day"}),
    );
    assert_eq!(r.json()["results"][0]["metrics"], json!([3]), "{}", r.body);
    let _ = stop.send(());
    thread.join().expect("server thread");
}

/// Point 10: an IPv6 address in a path or a property value, and an
/// IP-literal referrer, were stored as sent.
#[test]
fn ips_inside_content_are_redacted() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_ipcontent");
    let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
    let server = InProcess::serve(
        &config(
            ch,
            &db,
            None,
            "k_threshold = 1\nevent_names = [\"signup\"]\nprop_keys = [\"peer\"]",
        ),
        clock,
    );
    let hits = [
        json!({"n": "pageview", "d": "example.org",
               "u": "https://example.org/whois/2001:db8:85a3::8a2e:370:7334/details",
               "r": "http://192.0.2.211:8080/admin"}),
        json!({"n": "pageview", "d": "example.org", "u": "https://example.org/",
               "r": "https://[2001:db8::99]/x"}),
        json!({"n": "signup", "d": "example.org", "u": "https://example.org/",
               "r": "http://192.0.2.211/", "p": {"peer": "seen from 2001:db8::77 today"}}),
    ];
    for hit in &hits {
        let r = send_hit(server.addr, "198.51.100.7", FIREFOX, &hit.to_string(), &[]);
        assert_eq!(r.status, 202, "{}", r.body);
    }
    wait_until(Duration::from_secs(10), "2 pageviews stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "2\n"
    });
    wait_until(Duration::from_secs(10), "the property stored", || {
        ch.query_in(&db, "SELECT count() FROM props_hourly") != "0\n"
    });
    let traffic = ch.query_in(
        &db,
        "SELECT DISTINCT page, referrer, source FROM traffic_hourly WHERE startsWith(page, '/') ORDER BY page FORMAT TSV",
    );
    assert_eq!(
        traffic,
        "/\t(ip address)\t(ip address)\n/whois/[ip]/details\t(ip address)\t(ip address)\n"
    );
    let props = ch.query_in(
        &db,
        "SELECT DISTINCT prop_value FROM props_hourly WHERE prop_key = 'peer' FORMAT TSV",
    );
    assert_eq!(props, "seen from [ip] today\n");
    for table in ["traffic_hourly", "props_hourly"] {
        let dump = ch.query_in(&db, &format!("SELECT * FROM {table} FORMAT TSV"));
        for address in ["192.0.2.211", "2001:db8", "8a2e"] {
            assert!(!dump.contains(address), "{table} holds {address}:\n{dump}");
        }
    }
}

/// Reads one answer (head and `Content-Length` body) from a keep-alive
/// connection.
fn read_answer(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("answer"),
            1,
            "connection closed mid-answer"
        );
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    head
}

/// Whether the server closed `stream`: a read ends (EOF or reset) instead
/// of timing out.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Whatever it said before closing (a 503 past the cap) is read first.
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            }
        }
    }
}

/// Point 11: with no cap, 280 idle connections stalled `/healthz` and hits.
/// Past `server.max_connections`, a new connection is answered 503 with
/// Retry-After at once; once an idle one goes, `/healthz` and hits are
/// served again; heads are capped and ops endpoints take GET and HEAD only.
#[test]
fn connections_past_the_cap_are_refused_not_stalled() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_conns");
    let scratch = Scratch::new();
    let server = Binary::serve(
        &scratch,
        &edge_config(ch, &db, "max_connections = 8\nidle_timeout_ms = 600000", ""),
    );
    let mut idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    wait_until(
        Duration::from_secs(30),
        "a connection past the cap answered 503",
        || {
            try_http(server.addr, "GET", "/healthz", &[], b"")
                .is_ok_and(|r| r.status == 503 && r.header("retry-after") == Some("1"))
        },
    );
    // Hits are refused the same way, never left hanging.
    let r = send_hit(
        server.addr,
        "198.51.100.7",
        FIREFOX,
        &pageview("https://example.org/"),
        &[],
    );
    assert_eq!(r.status, 503, "{}", r.body);
    drop(idle.pop());
    wait_until(
        Duration::from_secs(30),
        "/healthz served once a slot is free",
        || try_http(server.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200),
    );
    // The slot /healthz just used comes back once tamis has seen that
    // connection close, which may be a moment after the client did: a hit
    // sent in that moment is refused like any past the cap, so it is sent
    // until one gets a slot, and that one must be taken.
    let mut hit = None;
    wait_until(
        Duration::from_secs(30),
        "a hit served once a slot is free",
        || {
            let r = send_hit(
                server.addr,
                "198.51.100.7",
                FIREFOX,
                &pageview("https://example.org/"),
                &[],
            );
            let served = r.status != 503;
            hit = Some(r);
            served
        },
    );
    let r = hit.expect("a hit was sent");
    assert_eq!(r.status, 202, "{}", r.body);
    drop(idle);

    let big = "x".repeat(9 * 1024);
    wait_until(
        Duration::from_secs(30),
        "a 9 KiB header refused with 431",
        || {
            try_http(server.addr, "GET", "/healthz", &[("X-Big", &big)], b"")
                .is_ok_and(|r| r.status == 431)
        },
    );
    for (listener, method, path) in [
        (server.addr, "POST", "/healthz"),
        (server.addr, "DELETE", "/readyz"),
        (server.addr, "PUT", "/about"),
        (server.addr, "POST", "/privacy.json"),
        (server.admin, "POST", "/metrics"),
        (server.admin, "DELETE", "/readyz"),
        (server.admin, "POST", "/healthz"),
    ] {
        let r = http(listener, method, path, &[], b"");
        assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    assert!(metric(server.admin, "tamis_connections_refused_total") >= 2);
    server.stop();
}

/// Point 11: idle keep-alive connections were kept forever. With a short
/// `server.idle_timeout_ms`, an idle connection — before its first request
/// or between two — is closed by tamis, so idle sockets past the cap free
/// their slots by themselves.
#[test]
fn idle_connections_are_closed_and_free_their_slots() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_idle");
    let scratch = Scratch::new();
    let server = Binary::serve(
        &scratch,
        &edge_config(ch, &db, "max_connections = 4\nidle_timeout_ms = 300", ""),
    );
    let mut kept_alive = TcpStream::connect(server.addr).expect("connect");
    kept_alive
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: tamis\r\n\r\n")
        .unwrap();
    let head = read_answer(&mut kept_alive);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).expect("connect"))
        .collect();
    assert!(
        closed_by_server(&mut kept_alive),
        "idle keep-alive connection left open"
    );
    for stream in &mut silent {
        assert!(closed_by_server(stream), "silent connection left open");
    }
    wait_until(
        Duration::from_secs(30),
        "/healthz served after idle ones timed out",
        || try_http(server.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200),
    );
    server.stop();
}

/// Point 12: refused tokens were neither counted nor slowed. They are
/// counted, logged without the token, and after a few a network waits
/// (429 + Retry-After), whatever token it sends; other networks do not.
#[test]
fn failed_logins_are_counted_logged_and_slowed() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_logins");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &edge_config(ch, &db, "", ""));
    // No token at all is not a guess.
    let r = http(server.addr, "GET", "/api/v2/sites", &[], b"");
    assert_eq!(r.status, 401);
    for i in 0..5 {
        let r = get(
            server.addr,
            "/api/v2/sites",
            &format!("guess-{i}-secret"),
            &[],
        );
        assert_eq!(r.status, 401, "{}", r.body);
    }
    // The audit endpoint hides itself from bad tokens, and counts them.
    let r = get(server.admin, "/api/v2/audit", "guess-5-secret", &[]);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(server.addr, "/api/v2/sites", TOKEN, &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(wait >= 1, "{wait}");
    // Another network (through the trusted proxy) is not held up.
    let r = get(
        server.addr,
        "/api/v2/sites",
        TOKEN,
        &[("X-Forwarded-For", "198.51.100.7")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(metric(server.admin, "tamis_api_auth_failures_total"), 6);
    assert_eq!(metric(server.admin, "tamis_api_auth_throttled_total"), 1);
    let log = server.stop();
    assert_eq!(log.matches("API token refused").count(), 6, "{log}");
    assert!(!log.contains("-secret"), "{log}");
    for line in log.lines().filter(|l| l.contains("API token refused")) {
        assert!(
            !line.contains("127.0.0.") && !line.contains("Bearer"),
            "{line}"
        );
    }
}

/// Point 13: API answers could be sniffed and cached, and CSV cells whose
/// first non-space character is a formula character reached spreadsheets
/// as formulas.
#[test]
fn api_answers_are_not_sniffed_or_cached_and_csv_formulas_are_neutralised() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_headers");
    let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
    let server = InProcess::serve(
        &edge_config(
            ch,
            &db,
            "",
            "k_threshold = 1\nevent_names = [\"signup\"]\nprop_keys = [\"plan\"]",
        ),
        clock,
    );
    let values = ["=HYPERLINK(\"http://x\")", "@SUM(A1)", "-2+3", "+A1+B1"];
    for (i, value) in values.iter().enumerate() {
        let hit = json!({"n": "signup", "d": "example.org", "u": "https://example.org/",
                         "p": {"plan": value}});
        let r = send_hit(
            server.addr,
            &format!("198.51.{i}.7"),
            FIREFOX,
            &hit.to_string(),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    wait_until(Duration::from_secs(10), "4 properties stored", || {
        ch.query_in(
            &db,
            "SELECT uniqExact(prop_value) FROM props_hourly WHERE prop_key = 'plan'",
        ) == "4\n"
    });
    let query = json!({"site_id": "example.org", "metrics": ["visitors"], "date_range": "day",
                       "dimensions": ["event:props:plan"], "format": "csv"});
    let csv = stats(server.addr, TOKEN, query.clone());
    assert_eq!(csv.status, 200, "{}", csv.body);
    for cell in [
        "\"'=HYPERLINK(\"\"http://x\"\")\"",
        "'@SUM(A1)",
        "'-2+3",
        "'+A1+B1",
    ] {
        assert!(
            csv.body.lines().any(|l| l.starts_with(&format!("{cell},"))),
            "no {cell} in\n{}",
            csv.body
        );
    }
    let mut json_query = query;
    json_query["format"] = json!("json");
    let answers = [
        ("stats csv", csv),
        ("stats json", stats(server.addr, TOKEN, json_query)),
        ("stats refused", stats(server.addr, "wrong", json!({}))),
        ("sites", get(server.addr, "/api/v2/sites", TOKEN, &[])),
        (
            "audit",
            get(server.admin, "/api/v2/audit", ADMIN_TOKEN, &[]),
        ),
        (
            "unknown path",
            http(server.addr, "GET", "/api/v2/nothing", &[], b""),
        ),
    ];
    for (what, r) in answers {
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
        // The stats API stays same-origin.
        assert_eq!(r.header("access-control-allow-origin"), None, "{what}");
    }
}

/// Point 14: `server.cors_allow_origin` was parsed, fingerprinted, and
/// ignored: ingest sent `*` whatever it said.
#[test]
fn cors_allow_origin_applies_to_ingest() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_cors");
    let clock = tamis::clock::Clock::manual("2026-03-10T15:00:00Z".parse().unwrap());
    let server = InProcess::serve(
        &edge_config(ch, &db, "cors_allow_origin = \"https://example.org\"", ""),
        clock,
    );
    let hit = pageview("https://example.org/");
    let r = send_hit(
        server.addr,
        "198.51.100.7",
        FIREFOX,
        &hit,
        &[("Origin", "https://example.org")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://example.org")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    let r = send_hit(
        server.addr,
        "198.51.100.8",
        FIREFOX,
        &hit,
        &[("Origin", "https://evil.example")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // A tracker without Origin (server side) is not a browser's request.
    let r = send_hit(server.addr, "198.51.100.9", FIREFOX, &hit, &[]);
    assert_eq!(r.status, 202, "{}", r.body);
    let preflight = |origin: &str| {
        http(
            server.addr,
            "OPTIONS",
            "/api/event",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
            ],
            b"",
        )
    };
    let r = preflight("https://example.org");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://example.org")
    );
    let r = preflight("https://evil.example");
    assert_eq!(r.header("access-control-allow-origin"), None);
    wait_until(Duration::from_secs(10), "the 2 allowed hits stored", || {
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "2\n"
    });
}

/// Point 14: the ClickHouse URL, which may carry credentials, was printed
/// whole in logs and error messages.
#[test]
fn clickhouse_credentials_are_never_printed() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("edge_creds");
    let scratch = Scratch::new();
    // Nothing listens on port 9 (discard) here: the read fails, and says
    // where it tried.
    let text = edge_config(ch, &db, "", "").replace(
        &format!("url = \"{}\"", ch.url),
        "url = \"http://tamis:hunter2@127.0.0.1:9\"",
    );
    assert!(text.contains("hunter2"), "the test config names the URL");
    let path = scratch.path("creds.toml");
    std::fs::write(&path, text).unwrap();
    let out = tamis_cli(&["audit", "--since", "1d"], &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("http://***@127.0.0.1:9"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
