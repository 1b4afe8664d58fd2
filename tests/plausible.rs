//! Conformance with Plausible: case by case, what Plausible answers (with
//! the Plausible test or source it comes from, in `plausible/analytics`)
//! and a check that tamis answers the same, then what tamis counted, read
//! through the stats API with an exact-disclosure token (and, for props,
//! in ClickHouse). Differences kept by design are listed in the README
//! ("Differences from Plausible") and named here where a case meets one.
//! Real ClickHouse, the real tamis binary.
//!
//! Sources, by the short names the cases use:
//! - `request_test`: `test/plausible/ingestion/request_test.exs`
//! - `controller_test`: `test/plausible_web/controllers/api/external_controller_test.exs`
//!   (`describe "POST /api/event"` unless said otherwise)
//! - `request.ex`: `lib/plausible/ingestion/request.ex`
//! - `system_controller`: `lib/plausible_web/controllers/api/system_controller.ex`
//!   (`readiness`, which `lib/plausible_web/router.ex` serves at `/api/health`)

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One Events API case: the body sent, and what Plausible answers.
struct Case {
    /// Source, test name.
    source: &'static str,
    body: String,
    /// Plausible's status.
    status: u16,
    /// Plausible's whole body for a refusal (`{"errors": …}`); `None` for
    /// 202, whose body is "ok".
    errors: Option<Value>,
}

fn accepted(source: &'static str, body: Value) -> Case {
    Case {
        source,
        body: body.to_string(),
        status: 202,
        errors: None,
    }
}

fn refused(source: &'static str, body: String, field: &str, reason: &str) -> Case {
    Case {
        source,
        body,
        status: 400,
        errors: Some(json!({ "errors": { field: [reason] } })),
    }
}

/// A custom event on example.org carrying `props`.
fn event(name: &str, props: Value) -> Value {
    json!({"n": name, "u": "https://example.org/", "d": "example.org", "p": props})
}

const PROPS_TOO_LONG: &str = "keys should have at most 300 bytes and values 2000 bytes";

