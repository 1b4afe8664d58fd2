//! Shared links (issue 17, part 4): `tamis share create|list|revoke` run as
//! the binary, a real tamis in-process (its clock known), real ClickHouse,
//! real HTTP.
//!
//! The behaviour follows Plausible's shared links
//! (plausible/analytics, `lib/plausible_web/controllers/stats_controller.ex`,
//! `shared_link/2` and `authenticate_shared_link/2`): a link opens one
//! site's dashboard read only, is re-checked on every request so that a
//! revocation takes effect at once, and may ask for a password, after which
//! a cookie lets the visitor in. Unlike Plausible's `?auth=` slug, tamis's
//! secret is kept in the URL fragment and stored as a digest only.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;

struct Rig {
    server: InProcess,
    /// Holds the configuration file the CLI reads.
    _scratch: Scratch,
    config: std::path::PathBuf,
    db: String,
}

fn rig(prefix: &str) -> Rig {
    let ch = ClickHouse::shared();
    let db = ch.create_database(prefix);
    let text = config(ch, &db, None, "");
    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    std::fs::write(&path, &text).unwrap();
    let clock = tamis::clock::Clock::manual(chrono::Utc::now());
    let server = InProcess::serve(&text, clock);
    Rig {
        server,
        _scratch: scratch,
        config: path,
        db,
    }
}

use common::run_tamis as tamis;
use common::SharedLink as Link;

/// Creates a link for example.org.
fn create(rig: &Rig, extra: &[&str], env: &[(&str, &str)]) -> Link {
    create_for(rig, "example.org", extra, env)
}

/// Exchanges the link's secret (and password) for its session cookie.
fn open(rig: &Rig, link: &Link, password: Option<&str>) -> Result<String, Response> {
    let mut body = json!({"link": link.id, "secret": link.secret});
    if let Some(p) = password {
        body["password"] = json!(p);
    }
    let r = post_json(rig, "/api/share/session", &[], &body);
    if r.status != 200 {
        return Err(r);
    }
    let set = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/api/"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    Ok(set.split(';').next().unwrap().to_string())
}

fn query(rig: &Rig, link: &Link, cookie: &str, site: &str) -> Response {
    let body = json!({"site_id": site, "metrics": ["visitors", "pageviews"], "date_range": "day", "dimensions": ["event:page"]});
    post_json(
        rig,
        "/api/v2/query",
        &[("x-tamis-share", &link.id), ("cookie", cookie)],
        &body,
    )
}

