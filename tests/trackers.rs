//! Other products' trackers pointed at tamis unchanged (issue 14): Umami's
//! browser tracker and `@umami/node`, Google Analytics 4's gtag.js
//! protocol (by `@analytics-debugger/ga4mp` and as gtag.js sends it) and
//! Measurement Protocol, Matomo's JavaScript tracker's requests. The
//! browser parts run in real headless Chromium (`tests/browser/
//! trackers.mjs`, which names the sources of each format), the server
//! parts in Node (`tests/browser/server_trackers.mjs`), against the real
//! tamis binary and a real ClickHouse. Checked where it lands: what the
//! stats API answers (pages, events, allowed props, consent), what was
//! dropped and why, and that no client address and none of the trackers'
//! visitor or user ids is in ClickHouse, the durable log or tamis's own
//! log.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const UMAMI_SITE: &str = "6f1c2a5e-3b7d-4e8f-9a0b-1c2d3e4f5a6b";
const UMAMI_SERVER: &str = "0d9e8f7a-6b5c-4d3e-8f1a-2b3c4d5e6f70";
/// The address the browser's requests come from (trackers.mjs relays
/// them from it).
const BROWSER_ADDRESS: &str = "127.0.0.2";

fn site(id: &str, extra: &str) -> String {
    format!("[[site]]\nid = \"{id}\"\nhostnames = [\"{id}\"]\ntimezone = \"America/Toronto\"\nk_threshold = 1\n{extra}\n")
}

fn sites() -> Vec<String> {
    vec![
        site(
            "umami.test",
            &format!("umami_website_id = \"{UMAMI_SITE}\"\nevent_names = [\"signup\"]\nprop_keys = [\"plan\"]"),
        ),
        site(
            "ga4.test",
            "ga4_measurement_id = \"G-GAMP0001\"\nevent_names = [\"signup\"]\nprop_keys = [\"plan\", \"seats\"]",
        ),
        site(
            "gtag.test",
            "ga4_measurement_id = \"G-GTAG0002\"\nevent_names = [\"signup\"]\nprop_keys = [\"plan\", \"seats\"]",
        ),
        site(
            "matomo.test",
            "matomo_site_id = 7\nevent_names = [\"Formulaires\", \"Outbound Link: Click\", \"File Download\"]\nprop_keys = [\"action\", \"name\", \"value\", \"url\"]",
        ),
        site(
            "server.test",
            &format!("umami_website_id = \"{UMAMI_SERVER}\"\nga4_measurement_id = \"G-SERV0003\"\nevent_names = [\"export\", \"signup\"]\nprop_keys = [\"format\", \"plan\"]"),
        ),
    ]
}

/// One exact-disclosure token for every site; the durable log in the
/// scratch folder's `log/`, where the test looks for identifiers.
fn config(ch: &ClickHouse, db: &str) -> String {
    let sites = sites();
    let ids: Vec<String> = sites
        .iter()
        .filter_map(|s| s.split('"').nth(1).map(|id| format!("\"{id}\"")))
        .collect();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[storage]\nlog_dir = \"log\"\n\n[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\nflush_interval_ms = 200\n\n{}\n[[token]]\nname = \"dashboard\"\nsecret_sha256 = \"{}\"\nsites = [{}]\ndisclosure = \"exact\"\n",
        ch.url,
        sites.join("\n"),
        sha256_hex(TOKEN),
        ids.join(", ")
    )
}

fn ask(server: &Binary, body: Value) -> Value {
    let r = stats(server.addr, TOKEN, body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["results"].clone()
}

fn breakdown(server: &Binary, site: &str, metrics: &[&str], dimension: &str) -> Value {
    ask(
        server,
        json!({"site_id": site, "date_range": "day", "metrics": metrics,
            "dimensions": [dimension], "order_by": [[dimension, "asc"]]}),
    )
}

fn prop(server: &Binary, site: &str, key: &str, event: &str) -> Value {
    ask(
        server,
        json!({"site_id": site, "date_range": "day", "metrics": ["events"],
            "dimensions": [format!("event:props:{key}")],
            "filters": [["is", "event:name", [event]]]}),
    )
}

fn metric(addr: std::net::SocketAddr, line: &str) -> u64 {
    let body = http(addr, "GET", "/metrics", &[], b"").body;
    body.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line} in /metrics:\n{body}"))
}