fn cases() -> Vec<Case> {
    let thirty_plus: serde_json::Map<String, Value> = (1..=50)
        .map(|i| (format!("k{i:02}"), json!("foo")))
        .collect();
    vec![
        accepted(
            "controller_test, \"records the event and session\"",
            json!({"domain": "example.org", "name": "pageview", "url": "https://example.org/recorded",
                   "referrer": "http://m.facebook.com/"}),
        ),
        Case {
            source: "controller_test, \"returns error if JSON cannot be parsed\" (400; the body is request_test's \"request cannot be built from non-json payload\": an error on `request`)",
            body: String::new(),
            status: 400,
            errors: None,
        },
        Case {
            source: "request_test, \"malicious input, technically valid json\"",
            body: "\"<script>\"".to_string(),
            status: 400,
            errors: None,
        },
        refused(
            "controller_test, \"responds 400 when required fields are missing\"",
            json!({"domain": "example.org", "name": "pageview"}).to_string(),
            "url",
            "is required",
        ),
        refused(
            "controller_test, \"responds 400 with errors when domain is missing\"",
            json!({"domain": null, "url": "about:config", "name": "pageview"}).to_string(),
            "domain",
            "can't be blank",
        ),
        refused(
            "request_test, \"returns validation error when using data uris\"",
            json!({"name": "pageview", "domain": "example.org",
                   "url": "data:text/html,%3Cscript%3Ealert%28%27hi%27%29%3B%3C%2Fscript%3E"})
            .to_string(),
            "url",
            "scheme is not allowed",
        ),
        refused(
            "request_test, \"returns validation error when url is too long\"",
            json!({"name": "pageview", "domain": "example.org",
                   "url": format!("https://example.org/{}", "a".repeat(5000))})
            .to_string(),
            "url",
            "must be a valid url",
        ),
        refused(
            "request_test, \"returns validation error when event name is too long\" (the message as traverse_errors fills %{count})",
            json!({"name": "a".repeat(500), "domain": "example.org", "url": "https://example.org/"})
                .to_string(),
            "event_name",
            "should be at most 120 character(s)",
        ),
        refused(
            "request_test, \"returns validation error when event name is blank\"",
            json!({"name": null, "domain": "example.org", "url": "https://example.org/"})
                .to_string(),
            "event_name",
            "can't be blank",
        ),
        refused(
            "request_test, \"returns validation error when event name cannot be cast to string\"",
            json!({"name": ["list", "of", "things"], "domain": "example.org", "url": "https://example.org/"})
                .to_string(),
            "event_name",
            "is invalid",
        ),
        refused(
            "request_test, \"returns validation error when props keys are too long\"",
            event("pageview", json!({ "a".repeat(500): "abc" })).to_string(),
            "props",
            PROPS_TOO_LONG,
        ),
        refused(
            "request_test, \"returns validation error when props values are too long\"",
            event("pageview", json!({"abc": "a".repeat(2500)})).to_string(),
            "props",
            PROPS_TOO_LONG,
        ),
        refused(
            "request.ex, put_engagement_fields (engagement without `sd` or `e`)",
            json!({"n": "engagement", "u": "https://example.org/", "d": "example.org"}).to_string(),
            "event_name",
            "engagement event requires a valid integer value for at least one of 'sd' or 'e' fields",
        ),
        // Accepted leniently; what is kept is checked after the cases.
        accepted(
            "request_test, \"trims prop list to 30 items when sending too many items\" (a pageview there: tamis keeps props of custom events only)",
            event("Thirty", Value::Object(thirty_plus)),
        ),
        accepted(
            "controller_test, \"casts custom props to string\"",
            event("Casts", json!({"bool_test": true, "number_test": 12})),
        ),
        accepted(
            "controller_test, \"filters out bad props\"",
            // Elixir's `nil: false` is the key "" (`to_string(nil)`).
            event("BadProps", json!({"false": null, "": false, "good": true,
                                      "      ": "    ", "    ": "value", "key": "    "})),
        ),
        accepted(
            "controller_test, \"ignores malformed custom props\"",
            event("Malformed", json!("\"show-more:button\"")),
        ),
        accepted(
            "controller_test, \"can send props stringified\"",
            event("Stringified", json!(json!({"number_test": 12}).to_string())),
        ),
        accepted(
            "controller_test, \"ignores custom prop with array value\"",
            event("ArrayValue", json!(json!({"wat": ["some-thing"], "other": "key"}).to_string())),
        ),
        accepted(
            "controller_test, \"ignores custom prop with map value\"",
            event("MapValue", json!(json!({"foo": {"bar": "baz"}, "other_key": 1}).to_string())),
        ),
        accepted(
            "controller_test, \"ignores custom prop with empty string value\"",
            event("EmptyValue", json!(json!({"foo": "", "other_key": true}).to_string())),
        ),
        accepted(
            "controller_test, \"ignores custom prop with nil value\"",
            event("NilValue", json!(json!({"foo": null, "other_key": true}).to_string())),
        ),
        accepted(
            "request_test, \"request can be built with numeric event name\"",
            json!({"n": 404, "d": "example.org", "u": "https://example.org/missing"}),
        ),
        accepted(
            "request_test, \"request can be built from URL alone\"",
            json!({"name": "pageview", "url": "https://www.example.org/url-alone"}),
        ),
        accepted(
            "request_test, \"truncates referrer when too long\"",
            json!({"name": "pageview", "domain": "example.org", "url": "https://example.org/long-referrer",
                   "referrer": "a".repeat(2500)}),
        ),
        accepted(
            "controller_test, \"records hash when in hash mode\" (a `#/route` here: tamis keeps routes only, and only for sites with hash_routing)",
            json!({"n": "pageview", "u": "https://www.example.org/app#/page-a", "d": "example.org", "h": 1}),
        ),
        accepted(
            "controller_test, \"does not record hash when hash mode is 0\"",
            json!({"n": "pageview", "u": "https://www.example.org/zero#/page-a", "d": "example.org", "h": 0}),
        ),
    ]
}