/// POSTs `body` as JSON to `path` on the rig's server, with `headers`.
fn post_json(
    rig: &Rig,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Response {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    http(
        rig.server.addr,
        "POST",
        path,
        &all,
        body.to_string().as_bytes(),
    )
}

/// `visitors` visitors (each its own network) with one pageview on each
/// page, stored before it returns.
fn seed(rig: &Rig, pages: &[(&str, u32)]) {
    let mut n = 0;
    for (page, visitors) in pages {
        for _ in 0..*visitors {
            let r = send_hit(
                rig.server.addr,
                &format!("100.64.{n}.1"),
                FIREFOX,
                &pageview(&format!("https://example.org{page}")),
                &[],
            );
            assert_eq!(r.status, 202, "{}", r.body);
            n += 1;
        }
    }
    let ch = ClickHouse::shared();
    wait_until(Duration::from_secs(10), "pageviews stored", || {
        ch.query_in(&rig.db, "SELECT sumMerge(pageviews) FROM traffic_hourly") == format!("{n}\n")
    });
}

#[test]
fn a_shared_link_reads_its_site_in_protected_mode_and_no_other() {
    let rig = rig("share_reads");
    // Twelve visitors on /popular, and two on /rare: a cell below k (5).
    seed(&rig, &[("/popular", 12), ("/rare", 2)]);
    let link = create(&rig, &["--name", "conseil"], &[]);
    let cookie = open(&rig, &link, None).expect("session opened");

    let shared = query(&rig, &link, &cookie, "example.org");
    assert_eq!(shared.status, 200, "{}", shared.body);
    // The same answer as a protected token's: rounded, never exact.
    let protected = stats(
        rig.server.addr,
        PROTECTED_TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"], "date_range": "day", "dimensions": ["event:page"]}),
    );
    assert_eq!(protected.status, 200, "{}", protected.body);
    let rows = shared.json()["results"].as_array().unwrap().len();
    assert!(rows > 0, "{}", shared.body);
    assert_eq!(shared.json()["results"], protected.json()["results"]);
    // The small page is withheld through the link as through the protected
    // token: not named, its visitors merged into an `(other)` without
    // numbers (2 is below k), and counted in `meta.suppressed_rows`; the
    // popular page's 12 are rounded to a multiple of 5.
    let meta = &shared.json()["meta"];
    assert_eq!(
        (&meta["disclosure"], &meta["suppressed_rows"]),
        (&json!("protected"), &json!(1)),
        "{}",
        shared.body
    );
    assert_eq!(meta, &protected.json()["meta"]);
    assert!(!shared.body.contains("/rare"), "{}", shared.body);
    let results = shared.json()["results"].clone();
    assert_eq!(
        results[1],
        json!({"dimensions": ["(other)"], "metrics": [null, null]})
    );
    assert_eq!(results[0]["dimensions"], json!(["/popular"]), "{results}");
    let popular = results[0]["metrics"][0].as_u64().unwrap();
    assert!(popular.is_multiple_of(5) && popular >= 10, "{results}");
    // An exact token gets /popular's 12 as counted, but no number below
    // k either: /rare's two visitors stay withheld in `(other)`.
    let exact = stats(
        rig.server.addr,
        TOKEN,
        json!({"site_id": "example.org", "metrics": ["visitors", "pageviews"], "date_range": "day", "dimensions": ["event:page"]}),
    );
    assert_eq!(exact.status, 200, "{}", exact.body);
    assert_eq!(
        exact.json()["results"],
        json!([
            {"dimensions": ["/popular"], "metrics": [12, 12]},
            {"dimensions": ["(other)"], "metrics": [null, null]}
        ]),
        "{}",
        exact.body
    );

    // Another site is as unknown as a missing one.
    let other = query(&rig, &link, &cookie, "other.org");
    assert_eq!(other.status, 404, "{}", other.body);
    let sites = http(
        rig.server.addr,
        "GET",
        "/api/v2/sites",
        &[("x-tamis-share", &link.id), ("cookie", &cookie)],
        b"",
    );
    assert_eq!(sites.status, 200, "{}", sites.body);
    let ids: Vec<String> = sites.json()["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["example.org"]);

    // Without the cookie, or with a cookie made for another link: refused.
    let bare = query(&rig, &link, "a=b", "example.org");
    assert_eq!(bare.status, 401, "{}", bare.body);
    let second = create(&rig, &[], &[]);
    let renamed = cookie.replacen(&link.id, &second.id, 1);
    assert_eq!(query(&rig, &second, &renamed, "example.org").status, 401);
    // A wrong secret opens nothing.
    let wrong = Link {
        id: link.id.clone(),
        secret: second.secret.clone(),
    };
    assert_eq!(open(&rig, &wrong, None).unwrap_err().status, 401);
}

#[test]
fn a_revoked_link_stops_working_at_once() {
    let rig = rig("share_revoked");
    let link = create(&rig, &[], &[]);
    let cookie = open(&rig, &link, None).expect("session opened");
    assert_eq!(query(&rig, &link, &cookie, "example.org").status, 200);

    let (ok, _, err) = tamis(&rig.config, &["share", "revoke", &link.id], &[]);
    assert!(ok, "{err}");
    // The very next request: no cache, no restart.
    let after = query(&rig, &link, &cookie, "example.org");
    assert_eq!(after.status, 401, "{}", after.body);
    assert_eq!(open(&rig, &link, None).unwrap_err().status, 401);

    let (ok, listed, err) = tamis(&rig.config, &["share", "list"], &[]);
    assert!(ok, "{err}");
    assert!(
        listed.contains(&link.id) && listed.contains("revoked"),
        "{listed}"
    );
    assert!(!listed.contains(&link.secret), "{listed}");
}

#[test]
fn an_expired_link_is_refused() {
    let rig = rig("share_expired");
    let link = create(&rig, &["--expires", "1h"], &[]);
    let cookie = open(&rig, &link, None).expect("session opened");
    assert_eq!(query(&rig, &link, &cookie, "example.org").status, 200);
    rig.server
        .clock
        .set(chrono::Utc::now() + chrono::Duration::hours(2));
    assert_eq!(query(&rig, &link, &cookie, "example.org").status, 401);
    assert_eq!(open(&rig, &link, None).unwrap_err().status, 401);
}

#[test]
fn a_password_link_opens_only_with_its_password() {
    let rig = rig("share_password");
    let link = create(
        &rig,
        &["--password"],
        &[("TAMIS_SHARE_PASSWORD", "correct horse battery")],
    );
    for given in [None, Some("wrong horse battery")] {
        let refused = open(&rig, &link, given).unwrap_err();
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.json()["password_required"],
            true,
            "{}",
            refused.body
        );
        assert!(refused.header("set-cookie").is_none());
    }
    let cookie = open(&rig, &link, Some("correct horse battery")).expect("opened");
    assert_eq!(query(&rig, &link, &cookie, "example.org").status, 200);

    // The answers are those `/api/v2/openapi.json` describes.
    let doc = http(rig.server.addr, "GET", "/api/v2/openapi.json", &[], b"").json();
    let exchange = |body: serde_json::Value| {
        assert!(
            openapi_validator(&doc, "ShareSessionRequest").is_valid(&body),
            "{body}"
        );
        post_json(&rig, "/api/share/session", &[], &body)
    };
    let refused = exchange(json!({"link": link.id, "secret": link.secret}));
    let opened = exchange(
        json!({"link": link.id, "secret": link.secret, "password": "correct horse battery"}),
    );
    let unknown = exchange(json!({"link": "0000000000000000", "secret": link.secret}));
    for (answer, status, schema) in [
        (&refused, 401, "ShareRefused"),
        (&opened, 200, "ShareSession"),
        (&unknown, 401, "ShareRefused"),
    ] {
        assert_eq!(answer.status, status, "{}", answer.body);
        let body = answer.json();
        assert!(
            openapi_validator(&doc, schema).is_valid(&body),
            "{schema}: {body}"
        );
    }
    assert_eq!(opened.json()["site_id"], "example.org");
    assert!(doc["paths"]["/api/share/session"]["post"]["responses"]["401"].is_object());
    let ch = ClickHouse::shared();
    let stored = ch.query_in(&rig.db, "SELECT password_hash FROM shared_links");
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert!(!stored.contains("correct horse"));
}

#[test]
fn the_served_page_holds_no_secret_and_every_view_is_audited() {
    let rig = rig("share_audit");
    let link = create(&rig, &[], &[]);
    let page = http(
        rig.server.addr,
        "GET",
        &format!("/share/{}", link.id),
        &[],
        b"",
    );
    assert_eq!(page.status, 200);
    assert!(page.body.contains("/assets/dashboard.js"));
    assert!(!page.body.contains(&link.secret));
    assert!(!format!("{:?}", page.headers).contains(&link.secret));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    let cookie = open(&rig, &link, None).expect("session opened");
    for _ in 0..3 {
        assert_eq!(query(&rig, &link, &cookie, "example.org").status, 200);
    }
    let ch = ClickHouse::shared();
    let actor = format!("share:{}", link.id);
    wait_until(Duration::from_secs(10), "views audited", || {
        ch.query_in(
            &rig.db,
            &format!(
                "SELECT kind, count() FROM audit_log WHERE actor = '{actor}' GROUP BY kind ORDER BY kind"
            ),
        ) == "share_view\t1\nstats_read\t3\n"
    });
    let summaries = ch.query_in(
        &rig.db,
        &format!("SELECT summary FROM audit_log WHERE actor = '{actor}' AND kind = 'stats_read'"),
    );
    assert!(summaries.contains("disclosure=protected"), "{summaries}");
    // Neither the secret nor the session is stored anywhere.
    for table in ["audit_log", "shared_links"] {
        let all = ch.query_in(&rig.db, &format!("SELECT * FROM {table} FORMAT TSV"));
        assert!(!all.contains(&link.secret), "{table}: {all}");
    }
}

/// Opening a password link without its password only makes the page ask
/// for it, and a revoked link's right secret only shows that it is
/// closed: no guess was made, so the network's sign-in throttle does not
/// count them. Wrong passwords are guesses, throttled as wrong tokens
/// are, and nothing but a right password forgets them.
#[test]
fn asking_for_the_password_is_free_and_wrong_passwords_are_throttled() {
    let rig = rig("share_throttle");
    let link = create(
        &rig,
        &["--password"],
        &[("TAMIS_SHARE_PASSWORD", "correct horse battery")],
    );
    for _ in 0..8 {
        let asked = open(&rig, &link, None).unwrap_err();
        assert_eq!(asked.status, 401, "{}", asked.body);
        assert_eq!(asked.json()["password_required"], true);
    }
    // A revoked link's right secret is no guess either: its page, reloaded,
    // keeps saying that the link is closed.
    let revoked = create(&rig, &[], &[]);
    let (ok, _, err) = tamis(&rig.config, &["share", "revoke", &revoked.id], &[]);
    assert!(ok, "{err}");
    for _ in 0..8 {
        assert_eq!(open(&rig, &revoked, None).unwrap_err().status, 401);
    }
    // Nothing between two wrong passwords forgets them: neither a request
    // refused as malformed nor a link opened (a public link in hand must
    // not buy more guesses at another's password).
    let open_link = create(&rig, &[], &[]);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(open(&rig, &link, Some("wrong")).unwrap_err().status);
        let malformed = post_json(&rig, "/api/share/session", &[], &json!({}));
        assert!(matches!(malformed.status, 400 | 429), "{}", malformed.body);
        if malformed.status == 400 {
            assert!(open(&rig, &open_link, None).is_ok());
        }
    }
    let first_throttled = statuses.iter().position(|&s| s == 429);
    assert!(
        first_throttled.is_some_and(|i| i > 0 && statuses[..i].iter().all(|&s| s == 401)),
        "{statuses:?}"
    );
    let held = open(&rig, &link, Some("correct horse battery")).unwrap_err();
    assert_eq!(held.status, 429, "{}", held.body);
    assert!(held.header("retry-after").is_some());
}