fn dropped(addr: std::net::SocketAddr, reason: &str) -> u64 {
    metric(
        addr,
        &format!("tamis_hits_dropped_total{{reason=\"{reason}\"}} "),
    )
}

/// Every value of every String column of every table of `db` that holds
/// one of `needles`, as `table.column: value` lines.
fn stored_needles(ch: &ClickHouse, db: &str, needles: &[String]) -> Vec<String> {
    let columns = ch.query(&format!(
        "SELECT table, name FROM system.columns WHERE database = '{db}' AND type IN ('String', 'Nullable(String)', 'Array(String)') FORMAT TSV"
    ));
    let mut found = Vec::new();
    for line in columns.lines() {
        let Some((table, column)) = line.split_once('\t') else {
            continue;
        };
        let text = format!("toString({column})");
        let tests: Vec<String> = needles
            .iter()
            .map(|n| format!("position({text}, '{}') > 0", n.replace('\'', "\\'")))
            .collect();
        let hits = ch.query_in(
            db,
            &format!(
                "SELECT DISTINCT {text} FROM {table} WHERE {} FORMAT TSV",
                tests.join(" OR ")
            ),
        );
        found.extend(hits.lines().map(|v| format!("{table}.{column}: {v}")));
    }
    found
}

/// No client address and no tracker id anywhere tamis writes: ClickHouse
/// (every String column of the test database), the durable log folder
/// (every byte of every file) and tamis's stderr. `address` is the
/// client's: looked for as text everywhere, and as its 4 raw bytes in the
/// log folder.
fn assert_kept_nowhere(
    ch: &ClickHouse,
    db: &str,
    log_dir: &std::path::Path,
    stderr: &str,
    address: &str,
    ids: &[(String, String)],
) {
    let mut needles = ids.to_vec();
    needles.push(("the client address".into(), address.into()));
    let strings: Vec<String> = needles.iter().map(|(_, n)| n.clone()).collect();
    // The search finds what is there: the delivery marks are in several
    // tables.
    assert!(
        stored_needles(ch, db, &["tamis:delivered".to_string()]).len() > 1,
        "the search of ClickHouse's String columns found nothing at all"
    );
    let stored = stored_needles(ch, db, &strings);
    assert!(
        stored.is_empty(),
        "ClickHouse holds tracker ids or addresses:\n{}",
        stored.join("\n")
    );
    let mut bytes: Vec<(String, Vec<u8>)> = needles
        .iter()
        .map(|(label, n)| (label.clone(), n.as_bytes().to_vec()))
        .collect();
    bytes.push((
        format!("the client address {address} as 4 raw bytes"),
        address
            .split('.')
            .map(|o| o.parse::<u8>().expect("an IPv4 address"))
            .collect(),
    ));
    assert!(log_dir.is_dir(), "no log folder at {}", log_dir.display());
    let on_disk = journal::find_needles(log_dir, &bytes);
    assert!(
        on_disk.is_empty(),
        "the log folder holds:\n{}",
        on_disk.join("\n")
    );
    for (label, needle) in &needles {
        assert!(
            !stderr.contains(needle.as_str()),
            "tamis logged {label} ({needle}):\n{stderr}"
        );
    }
}