const EVENTS: &[&str] = &[
    "Thirty",
    "Casts",
    "BadProps",
    "Malformed",
    "Stringified",
    "ArrayValue",
    "MapValue",
    "EmptyValue",
    "NilValue",
    "404",
];

#[test]
fn events_api_answers_as_plausible() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("plausible");
    let scratch = Scratch::new();
    let names: Vec<String> = EVENTS.iter().map(|e| format!("\"{e}\"")).collect();
    let mut keys: Vec<String> = (1..=50).map(|i| format!("\"k{i:02}\"")).collect();
    keys.extend(
        [
            "bool_test",
            "number_test",
            "good",
            "nil",
            "false",
            "key",
            "wat",
            "other",
            "foo",
            "other_key",
        ]
        .map(|k| format!("\"{k}\"")),
    );
    let site_extra = format!(
        "k_threshold = 1\nhash_routing = true\nevent_names = [{}]\nprop_keys = [{}]",
        names.join(", "),
        keys.join(", ")
    );
    let server = Binary::serve(&scratch, &config(ch, &db, None, &site_extra));

    let cases = cases();
    for (i, case) in cases.iter().enumerate() {
        // A visitor of its own per case: nothing hangs on sessions.
        let r = send_hit(
            server.addr,
            &format!("100.70.{i}.1"),
            FIREFOX,
            &case.body,
            &[],
        );
        assert_eq!(r.status, case.status, "{}: {}", case.source, r.body);
        match (&case.errors, case.status) {
            (Some(errors), _) => assert_eq!(&r.json(), errors, "{}", case.source),
            (None, 202) => assert_eq!(r.body, "ok", "{}", case.source),
            // Plausible's tests pin the status and the field only.
            (None, _) => assert!(
                r.json()["errors"]["request"][0].is_string(),
                "{}",
                case.source
            ),
        }
        assert_eq!(
            r.header("x-tamis-dropped"),
            None,
            "{}: every accepted case is counted",
            case.source
        );
    }

    let pageviews = cases
        .iter()
        .filter(|c| c.status == 202 && c.body.contains("\"pageview\""))
        .count();
    wait_until(Duration::from_secs(15), "every hit written", || {
        http(server.admin, "GET", "/metrics", &[], b"")
            .body
            .contains("tamis_log_backlog_hits 0\n")
            && ch.query_in(
                &db,
                "SELECT sumMerge(pageviews) FROM traffic_hourly WHERE event != 'tamis:delivered'",
            ) == format!("{pageviews}\n")
    });

    // Pages, with the exact token: the hash route only with `h: 1`; the
    // domain taken from the URL (www. left out); the long referrer cut, not
    // refused.
    let r = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": "day", "metrics": ["pageviews"],
               "dimensions": ["event:page"], "order_by": [["event:page", "asc"]]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Pages of the custom events are listed too, with no pageviews.
    let viewed: Vec<Value> = r.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|row| row["metrics"][0] != json!(0))
        .cloned()
        .collect();
    assert_eq!(
        json!(viewed),
        json!([
            {"dimensions": ["/app#/page-a"], "metrics": [1]},
            {"dimensions": ["/long-referrer"], "metrics": [1]},
            {"dimensions": ["/recorded"], "metrics": [1]},
            {"dimensions": ["/url-alone"], "metrics": [1]},
            {"dimensions": ["/zero"], "metrics": [1]},
        ]),
        "{}",
        r.body
    );
    // Custom events, the numeric name as its text.
    let r = stats(
        server.addr,
        TOKEN,
        json!({"site_id": "example.org", "date_range": "day", "metrics": ["events"],
               "dimensions": ["event:name"], "filters": [["is", "event:name", EVENTS]]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let mut counted: Vec<(String, Value)> = r.json()["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|row| {
            (
                row["dimensions"][0]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                row["metrics"][0].clone(),
            )
        })
        .collect();
    counted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, Value)> =
        EVENTS.iter().map(|e| (e.to_string(), json!(1))).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(counted, expected, "{}", r.body);

    // Props as Plausible keeps them (then tamis's allow-list, which lists
    // every key sent here).
    // An event without one of the site's keys is counted under `(none)`
    // for that key (Plausible's `(none)` row of a property breakdown):
    // a body whose props are all left out has only such rows.
    let malformed = ch.query_in(
        &db,
        "SELECT countIf(prop_value != '(none)'), count() FROM props_hourly \
         WHERE site_id = 'example.org' AND event = 'Malformed' FORMAT TSV",
    );
    let (kept, rows) = malformed.trim().split_once('\t').expect("two counts");
    assert_eq!(kept, "0", "Malformed keeps no props");
    assert!(
        rows.parse::<u64>().unwrap_or(0) > 0,
        "Malformed has its (none) rows"
    );
    let props = ch.query_in(
        &db,
        "SELECT event, prop_key, prop_value FROM props_hourly \
         WHERE site_id = 'example.org' AND event NOT IN ('Thirty', 'tamis:delivered') \
         AND prop_value != '(none)' \
         GROUP BY event, prop_key, prop_value ORDER BY event, prop_key FORMAT TSV",
    );
    assert_eq!(
        props,
        "ArrayValue\tother\tkey\n\
         BadProps\tgood\ttrue\n\
         Casts\tbool_test\ttrue\n\
         Casts\tnumber_test\t12\n\
         EmptyValue\tother_key\ttrue\n\
         MapValue\tother_key\t1\n\
         NilValue\tother_key\ttrue\n\
         Stringified\tnumber_test\t12\n",
        "props kept as Plausible keeps them"
    );
    assert_eq!(
        ch.query_in(
            &db,
            "SELECT uniqExact(prop_key) FROM props_hourly \
             WHERE event = 'Thirty' AND prop_value != '(none)'"
        ),
        "30\n",
        "50 props sent, 30 kept"
    );

    // GET /api/health (system_controller, readiness; controller_test,
    // describe "GET /api/health", "returns 200 OK"): 200 and "ok" for
    // ClickHouse. Plausible also names postgres and sites_cache, which
    // tamis does not have; it names its ingestion instead.
    let r = http(server.addr, "GET", "/api/health", &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"clickhouse": "ok", "ingest": "ok"}));
    assert_eq!(
        http(server.addr, "POST", "/api/health", &[], b"").status,
        405
    );
    server.stop();
}

/// `GET /api/health` when ClickHouse goes away and comes back: 500 naming
/// ClickHouse, then 200 again. Its ping is reused for a second, so a flood
/// of health checks on the public listener sends ClickHouse at most one
/// query a second; the answer may lag ClickHouse by that second.
#[test]
fn api_health_says_when_clickhouse_is_down_and_back() {
    let mut ch = ClickHouse::start();
    let db = ch.create_database("health");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(&ch, &db, None, ""));
    let health = || http(server.addr, "GET", "/api/health", &[], b"");
    assert_eq!(health().status, 200);
    ch.stop(common::clickhouse::Stop::Kill);
    wait_until(
        Duration::from_secs(10),
        "health to say ClickHouse is down",
        || health().status == 500,
    );
    assert_eq!(
        health().json(),
        json!({"clickhouse": "error", "ingest": "ok"}),
        "hits are still accepted: they wait in the log"
    );
    ch.restart();
    wait_until(
        Duration::from_secs(30),
        "health to say ClickHouse is back",
        || health().status == 200,
    );
    server.stop();
}