/// The audit log reads no shared link: a share header there does not turn
/// a guessed token's refusal (answered as an unknown path, 404) into a
/// success that would forget the network's earlier guesses.
#[test]
fn a_share_header_on_the_audit_log_does_not_hide_guessed_tokens() {
    let rig = rig("share_audit_guess");
    let statuses: Vec<u16> = (0..8)
        .map(|_| {
            http(
                rig.server.admin,
                "GET",
                "/api/v2/audit?since=1h",
                &[
                    ("authorization", "Bearer guessed-token"),
                    ("x-tamis-share", "0000000000000000"),
                ],
                b"",
            )
            .status
        })
        .collect();
    let first_throttled = statuses.iter().position(|&s| s == 429);
    assert!(
        first_throttled.is_some_and(|i| i > 0 && statuses[..i].iter().all(|&s| s == 404)),
        "{statuses:?}"
    );
}

/// `share create` points links at `server.public_url`; unset, at the
/// loopback listener of a local run (and says so), and refuses when the
/// listener is public, since such a link would lead nowhere. `tamis check`
/// counts each site's active links.
#[test]
fn links_point_at_the_public_url_and_check_counts_each_site_s_active_links() {
    let rig = rig("share_public_url");
    let text = std::fs::read_to_string(&rig.config).unwrap();
    let with_url = rig._scratch.path("public.toml");
    std::fs::write(
        &with_url,
        text.replacen(
            "[server]\n",
            "[server]\npublic_url = \"https://stats.example.org/\"\n",
            1,
        ),
    )
    .unwrap();
    let site = ["share", "create", "--site", "example.org"];
    let (ok, out, err) = tamis(&with_url, &site, &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("https://stats.example.org/share/"), "{out}");
    let mut args = site.to_vec();
    args.extend(["--password", "--expires", "2d"]);
    let (ok, _, err) = tamis(&with_url, &args, &[("TAMIS_SHARE_PASSWORD", "s3cret pass")]);
    assert!(ok, "{err}");

    let (ok, out, err) = tamis(&rig.config, &site, &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("http://127.0.0.1:"), "{out}");
    assert!(err.contains("server.public_url is not set"), "{err}");
    let public = rig._scratch.path("public-listener.toml");
    std::fs::write(
        &public,
        text.replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"", 1),
    )
    .unwrap();
    let (ok, _, err) = tamis(&public, &site, &[]);
    assert!(!ok);
    assert!(err.contains("set server.public_url"), "{err}");

    let (_, out, _) = tamis(&rig.config, &["check"], &[]);
    assert!(
        out.contains(
            "site example.org: 3 active shared link(s), 1 with a password, 1 expiring within 7 days"
        ),
        "{out}"
    );
    assert!(
        out.contains("site other.org: no active shared link"),
        "{out}"
    );
}