/// Issue 14's "done when": each tracker, unchanged, in a real browser or
/// in Node, is answered as its own server answers it and counted as
/// tamis counts a Plausible hit: pages, custom events and allowed props
/// through the stats API; GA4's Consent Mode denial counted without a
/// visitor; Umami's own opt-out sends nothing and Matomo's opt-out cookie
/// is dropped; none of the ids the trackers send, nor the client's
/// address, is kept anywhere.
#[test]
fn other_trackers_unchanged_are_counted_and_keep_no_identity() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("trackers");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db));
    let tamis = format!("http://{}", server.addr);

    let r = node("trackers.mjs", &["--tamis", &tamis]);
    let s = node(
        "server_trackers.mjs",
        &[
            "--tamis",
            &tamis,
            "--umami-website",
            UMAMI_SERVER,
            "--measurement-id",
            "G-SERV0003",
            "--user-agent",
            FIREFOX,
        ],
    );
    assert_eq!(
        (&r["umami_version"], &r["ga4mp_version"], &s["version"]),
        (&json!("2.10.0"), &json!("0.0.8"), &json!("0.4.0"))
    );
    assert_eq!(r["problems"], json!([]), "{r}");
    let sent = r["sent"].as_array().unwrap();
    let of = |visitor: &str| -> Vec<&Value> {
        sent.iter().filter(|e| e["visitor"] == visitor).collect()
    };

    // Umami: a JSON POST each (so a preflight before), answered 200 with
    // the constant token, which the tracker sends back from its second
    // hit on: the preflight allowed `x-umami-cache`, or that hit would
    // have failed.
    let umami = of("umami");
    let shape: Vec<(&Value, &Value, &Value, &Value, &Value)> = umami
        .iter()
        .map(|e| {
            (
                &e["method"],
                &e["content_type"],
                &e["umami_cache"],
                &e["status"],
                &e["dropped"],
            )
        })
        .collect();
    let (post, umami_json, ok) = (json!("POST"), json!("application/json"), json!(200));
    let (none, token) = (Value::Null, json!("tamis"));
    assert_eq!(
        shape,
        vec![
            (&post, &umami_json, &none, &ok, &none),
            (&post, &umami_json, &token, &ok, &none),
            (&post, &umami_json, &token, &ok, &none),
        ],
        "{r}"
    );
    let payloads: Vec<Value> = umami
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e["body"].as_str().unwrap()).unwrap()["payload"].clone()
        })
        .collect();
    let pages: Vec<(&Value, &Value)> = payloads.iter().map(|p| (&p["url"], &p["name"])).collect();
    assert_eq!(
        pages,
        vec![
            (&json!("/?ref=newsletter"), &Value::Null),
            (&json!("/spa/a"), &Value::Null),
            (&json!("/spa/a"), &json!("signup")),
        ],
        "{r}"
    );
    assert_eq!(
        payloads[2]["data"],
        json!({"plan": "pro", "email": "jean@example.com"})
    );
    assert_eq!(payloads[0]["website"], UMAMI_SITE);
    assert_eq!(r["umami_disabled_sent"], 0, "umami.disabled set: {r}");
    assert_eq!(
        r["umami_storage"],
        json!({"local": 0, "session": 0, "cookie": ""})
    );

    // ga4mp: two beacons, empty bodies, everything in the query string.
    let ga4mp = of("ga4mp");
    assert_eq!(ga4mp.len(), 2, "{r}");
    let mut names: Vec<&str> = ga4mp
        .iter()
        .map(|e| e["query"]["en"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["page_view", "signup"], "{r}");
    for e in &ga4mp {
        assert_eq!(
            (
                &e["method"],
                &e["path"],
                &e["body"],
                &e["status"],
                &e["dropped"]
            ),
            (&post, &json!("/g/collect"), &json!(""), &json!(204), &none),
            "{e}"
        );
        assert_eq!(e["query"]["cid"], r["ga4mp_client_id"], "{e}");
        assert_eq!(e["query"]["_uip"], r["identifiers"]["ga4mp_uip"], "{e}");
    }
    // gtag.js's batch by fetch (lines split by \r\n) and by sendBeacon
    // (by \n), both text/plain, both counted (below). The beacon's answer
    // is 204; the fetch is no-cors, whose answer the page only sees as
    // "opaque" (and Chromium reports as aborted to the test, once it has
    // withheld the opaque body).
    for (visitor, separator) in [("gtag", "\r\n"), ("gtag-denied", "\n")] {
        let e = of(visitor);
        assert_eq!(e.len(), 1, "{r}");
        assert_eq!(
            (&e[0]["method"], &e[0]["content_type"]),
            (&post, &json!("text/plain;charset=UTF-8")),
            "{}",
            e[0]
        );
        assert!(
            e[0]["body"].as_str().unwrap().contains(separator),
            "{}",
            e[0]
        );
    }
    assert_eq!(r["gtag_fetch"], "opaque", "{r}");
    assert_eq!(
        (
            &of("gtag-denied")[0]["status"],
            &of("gtag-denied")[0]["dropped"]
        ),
        (&json!(204), &none)
    );
    assert_eq!(r["gtag_beacon_queued"], true);

    // Matomo: the pageview beacon and the ping 204, the image a GIF, the
    // bulk request and the event by XHR with credentials 204, their CORS
    // answer accepted (the Origin echoed, credentials allowed: the
    // tracker's fallback to an image never ran), the opted-out visitor's
    // hit dropped.
    let matomo = of("matomo");
    let shape: Vec<(&str, &str, &Value, &Value, &Value)> = matomo
        .iter()
        .map(|e| {
            (
                e["method"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                &e["status"],
                &e["answer_type"],
                &e["dropped"],
            )
        })
        .collect();
    let (no_content, gif) = (json!(204), json!("image/gif"));
    assert_eq!(
        shape,
        vec![
            ("POST", "ping", &no_content, &none, &none),
            ("GET", "image", &ok, &gif, &none),
            ("POST", "xhr", &no_content, &none, &none),
            ("POST", "xhr", &no_content, &none, &none),
            ("POST", "ping", &no_content, &none, &none),
        ],
        "{r}"
    );
    assert_eq!(matomo[0]["query"]["send_image"], "0");
    assert_eq!(matomo[0]["body"], "");
    assert_eq!(matomo[1]["query"]["send_image"], "1");
    assert!(
        matomo[2]["body"]
            .as_str()
            .unwrap()
            .starts_with("{\"requests\":["),
        "{}",
        matomo[2]
    );
    let page_origin = format!("http://matomo.test:{}", r["page_port"]);
    for xhr in &matomo[2..4] {
        assert_eq!(
            (
                &xhr["content_type"],
                &xhr["allow_origin"],
                &xhr["allow_credentials"]
            ),
            (
                &json!("application/x-www-form-urlencoded; charset=UTF-8"),
                &json!(page_origin),
                &json!("true")
            ),
            "{xhr}"
        );
    }
    assert_eq!(r["matomo_image"], json!({"loaded": true, "width": 1}));
    assert_eq!(
        (
            &r["matomo_bulk_status"],
            &r["matomo_event_status"],
            &r["matomo_fallbacks"]
        ),
        (&json!(204), &json!(204), &json!(0))
    );
    // Without JavaScript: the image names no page, its Referer does.
    let noscript = of("matomo-noscript");
    assert_eq!(noscript.len(), 1, "{r}");
    assert_eq!(
        (
            &noscript[0]["method"],
            &noscript[0]["status"],
            &noscript[0]["answer_type"],
            &noscript[0]["referer"]
        ),
        (
            &json!("GET"),
            &ok,
            &gif,
            &json!(format!("{page_origin}/sans-js?q=1"))
        ),
        "{r}"
    );
    assert_eq!(r["matomo_noscript_width"], 1);
    let optout = of("matomo-optout");
    assert_eq!(optout.len(), 1, "{r}");
    assert_eq!(
        (&optout[0]["status"], &optout[0]["dropped"]),
        (&no_content, &json!("opt_out")),
        "{}",
        optout[0]
    );
    assert!(
        optout[0]["cookie"]
            .as_str()
            .unwrap_or("")
            .contains("piwik_ignore"),
        "{}",
        optout[0]
    );

    // Server side: @umami/node's track(name, data) and track(object), the
    // Measurement Protocol; identify refused (tamis keeps no identity).
    assert_eq!(
        s["track_name"],
        json!({"status": 200, "body": "tamis", "dropped": null}),
        "{s}"
    );
    assert_eq!(
        s["track_object"],
        json!({"status": 200, "body": "tamis", "dropped": null}),
        "{s}"
    );
    assert_eq!(s["identify"]["status"], 400, "{s}");
    assert_eq!(
        s["mp"],
        json!({"status": 204, "body": "", "dropped": null}),
        "{s}"
    );
    // With its own User-Agent (`Mozilla/5.0 Umami/<node version>`, no
    // browser in it) a hit is counted too, as Umami counts it.
    assert_eq!(
        s["track_default_agent"],
        json!({"status": 200, "body": "tamis", "dropped": null}),
        "{s}"
    );

    // --- what the stats API answers --------------------------------------
    let totals = |site: &str| {
        ask(&server, json!({"site_id": site, "date_range": "day", "metrics": ["visitors", "pageviews", "events"]}))[0]["metrics"].clone()
    };
    // Every hit the trackers sent that was not dropped is in.
    wait_until(
        Duration::from_secs(30),
        "every tracker's hits counted",
        || {
            totals("umami.test") == json!([1, 2, 3])
                && totals("ga4.test")[2] == 2
                && totals("gtag.test")[1] == 2
                && totals("matomo.test")[2] == 6
                && totals("server.test")[2] == 5
        },
    );

    // Umami: the page as the tracker named it (query left out), the
    // pushState navigation, the click's event with its allowed prop.
    assert_eq!(
        breakdown(
            &server,
            "umami.test",
            &["visitors", "pageviews"],
            "event:page"
        ),
        json!([
            {"dimensions": ["/"], "metrics": [1, 1]},
            {"dimensions": ["/spa/a"], "metrics": [1, 1]},
        ])
    );
    assert_eq!(
        breakdown(&server, "umami.test", &["visitors", "events"], "event:name"),
        json!([
            {"dimensions": ["pageview"], "metrics": [1, 2]},
            {"dimensions": ["signup"], "metrics": [1, 1]},
        ])
    );
    assert_eq!(
        prop(&server, "umami.test", "plan", "signup"),
        json!([{"dimensions": ["pro"], "metrics": [1]}])
    );

    // ga4mp: page_view a pageview of the page, signup with its params.
    assert_eq!(totals("ga4.test"), json!([1, 1, 2]));
    assert_eq!(
        breakdown(
            &server,
            "ga4.test",
            &["visitors", "pageviews"],
            "event:page"
        ),
        json!([{"dimensions": ["/aide"], "metrics": [1, 1]}])
    );
    assert_eq!(
        prop(&server, "ga4.test", "plan", "signup"),
        json!([{"dimensions": ["pro"], "metrics": [1]}])
    );
    assert_eq!(
        prop(&server, "ga4.test", "seats", "signup"),
        json!([{"dimensions": ["3"], "metrics": [1]}])
    );

    // gtag.js: the granted batch (page_view, signup, an engagement that is
    // no event) and the denied one, counted as a pageview without a
    // visitor (the site's on_denied = "anonymous", the default).
    assert_eq!(totals("gtag.test"), json!([1, 2, 3]));
    assert_eq!(
        breakdown(
            &server,
            "gtag.test",
            &["visitors", "pageviews"],
            "event:page"
        ),
        json!([
            {"dimensions": ["/accueil"], "metrics": [1, 1]},
            {"dimensions": ["/refus"], "metrics": [0, 1]},
        ])
    );
    assert_eq!(
        ch.query_in(&db, "SELECT consent, sumMerge(pageviews), uniqIfMerge(visitors) FROM traffic_hourly WHERE site_id = 'gtag.test' AND event = 'pageview' GROUP BY consent ORDER BY consent FORMAT TSV"),
        "denied\t1\t0\ngranted\t1\t1\n"
    );
    assert_eq!(
        prop(&server, "gtag.test", "plan", "signup"),
        json!([{"dimensions": ["famille"], "metrics": [1]}])
    );
    assert_eq!(
        prop(&server, "gtag.test", "seats", "signup"),
        json!([{"dimensions": ["2"], "metrics": [1]}])
    );

    // Matomo: three pageviews (beacon, image, image without JavaScript),
    // the event with its category as name, the outlink and the download as
    // Plausible names them; the ping and the opted-out hit not counted.
    assert_eq!(totals("matomo.test"), json!([1, 3, 6]));
    assert_eq!(
        breakdown(
            &server,
            "matomo.test",
            &["visitors", "pageviews"],
            "event:page"
        ),
        json!([
            {"dimensions": ["/aide"], "metrics": [1, 1]},
            {"dimensions": ["/galerie"], "metrics": [1, 1]},
            {"dimensions": ["/sans-js"], "metrics": [1, 1]},
        ])
    );
    assert_eq!(
        breakdown(&server, "matomo.test", &["events"], "event:name"),
        json!([
            {"dimensions": ["File Download"], "metrics": [1]},
            {"dimensions": ["Formulaires"], "metrics": [1]},
            {"dimensions": ["Outbound Link: Click"], "metrics": [1]},
            {"dimensions": ["pageview"], "metrics": [3]},
        ])
    );
    for (key, value) in [("action", "Envoi"), ("name", "Permis"), ("value", "2")] {
        assert_eq!(
            prop(&server, "matomo.test", key, "Formulaires"),
            json!([{"dimensions": [value], "metrics": [1]}]),
            "{key}"
        );
    }
    assert_eq!(
        prop(&server, "matomo.test", "url", "Outbound Link: Click"),
        json!([{"dimensions": ["https://ailleurs.example/x"], "metrics": [1]}])
    );
    assert_eq!(
        prop(&server, "matomo.test", "url", "File Download"),
        json!([{"dimensions": [format!("{page_origin}/rapport-annuel.pdf")], "metrics": [1]}])
    );

    // Server side: @umami/node's event on `/`, its object form a pageview
    // of its url; the Measurement Protocol's page_view and signup.
    assert_eq!(
        breakdown(&server, "server.test", &["pageviews"], "event:page"),
        json!([
            {"dimensions": ["/"], "metrics": [0]},
            {"dimensions": ["/commande/merci"], "metrics": [1]},
            {"dimensions": ["/rapports/annuel"], "metrics": [1]},
        ])
    );
    // Two visitors: the browser the back end passed on, and Umami's own
    // User-Agent; 2 pageviews, 2 exports and a signup (which has no
    // `format`).
    assert_eq!(totals("server.test"), json!([2, 2, 5]));
    assert_eq!(
        breakdown(&server, "server.test", &["events"], "event:props:format"),
        json!([
            {"dimensions": ["(none)"], "metrics": [1]},
            {"dimensions": ["csv"], "metrics": [1]},
            {"dimensions": ["pdf"], "metrics": [1]},
        ])
    );
    assert_eq!(
        prop(&server, "server.test", "plan", "signup"),
        json!([{"dimensions": ["team"], "metrics": [1]}])
    );

    // Dropped, by reason: Matomo's opt-out cookie, and @umami/node's
    // identify as invalid; nothing else any tracker sent.
    let reasons = [
        "opt_out",
        "invalid",
        "unknown_site",
        "bot",
        "event_not_allowed",
    ];
    assert_eq!(
        reasons.map(|reason| dropped(server.admin, reason)),
        [1, 1, 0, 0, 0]
    );

    // --- nothing identifying kept anywhere -------------------------------
    let ids = &r["identifiers"];
    let mut needles: Vec<(String, String)> = vec![(
        "ga4mp's client id".into(),
        r["ga4mp_client_id"].as_str().unwrap().into(),
    )];
    for (name, value) in ids
        .as_object()
        .unwrap()
        .iter()
        .chain(s["identifiers"].as_object().unwrap())
    {
        needles.push((name.clone(), value.as_str().unwrap().to_string()));
    }
    needles.push((
        "an e-mail sent as a prop or identity".into(),
        "jean@example.com".into(),
    ));
    // Each of them did reach tamis, from the address looked for.
    let sent_text = format!("{}{}", r["sent"], serde_json::to_string(&s).unwrap());
    for (label, needle) in &needles {
        assert!(
            sent_text.contains(needle.as_str()),
            "{label} ({needle}) was never sent"
        );
    }
    assert_eq!(r["relayed_from"], json!([BROWSER_ADDRESS]));
    let log_dir = server.log_dir();
    assert_kept_nowhere(
        ch,
        &db,
        &log_dir,
        &server.log_text(),
        BROWSER_ADDRESS,
        &needles,
    );
    let stderr = server.stop();
    assert_kept_nowhere(ch, &db, &log_dir, &stderr, BROWSER_ADDRESS, &needles);
}

/// One request to a tracker endpoint from a visitor behind the test's
/// trusted proxy.
fn send(
    server: &Binary,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut all = vec![("User-Agent", FIREFOX), ("X-Forwarded-For", "203.0.113.77")];
    all.extend_from_slice(headers);
    http(server.addr, method, path, &all, body.as_bytes())
}

/// What each tracker endpoint does with what tamis must not count or
/// must refuse: GPC and DNT dropped as opt-outs before anything else (as
/// `POST /api/event` does), ids no site has dropped as unknown sites,
/// bad requests refused with the field named, each counted by reason in
/// /metrics and ClickHouse's `dropped_hourly`; the preflights the
/// browser trackers need; and, again, no address or id kept.
#[test]
fn tracker_endpoints_drop_opt_outs_and_unknown_ids_and_refuse_bad_input() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("trackers_edge");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db));
    let umami = |website: &str| {
        format!(
            r#"{{"type":"event","payload":{{"website":"{website}","hostname":"umami.test","url":"/","language":"fr-CA"}}}}"#
        )
    };
    let gtag = |tid: &str| {
        format!("/g/collect?v=2&tid={tid}&cid=555.666&en=page_view&dl=https%3A%2F%2Fgtag.test%2F")
    };
    let mp_body = r#"{"client_id":"777.888","events":[{"name":"page_view","params":{"page_location":"https://server.test/"}}]}"#;
    let matomo = |idsite: u32| {
        format!("/matomo.php?idsite={idsite}&rec=1&url=https%3A%2F%2Fmatomo.test%2F&_id=abcdefabcdefabcd&send_image=0")
    };

    // (request, expected status, expected X-Tamis-Dropped)
    type Case<'a> = (
        &'a str,
        String,
        String,
        &'a [(&'a str, &'a str)],
        u16,
        Option<&'a str>,
    );
    let gpc: &[(&str, &str)] = &[("Sec-GPC", "1")];
    let dnt: &[(&str, &str)] = &[("DNT", "1")];
    let json_type: &[(&str, &str)] = &[("Content-Type", "application/json")];
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/send".into(),
            umami(UMAMI_SITE),
            gpc,
            200,
            Some("opt_out"),
        ),
        (
            "POST",
            gtag("G-GTAG0002"),
            String::new(),
            gpc,
            204,
            Some("opt_out"),
        ),
        (
            "POST",
            "/mp/collect?measurement_id=G-SERV0003".into(),
            mp_body.into(),
            dnt,
            204,
            Some("opt_out"),
        ),
        ("GET", matomo(7), String::new(), dnt, 204, Some("opt_out")),
        (
            "POST",
            "/api/send".into(),
            umami("11111111-2222-4333-8444-555555555555"),
            json_type,
            200,
            Some("unknown_site"),
        ),
        (
            "GET",
            gtag("G-NOSUCH999"),
            String::new(),
            &[],
            204,
            Some("unknown_site"),
        ),
        (
            "POST",
            "/mp/collect?measurement_id=G-NOSUCH999".into(),
            mp_body.into(),
            json_type,
            204,
            Some("unknown_site"),
        ),
        (
            "GET",
            matomo(99),
            String::new(),
            &[],
            204,
            Some("unknown_site"),
        ),
        // Bad input: refused with the field, counted as invalid.
        (
            "POST",
            "/api/send".into(),
            "{\"type\":\"event\"".into(),
            json_type,
            400,
            None,
        ),
        (
            "POST",
            "/api/send".into(),
            r#"{"type":"identify","payload":{"website":"x","data":{"email":"jean@example.com"}}}"#
                .into(),
            json_type,
            400,
            None,
        ),
        (
            "GET",
            "/g/collect?v=2&en=page_view&dl=https%3A%2F%2Fgtag.test%2F".into(),
            String::new(),
            &[],
            400,
            None,
        ),
        (
            "POST",
            "/mp/collect?measurement_id=G-SERV0003".into(),
            "[1,".into(),
            json_type,
            400,
            None,
        ),
        (
            "GET",
            "/matomo.php?idsite=7&url=https%3A%2F%2Fmatomo.test%2F".into(),
            String::new(),
            &[],
            400,
            None,
        ),
        (
            "GET",
            "/piwik.php?idsite=abc&rec=1&url=https%3A%2F%2Fmatomo.test%2F".into(),
            String::new(),
            &[],
            400,
            None,
        ),
    ];
    for (method, path, body, headers, status, reason) in &cases {
        let r = send(&server, method, path, headers, body);
        assert_eq!(
            (r.status, r.header("x-tamis-dropped")),
            (*status, *reason),
            "{method} {path} {body}: {}",
            r.body
        );
        if *status == 400 {
            assert!(
                r.json()["errors"].is_object(),
                "{method} {path}: {}",
                r.body
            );
        }
    }
    // Wrong methods: 405 naming the allowed ones.
    for (method, path, allow) in [
        ("GET", "/api/send", "POST, OPTIONS"),
        ("GET", "/mp/collect", "POST, OPTIONS"),
        ("PUT", "/g/collect", "GET, POST, OPTIONS"),
        ("DELETE", "/matomo.php", "GET, POST, OPTIONS"),
    ] {
        let r = send(&server, method, path, &[], "");
        assert_eq!(
            (r.status, r.header("allow")),
            (405, Some(allow)),
            "{method} {path}"
        );
    }
    // Too large a body: 413 before parsing.
    let big = "en=page_view\n".repeat(6000);
    assert_eq!(
        send(&server, "POST", &gtag("G-GTAG0002"), &[], &big).status,
        413
    );

    // The preflights: Umami's tracker asks for `x-umami-cache` (any
    // origin may send it); GA4's and Matomo's answers name the origin
    // and allow credentials, which their trackers send.
    let origin = "https://www.example.org";
    let r = send(
        &server,
        "OPTIONS",
        "/api/send",
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-umami-cache",
            ),
        ],
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("x-umami-cache") && allowed.contains("content-type"),
        "{allowed}"
    );
    for path in ["/g/collect", "/mp/collect", "/matomo.php", "/piwik.php"] {
        let r = send(
            &server,
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
            ],
            "",
        );
        assert_eq!(
            (
                r.status,
                r.header("access-control-allow-origin"),
                r.header("access-control-allow-credentials")
            ),
            (204, Some(origin), Some("true")),
            "{path}"
        );
    }

    // Counted by reason, in /metrics and in ClickHouse.
    assert_eq!(
        (
            dropped(server.admin, "opt_out"),
            dropped(server.admin, "unknown_site"),
            dropped(server.admin, "invalid")
        ),
        (4, 4, 11),
        "413 and 405 count as invalid too"
    );
    let by_reason = || {
        ch.query_in(&db, "SELECT reason, sum(hits) FROM dropped_hourly WHERE reason NOT LIKE 'tamis:%' GROUP BY reason ORDER BY reason FORMAT TSV")
    };
    let expected = "invalid\t11\nopt_out\t4\nunknown_site\t4\n";
    if !common::rig::eventually(Duration::from_secs(20), || by_reason() == expected) {
        assert_eq!(by_reason(), expected, "dropped_hourly");
    }
    assert_eq!(
        ch.query_in(&db, "SELECT sumMerge(pageviews) FROM traffic_hourly"),
        "0\n",
        "nothing counted"
    );

    let needles: Vec<(String, String)> = [
        ("gtag's client id", "555.666"),
        ("the Measurement Protocol's client id", "777.888"),
        ("Matomo's visitor id", "abcdefabcdefabcd"),
        ("an identify call's e-mail", "jean@example.com"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let log_dir = server.log_dir();
    let stderr = server.stop();
    assert_kept_nowhere(ch, &db, &log_dir, &stderr, "203.0.113.77", &needles);
}
