//! The load-balancer examples of the README (`deploy/haproxy/tamis.cfg`,
//! `deploy/nginx/tamis.conf`), run for real in front of two tamis
//! collectors: every visitor's hits reach one collector (source-IP
//! affinity: a visit split over two collectors would count twice), the
//! visitors are spread over both, and each hit is answered 202 through the
//! proxy. Visitors are told apart by their source address: the test's
//! clients bind to different loopback addresses (127.0.0.2, .3, …), as
//! visitors' browsers come from different addresses.
//!
//! HAProxy's `balance source` and nginx's `hash … consistent` are
//! documented at https://docs.haproxy.org/2.6/configuration.html#4.2-balance
//! and https://nginx.org/en/docs/http/ngx_http_upstream_module.html#hash.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::rig::scrape;
use common::{config, free_port, wait_until, Binary, ClickHouse, Scratch};

const VISITORS: u8 = 24;
const HITS_EACH: usize = 3;

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require(binary: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{binary}` is not installed: run deploy/setup.sh (or apt-get install {package})"
    );
}

/// The example file with its listening address and its two servers
/// rewritten to `listen` and the collectors.
fn rendered(example: &str, listen: &str, servers: [SocketAddr; 2]) -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(example))
        .expect("read the example");
    let text = text
        .replace("bind :8080\n", &format!("bind {listen}\n"))
        .replace("listen *:8080;", &format!("listen {listen};"))
        .replace("10.0.0.11:8080", &servers[0].to_string())
        .replace("10.0.0.12:8080", &servers[1].to_string());
    assert!(
        text.contains(listen)
            && text.contains(&servers[0].to_string())
            && text.contains(&servers[1].to_string()),
        "{example} no longer names its servers as the test expects:\n{text}"
    );
    text
}

/// One hit from `source` (a loopback address) through the proxy at `addr`.
fn hit_from(source: [u8; 4], addr: SocketAddr, page: &str) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind a loopback address");
        let Ok(mut stream) = socket.connect(addr).await else {
            return 0;
        };
        let body = common::pageview(&format!("https://example.org{page}"));
        let request = format!(
            "POST /api/event HTTP/1.1\r\nHost: example.org\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    })
}

fn accepted(collector: &Binary) -> f64 {
    scrape(collector.admin)
        .and_then(|m| m.get("tamis_hits_accepted_total").copied())
        .unwrap_or(0.0)
}

/// Sends each visitor's hits in turn through `proxy` and checks which
/// collector took each: every visitor's at one, visitors at both.
fn check_affinity(name: &str, proxy: SocketAddr, collectors: &[Binary; 2]) {
    wait_until(Duration::from_secs(20), "the proxy answers", || {
        hit_from([127, 0, 0, 1], proxy, "/warm-up") == 202
    });
    let mut per_collector = [0usize; 2];
    for visitor in 0..VISITORS {
        let source = [127, 0, 0, 2 + visitor];
        let mut went_to = Vec::new();
        for n in 0..HITS_EACH {
            let before = [accepted(&collectors[0]), accepted(&collectors[1])];
            let status = hit_from(source, proxy, &format!("/v{visitor}/{n}"));
            assert_eq!(status, 202, "{name}: visitor {visitor} hit {n}");
            let after = [accepted(&collectors[0]), accepted(&collectors[1])];
            let took: Vec<usize> = (0..2).filter(|&i| after[i] > before[i]).collect();
            assert_eq!(took.len(), 1, "{name}: a hit reached {took:?}");
            went_to.push(took[0]);
        }
        assert!(
            went_to.windows(2).all(|w| w[0] == w[1]),
            "{name}: visitor {visitor}'s hits went to collectors {went_to:?}"
        );
        per_collector[went_to[0]] += 1;
    }
    assert!(
        per_collector.iter().all(|&n| n > 0),
        "{name}: every visitor went to one collector: {per_collector:?}"
    );
    eprintln!("[{name}] {VISITORS} visitors, {HITS_EACH} hits each, each visitor at one collector; visitors per collector {per_collector:?}");
}

fn collectors(scratches: &[Scratch; 2]) -> [Binary; 2] {
    let ch = ClickHouse::shared();
    let db = ch.create_database("balancer");
    [
        Binary::serve(&scratches[0], &config(ch, &db, None, "")),
        Binary::serve(&scratches[1], &config(ch, &db, None, "")),
    ]
}

#[test]
fn haproxy_example_keeps_each_visitor_on_one_collector() {
    require("haproxy", "haproxy");
    let scratches = [Scratch::new(), Scratch::new()];
    let collectors = collectors(&scratches);
    let port = free_port();
    let text = rendered(
        "deploy/haproxy/tamis.cfg",
        &format!("127.0.0.1:{port}"),
        [collectors[0].addr, collectors[1].addr],
    );
    let path = scratches[0].path("haproxy.cfg");
    std::fs::write(&path, text).unwrap();
    let check = Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c refuses the example: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _proxy = Proxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy"),
    );
    check_affinity(
        "haproxy",
        SocketAddr::from(([127, 0, 0, 1], port)),
        &collectors,
    );
}

#[test]
fn nginx_example_keeps_each_visitor_on_one_collector() {
    require("nginx", "nginx");
    let scratches = [Scratch::new(), Scratch::new()];
    let collectors = collectors(&scratches);
    let port = free_port();
    let site = rendered(
        "deploy/nginx/tamis.conf",
        &format!("127.0.0.1:{port}"),
        [collectors[0].addr, collectors[1].addr],
    );
    let dir = scratches[0].path("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tamis.conf"), site).unwrap();
    // The smallest nginx.conf around the example, everything in scratch.
    let main = format!(
        "daemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/tamis.conf;\n}}\n",
        d = dir.display()
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let conf = dir.join("nginx.conf");
    let check = Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refuses the example: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _proxy = Proxy(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx"),
    );
    check_affinity(
        "nginx",
        SocketAddr::from(([127, 0, 0, 1], port)),
        &collectors,
    );
}