/// A collector of `db` on `cluster`, with its own durable log and config
/// file.
fn cluster_rig(cluster: &common::cluster::Cluster, db: &str) -> Rig {
    let text = common::cluster_config(cluster, db);
    let scratch = Scratch::new();
    let path = scratch.path("tamis.toml");
    std::fs::write(&path, &text).unwrap();
    let server = InProcess::serve(&text, tamis::clock::Clock::manual(chrono::Utc::now()));
    Rig {
        server,
        _scratch: scratch,
        config: path,
        db: db.into(),
    }
}

/// How many revocations of `link` each node of `cluster` holds in its own
/// table, as (shard, replica, count), for the nodes that run.
fn revocations_held(
    cluster: &common::cluster::Cluster,
    db: &str,
    link: &Link,
) -> Vec<(u32, u32, u64)> {
    cluster
        .nodes()
        .filter(|(_, _, node)| node.is_up())
        .map(|(shard, replica, node)| {
            let n = node.query(&format!(
                "SELECT count() FROM {db}.shared_links WHERE link_id = '{}' AND kind = 'revoke'",
                link.id
            ));
            (shard, replica, n.trim().parse().expect("a count"))
        })
        .collect()
}

/// On a 2 × 2 ClickHouse cluster (`common::cluster`), a revocation is
/// written to every shard and `tamis share revoke` returns only once every
/// replica of a shard holds it, so the next request on any collector is
/// refused whichever replica its read asks. With a replica of each shard
/// down, revoke says it could not confirm, names them, and asked again once
/// they are back, confirms.
#[test]
fn on_a_cluster_a_revocation_is_confirmed_on_every_replica_and_every_collector_refuses_the_link() {
    let mut cluster = common::cluster::Cluster::start();
    let db = format!("share_cluster_{}", std::process::id());
    let a = cluster_rig(&cluster, &db);
    let b = cluster_rig(&cluster, &db);

    let link = create(&a, &[], &[]);
    // The session cookie holds no state of a collector: opened on one, it
    // reads on the other.
    let cookie = open(&a, &link, None).expect("session opened");
    wait_until(
        Duration::from_secs(10),
        "the link readable on the other collector",
        || query(&b, &link, &cookie, "example.org").status == 200,
    );
    assert_eq!(query(&a, &link, &cookie, "example.org").status, 200);

    let (ok, _, err) = tamis(&a.config, &["share", "revoke", &link.id], &[]);
    assert!(ok, "{err}");
    assert!(err.contains("confirmed on every replica"), "{err}");
    // Written to both shards; at least one shard whole at once (no sync).
    let held = revocations_held(&cluster, &db, &link);
    let whole = |shard: u32| held.iter().filter(|h| h.0 == shard).all(|h| h.2 > 0);
    assert!(whole(1) || whole(2), "{held:?}");
    for rig in [&a, &b] {
        for _ in 0..4 {
            // Several reads, so that both replicas of each shard are asked.
            let after = query(rig, &link, &cookie, "example.org");
            assert_eq!(after.status, 401, "{}", after.body);
        }
    }

    // A replica of each shard down: no shard can hold the revocation whole.
    let second = create(&a, &[], &[]);
    let cookie2 = open(&a, &second, None).expect("second session");
    cluster.stop_many(&[(1, 2), (2, 2)], common::clickhouse::Stop::Graceful);
    let (ok, _, err) = tamis(&a.config, &["share", "revoke", &second.id], &[]);
    assert!(
        !ok,
        "revoke claimed success with a replica of each shard down: {err}"
    );
    for down in [cluster.node(1, 2), cluster.node(2, 2)] {
        let port = down
            .url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        assert!(err.contains(&port), "{port} not named: {err}");
    }
    assert!(
        err.contains(&format!("tamis share revoke {}", second.id)),
        "{err}"
    );
    // The replicas that run hold it, so the collectors refuse it already.
    assert_eq!(query(&b, &second, &cookie2, "example.org").status, 401);

    cluster.restart(1, 2);
    cluster.restart(2, 2);
    let (ok, _, err) = tamis(&a.config, &["share", "revoke", &second.id], &[]);
    assert!(ok, "{err}");
    let held = revocations_held(&cluster, &db, &second);
    assert_eq!(held.len(), 4, "{held:?}");
    let whole = |shard: u32| held.iter().filter(|h| h.0 == shard).all(|h| h.2 > 0);
    assert!(whole(1) || whole(2), "{held:?}");
    assert_eq!(query(&a, &second, &cookie2, "example.org").status, 401);
    // The returned replicas catch up with what was written while they were
    // down.
    cluster.sync_replicas(&db, "shared_links");
    let held = revocations_held(&cluster, &db, &second);
    assert!(
        held.iter().all(|h| h.2 > 0),
        "every replica holds it: {held:?}"
    );
}

/// Creates a link for `site` with the CLI; its id and secret from the
/// printed URL.
fn create_for(rig: &Rig, site: &str, extra: &[&str], env: &[(&str, &str)]) -> Link {
    create_shared_link(&rig.config, rig.server.addr, site, extra, env)
}

/// The shared views in Chromium (`tests/browser/share.mjs`), one tamis and
/// one browser for all of it: a link opens its one site read only and
/// leaves its secret nowhere a script can read; with no period in the URL
/// the dashboard opens as Plausible's does
/// (plausible/analytics, `assets/js/dashboard/dashboard-time-periods.ts`,
/// `getDashboardTimeSettings`: today when the site's own statistics began
/// today or yesterday, else the last 28 days), so a newly shared site shows
/// its numbers on the first view; a password link asks for its password in
/// a labelled form, answers a wrong one with an alert and the field focused
/// again, opens with the right one and keeps the password out of the URL,
/// storage and script-visible cookies; revoked and unknown links show their
/// message alone. axe-core's WCAG 2.1 A/AA rules find nothing on any of
/// these views, in French and English, on a phone and a desktop, and the
/// password form and the dashboard work from the keyboard alone (skip link
/// included). Screenshots: `target/test-artifacts/share-*.png`.
#[test]
fn a_shared_dashboard_opens_on_its_numbers_asks_its_password_accessibly_and_refuses_dead_links() {
    let rig = rig("share_browser");
    // other.org's statistics began three days ago; example.org's today.
    let today = rig.server.clock.now();
    rig.server.clock.set(today - chrono::Duration::days(3));
    for v in 0..12 {
        let r = send_hit(
            rig.server.addr,
            &format!("100.65.{v}.1"),
            FIREFOX,
            &json!({"n": "pageview", "u": "https://other.org/archives", "d": "other.org", "r": null})
                .to_string(),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // Back to today before waiting: the batcher flushes by the clock.
    rig.server.clock.set(today);
    for v in 0..12 {
        let r = send_hit(
            rig.server.addr,
            &format!("100.64.{v}.1"),
            FIREFOX,
            &pageview("https://example.org/popular"),
            &[],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let ch = ClickHouse::shared();
    wait_until(Duration::from_secs(10), "pageviews stored", || {
        ch.query_in(
            &rig.db,
            "SELECT site_id, sumMerge(pageviews) FROM traffic_hourly GROUP BY site_id ORDER BY site_id",
        ) == "example.org\t12\nother.org\t12\n"
    });

    let link = create(&rig, &[], &[]);
    let older = create_for(&rig, "other.org", &[], &[]);
    let password = "correct horse battery";
    let locked = create(&rig, &["--password"], &[("TAMIS_SHARE_PASSWORD", password)]);
    let revoked = create(&rig, &[], &[]);
    let (ok, _, err) = tamis(&rig.config, &["share", "revoke", &revoked.id], &[]);
    assert!(ok, "{err}");
    let address = |l: &Link| format!("http://{}/share/{}#{}", rig.server.addr, l.id, l.secret);
    let unknown = format!(
        "http://{}/share/0123456789abcdef#{}",
        rig.server.addr, link.secret
    );
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    let r = node(
        "share.mjs",
        &[
            "--url",
            &address(&link),
            "--secret",
            &link.secret,
            "--older-url",
            &address(&older),
            "--password-url",
            &address(&locked),
            "--password",
            password,
            "--revoked-url",
            &address(&revoked),
            "--unknown-url",
            &unknown,
            "--screenshots",
            shots.to_str().unwrap(),
        ],
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["violations"],
        json!([]),
        "axe (WCAG 2.1 A/AA) on the shared views:\n{}",
        r["violations_text"].as_str().unwrap_or_default()
    );
    // Every view was checked: the link without password (its new site and
    // its older one, French on a phone), and the password form (empty,
    // refused), dashboard and revoked page, in both languages at both
    // widths.
    assert_eq!(r["axe"].as_array().map(Vec::len), Some(18), "{r}");
    for view in ["link-fr-phone", "link-older-fr-phone"] {
        assert!(
            r["axe"].as_array().unwrap().contains(&json!(view)),
            "{view}: {r}"
        );
    }
    assert_eq!(r["new_site"]["period"], "day", "{r}");
    assert_eq!(r["older_site"]["period"], "28d", "{r}");
    for name in [
        "share-fr-phone",
        "share-password-fr-phone",
        "share-password-en-desktop",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }

    // The page's sessions were opened and audited as such: the link without
    // password once, the password link once per context (four, and the
    // keyboard run), never for a wrong password, a revoked or unknown link.
    wait_until(
        Duration::from_secs(10),
        "the browser's views audited",
        || {
            let views = |l: &Link| {
                ch.query_in(
                &rig.db,
                &format!(
                    "SELECT count() FROM audit_log WHERE actor = 'share:{}' AND kind = 'share_view'",
                    l.id
                ),
            )
            };
            (views(&link), views(&locked), views(&revoked))
                == ("1\n".into(), "5\n".into(), "0\n".into())
        },
    );
    // Neither the password nor a secret is stored anywhere.
    for table in ["audit_log", "shared_links"] {
        let all = ch.query_in(&rig.db, &format!("SELECT * FROM {table} FORMAT TSV"));
        assert!(!all.contains(password), "{table}");
        for l in [&link, &older, &locked, &revoked] {
            assert!(!all.contains(&l.secret), "{table}");
        }
    }
}
