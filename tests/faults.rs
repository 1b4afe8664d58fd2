//! Delivery under the faults a real deployment sees between tamis and
//! ClickHouse, injected for real: ClickHouse killed (SIGKILL) at exact
//! points of a batch's delivery, connections cut mid-request, answers that
//! come too late, connections reset after the request was applied, rows
//! ClickHouse refuses, and tables ClickHouse refuses to write at all.
//! Nothing is mocked: a real ClickHouse, the real tamis binary, real HTTP
//! load on loopback, and a TCP proxy between the two
//! (`common::proxy::Proxy`) that picks the moment of each fault.
//!
//! Every scenario ends with the promise of `durability.rs`: every hit
//! answered 202 is counted exactly once (an unanswered one 0 or 1 times,
//! never twice), the backlog drains, and the log folder holds nothing of the
//! clients (`common::rig::Rig::verify`, `Rig::check_log_private`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::clickhouse::Stop;
use common::proxy::{self, Fault, Matcher, Part, Rule, Side};
use common::rig::*;
use common::*;

/// Bounded wait for the proxy to see the request a round waits for; at
/// 300 hits/s tamis sends a batch every flush interval.
const SEEN_WITHIN: Duration = Duration::from_secs(20);

/// Flushing often makes many small batches, hence many chances for a
/// fault to fall on the request it is meant for.
fn frequent_flushes() -> Knobs {
    Knobs {
        flush_interval_ms: 100,
        ..Knobs::default()
    }
}

/// tamis's inserts carry a query id `tamis-…` (group inserts
/// `tamis-{journal}-{kind}-{site}-{hour}-{to}`, receipts
/// `tamis-{journal}-{end_seq}-receipt`) in the query string; its reads do not.
const INSERT: &str = "query_id=tamis-";
const RECEIPT: &str = "-receipt";

/// A group insert that follows another group insert: the second or a later
/// part of a batch (two sites in different time zones make every batch at
/// least two groups), sent while the batch's first part is already applied.
fn later_part_of_a_batch() -> Matcher {
    let mut after_a_group = false;
    Matcher::new(move |line, _| {
        if !line.contains(INSERT) {
            return false;
        }
        let group = !line.contains(RECEIPT);
        let later = group && after_a_group;
        after_a_group = group;
        later
    })
}

/// How a held request goes on once ClickHouse is killed.
#[derive(Clone, Copy)]
enum Release {
    /// The rest of the request and the answer, if any (there is none: the
    /// server is gone).
    Forward,
    /// The client's connection is reset: the answer is lost with the server.
    DropAnswer,
}

/// One round: arms `rule`, waits until the proxy holds the request,
/// kills ClickHouse, releases the request, and brings ClickHouse back after
/// a moment. Whether the request was seen.
fn kill_clickhouse_while_held(rig: &mut Rig, round: usize, rule: Rule, release: Release) -> bool {
    rig.proxy().arm(rule);
    let held = rig.proxy().wait_held(SEEN_WITHIN);
    rig.check(held, || {
        format!(
            "round {round}: the proxy held no request within {SEEN_WITHIN:?} ({} matched)",
            rig.proxy().matched()
        )
    });
    rig.proxy().disarm();
    if !held {
        return false;
    }
    rig.ch_mut().stop(Stop::Kill);
    match release {
        Release::Forward => rig.proxy().release(),
        Release::DropAnswer => rig.proxy().release_without_answer(),
    }
    std::thread::sleep(Duration::from_millis(700));
    rig.ch_mut().restart();
    // Let tamis find its way back and deliver a few batches normally.
    std::thread::sleep(Duration::from_millis(1_500));
    true
}

/// Each kill made at least the held insert fail: otherwise the fault fell
/// beside the request it was meant for.
fn check_inserts_failed(rig: &Rig, kills: usize) {
    let failures = rig.metric("tamis_insert_failures_total");
    rig.check(failures.is_some_and(|n| n >= kills as f64), || {
        format!("{kills} kills but tamis_insert_failures_total = {failures:?}")
    });
}

/// Lines of tamis's log saying an insert whose outcome was unclear was
/// found applied and not sent again.
fn found_applied(rig: &Rig) -> usize {
    rig.tamis.log_text().matches("found applied").count()
}

#[test]
fn proxy_finds_where_requests_and_answers_end() {
    let check = |bytes: &str, side: Side, expected: Option<usize>| {
        assert_eq!(
            proxy::message_end(bytes.as_bytes(), side),
            expected,
            "{bytes:?} as {side:?}"
        );
    };
    let head = "POST /?query_id=tamis-x HTTP/1.1\r\nHost: h\r\n";
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
    let body = "5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n";
    check(
        &format!("{chunked}{body}"),
        Side::Request,
        Some(chunked.len() + body.len()),
    );
    check(
        &format!("{chunked}{body}GET / HTTP/1.1\r\n"),
        Side::Request,
        Some(chunked.len() + body.len()),
    );
    // Without its terminator (or part of it) a chunked body is not over.
    check(&format!("{chunked}5\r\nhello\r\n"), Side::Request, None);
    check(
        &format!("{chunked}5\r\nhello\r\n0\r\n"),
        Side::Request,
        None,
    );
    check(&format!("{chunked}5\r\nhel"), Side::Request, None);
    let sized = format!("{head}Content-Length: 4\r\n\r\n");
    check(
        &format!("{sized}abcdXYZ"),
        Side::Request,
        Some(sized.len() + 4),
    );
    check(&format!("{sized}abc"), Side::Request, None);
    check(&format!("{head}\r\n"), Side::Request, Some(head.len() + 2));
    check("POST / HTTP/1.1\r\nHost: h", Side::Request, None);
    // An answer without a length ends with its connection.
    check(
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nOk.",
        Side::Answer,
        None,
    );
    check("HTTP/1.1 204 No Content\r\n\r\n", Side::Answer, Some(27));
    assert_eq!(proxy::chunks_len(body.as_bytes(), 1), Some(10));
    assert_eq!(proxy::chunks_len(body.as_bytes(), 2), Some(24));
    assert_eq!(proxy::chunks_len(body.as_bytes(), 9), Some(body.len()));
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";
    check(
        &format!("{answer}Ok."),
        Side::Answer,
        Some(answer.len() + 3),
    );
}

/// (a) ClickHouse killed between the parts of one batch: the second group
/// insert of a batch is held before it reaches ClickHouse, ClickHouse is
/// killed, the insert released (it fails), ClickHouse restarted. The first
/// part is in, the rest is not: tamis must complete the batch, not repeat it.
#[test]
fn clickhouse_killed_between_the_parts_of_a_batch() {
    let mut rig = Rig::own_via_proxy("kill_between_parts", frequent_flushes());
    let load = rig.load(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let rounds = 4;
    let mut kills = 0;
    for round in 0..rounds {
        let rule = Rule::new(later_part_of_a_batch(), Fault::Hold(Part::Nothing));
        kills += usize::from(kill_clickhouse_while_held(
            &mut rig,
            round,
            rule,
            Release::Forward,
        ));
    }
    let report = load.stop();
    check_inserts_failed(&rig, kills);
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] {kills} kills between two parts of a batch: {}",
        rig.name,
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (b) ClickHouse killed between a batch's last part and its receipt: the
/// receipt is held before it reaches ClickHouse, ClickHouse is killed, the
/// receipt released (it fails), ClickHouse restarted. Every part is in,
/// the receipt is not: the parts must not be applied again.
#[test]
fn clickhouse_killed_between_the_last_part_and_the_receipt() {
    let mut rig = Rig::own_via_proxy("kill_before_receipt", frequent_flushes());
    let load = rig.load(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let rounds = 4;
    let mut kills = 0;
    for round in 0..rounds {
        let rule = Rule::new(Matcher::line(RECEIPT), Fault::Hold(Part::Nothing));
        kills += usize::from(kill_clickhouse_while_held(
            &mut rig,
            round,
            rule,
            Release::Forward,
        ));
    }
    let report = load.stop();
    check_inserts_failed(&rig, kills);
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] {kills} kills before a receipt: {}",
        rig.name,
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (c) ClickHouse killed while the receipt is in flight, in turn: (1) the
/// receipt reached ClickHouse and was applied, its answer is held and lost
/// with the server; (2) the receipt reached ClickHouse but for the end of
/// its body (the chunked terminator), and the server dies reading it. In
/// (1) tamis must find the receipt there and not apply it again.
#[test]
fn clickhouse_killed_while_the_receipt_is_in_flight() {
    let mut rig = Rig::own_via_proxy("kill_during_receipt", frequent_flushes());
    let load = rig.load(Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let rounds = 4;
    let mut kills = 0;
    for round in 0..rounds {
        let (fault, release) = if round % 2 == 0 {
            (Fault::HoldAnswer, Release::DropAnswer)
        } else {
            (Fault::Hold(Part::AllBut(5)), Release::Forward)
        };
        let rule = Rule::new(Matcher::line(RECEIPT), fault);
        kills += usize::from(kill_clickhouse_while_held(&mut rig, round, rule, release));
    }
    let report = load.stop();
    check_inserts_failed(&rig, kills);
    let verdict = rig.verify(&report, &[]);
    let found = found_applied(&rig);
    eprintln!(
        "[{}] {kills} kills with a receipt in flight, {found} inserts found applied: {}",
        rig.name,
        verdict.summary()
    );
    rig.check(found > 0, || {
        "no insert was found applied after a receipt's answer was lost: the scenario tested nothing"
            .into()
    });
    rig.check_log_private();
    rig.finish();
}

/// (d) Connections cut mid-request at different byte offsets, in the head,
/// in the rows, just before and inside the chunked terminator; group
/// inserts and receipts in turn. A cut request may be applied or not
/// (ClickHouse may take a body cut at a chunk boundary as complete): the
/// marks must tell.
#[test]
fn connections_cut_mid_request_lose_and_double_nothing() {
    let rig = Rig::shared_via_proxy("cut_mid_request", frequent_flushes());
    let load = rig.load(Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    let parts = [
        Part::First(20),
        Part::First(200),
        Part::First(600),
        Part::AllBut(300),
        Part::AllBut(40),
        Part::AllBut(7),
        Part::AllBut(5),
        Part::AllBut(2),
    ];
    for (round, part) in parts.into_iter().enumerate() {
        let matcher = if round % 2 == 0 {
            later_part_of_a_batch()
        } else {
            Matcher::line(RECEIPT)
        };
        rig.proxy().arm(Rule::new(matcher, Fault::Cut(part)));
        let cut = rig.proxy().wait_faulted(1, SEEN_WITHIN);
        rig.check(cut, || {
            format!("round {round}: no request to cut ({part:?}) within {SEEN_WITHIN:?}")
        });
        std::thread::sleep(Duration::from_millis(1_500));
    }
    rig.proxy().disarm();
    let report = load.stop();
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] {} cuts, {} inserts found applied: {}",
        rig.name,
        parts.len(),
        found_applied(&rig),
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (d) A large group insert cut right after its first chunk of rows.
/// Large groups come when a restarted tamis replays a backlog (batches of
/// up to `clickhouse.batch_rows`); the `clickhouse` crate ends its chunks at
/// row boundaries, and ClickHouse 18.16 may take a chunked body whose
/// connection ends between chunks as complete (the cuts before the
/// terminator above are found applied). Such a cut must not leave the
/// group's first rows applied without their mark, counted again when the
/// group is sent again.
#[test]
fn a_large_insert_cut_after_its_first_chunk_is_not_half_applied() {
    const LARGE: usize = 300 * 1024;
    let mut rig = Rig::shared_via_proxy("cut_after_a_chunk", frequent_flushes());
    let load = rig.load(Duration::from_secs(50));
    std::thread::sleep(Duration::from_secs(2));
    // Every insert fails for a while: the backlog waits in the log.
    rig.proxy()
        .arm(Rule::new(Matcher::line(INSERT), Fault::Cut(Part::Nothing)).times(u64::MAX));
    std::thread::sleep(Duration::from_secs(20));
    rig.tamis.kill9();
    rig.proxy().arm(Rule::new(
        Matcher::new(|line, body| {
            line.contains(INSERT) && !line.contains(RECEIPT) && body.len() > LARGE
        }),
        Fault::Cut(Part::Chunks(1)),
    ));
    rig.tamis.restart();
    let cut = rig.proxy().wait_faulted(1, SEEN_WITHIN);
    rig.check(cut, || {
        format!(
            "no group insert over {LARGE} bytes to cut within {SEEN_WITHIN:?} (longest body seen: {} bytes)",
            rig.proxy().longest_body()
        )
    });
    std::thread::sleep(Duration::from_secs(3));
    rig.proxy().disarm();
    let report = load.stop();
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] cut after a first chunk: {cut}, longest body {} bytes, {} inserts found applied: {}",
        rig.name,
        rig.proxy().longest_body(),
        found_applied(&rig),
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (d) ClickHouse's answers delayed past tamis's insert timeout: the insert
/// is applied, tamis gives up waiting, and must find it applied rather
/// than send it again.
#[test]
fn answers_later_than_the_insert_timeout_are_not_applied_twice() {
    const TIMEOUT_MS: u64 = 1_000;
    let rig = Rig::shared_via_proxy(
        "late_answers",
        Knobs {
            clickhouse_timeout_ms: TIMEOUT_MS,
            ..frequent_flushes()
        },
    );
    let load = rig.load(Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    let rounds = 6;
    for round in 0..rounds {
        let matcher = if round % 2 == 0 {
            later_part_of_a_batch()
        } else {
            Matcher::line(RECEIPT)
        };
        let delay = Duration::from_millis(TIMEOUT_MS * 5 / 2);
        rig.proxy().arm(Rule::new(matcher, Fault::Delay(delay)));
        let delayed = rig.proxy().wait_faulted(1, SEEN_WITHIN);
        rig.check(delayed, || {
            format!("round {round}: no request to delay within {SEEN_WITHIN:?}")
        });
        std::thread::sleep(delay + Duration::from_millis(1_000));
    }
    rig.proxy().disarm();
    let report = load.stop();
    let verdict = rig.verify(&report, &[]);
    let found = found_applied(&rig);
    eprintln!(
        "[{}] {rounds} answers delayed past {TIMEOUT_MS} ms, {found} inserts found applied: {}",
        rig.name,
        verdict.summary()
    );
    rig.check(found > 0, || {
        "no late-answered insert was found applied: the scenario tested nothing".into()
    });
    rig.check_log_private();
    rig.finish();
}

/// (d) Applied, but the client never heard: the request is forwarded to
/// its end, ClickHouse answers, and the proxy resets tamis's connection
/// instead of forwarding the answer.
#[test]
fn connections_reset_after_the_request_was_applied_do_not_double_it() {
    let rig = Rig::shared_via_proxy("reset_after_request", frequent_flushes());
    let load = rig.load(Duration::from_secs(40));
    std::thread::sleep(Duration::from_secs(2));
    let rounds = 6;
    for round in 0..rounds {
        let matcher = if round % 2 == 0 {
            later_part_of_a_batch()
        } else {
            Matcher::line(RECEIPT)
        };
        rig.proxy().arm(Rule::new(matcher, Fault::ResetAfterAnswer));
        let reset = rig.proxy().wait_faulted(1, SEEN_WITHIN);
        rig.check(reset, || {
            format!("round {round}: no request to reset within {SEEN_WITHIN:?}")
        });
        std::thread::sleep(Duration::from_millis(1_500));
    }
    rig.proxy().disarm();
    let report = load.stop();
    let verdict = rig.verify(&report, &[]);
    let found = found_applied(&rig);
    eprintln!(
        "[{}] {rounds} resets after an applied request, {found} inserts found applied: {}",
        rig.name,
        verdict.summary()
    );
    rig.check(found > 0, || {
        "the log never says `found applied`: the resets tested nothing".into()
    });
    rig.check_log_private();
    rig.finish();
}

const POISON: &str = "/poison";

/// Sends `n` pageviews of [`POISON`] on example.org, 700 ms apart so that
/// they land in several batches, in the hour and site of the load's own
/// hits; how many were answered 202.
fn send_poison(rig: &Rig, n: usize) -> u64 {
    let mut accepted = 0;
    for _ in 0..n {
        let answer = send_hit(
            rig.tamis.addr,
            IPS[0],
            AGENTS[0],
            &pageview(&format!("https://example.org{POISON}")),
            &[],
        );
        accepted += u64::from(answer.status == 202 && answer.header("X-Tamis-Dropped").is_none());
        std::thread::sleep(Duration::from_millis(700));
    }
    accepted
}

/// The rows dead-lettered so far.
fn dead_letters(rig: &Rig) -> Vec<(String, String)> {
    common::dead_letters(&rig.log_dir)
}

/// Refuses every insert into `batch_in` holding a row for which
/// `condition` holds ([`ClickHouse::refuse_rows`]).
fn refuse_rows(rig: &Rig, condition: &str) {
    rig.ch().refuse_rows(&rig.db, "batch_in", condition);
}

fn stop_refusing(rig: &Rig) {
    rig.ch().stop_refusing(&rig.db);
}

/// A field of a dead-lettered row, at the top of its line or in `row`.
fn row_field<'v>(line: &'v serde_json::Value, name: &str) -> &'v serde_json::Value {
    match &line[name] {
        serde_json::Value::Null => &line["row"][name],
        value => value,
    }
}

/// Every dead-lettered row is a poison row refused with code 395, in the
/// file of its journal, and quotes nothing of ClickHouse's message; the
/// pageviews they hold (when the line says) add up to `at_least` or more.
fn check_dead_letters(rig: &Rig, at_least: u64) {
    let lines = dead_letters(rig);
    rig.check(!lines.is_empty(), || {
        format!(
            "nothing in {} after {at_least} poison hits",
            rig.log_dir.join("dead-letter").display()
        )
    });
    let mut pageviews = 0;
    let mut counted_pageviews = false;
    for (file, text) in &lines {
        let line: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                rig.check(false, || format!("{file}: not JSON ({e}): {text}"));
                continue;
            }
        };
        let reason = line["reason"].as_str().unwrap_or("");
        rig.check(
            reason.starts_with("ClickHouse code 395") && line["code"] == 395,
            || format!("{file}: expected reason \"ClickHouse code 395: …\" and code 395: {text}"),
        );
        rig.check(row_field(&line, "page") == POISON, || {
            format!("{file}: a row that is not a poison row was dead-lettered: {text}")
        });
        rig.check(row_field(&line, "kind").is_string(), || {
            format!("{file}: no row kind: {text}")
        });
        if let Some(journal) = line["journal_id"].as_str() {
            rig.check(file == &format!("{journal}.jsonl"), || {
                format!("{file}: a row of journal {journal}")
            });
        }
        for quoted in CLICKHOUSE_WORDS {
            rig.check(!text.contains(quoted), || {
                format!("{file}: quotes ClickHouse's message ({quoted:?}): {text}")
            });
        }
        if let Some(n) = row_field(&line, "pageviews").as_u64() {
            pageviews += n;
            counted_pageviews = true;
        }
    }
    if counted_pageviews {
        rig.check(pageviews >= at_least, || {
            format!("the dead-lettered rows hold {pageviews} poison pageviews, {at_least} were accepted")
        });
    }
}

/// Waits (bounded) for a first dead letter, drains, takes the poison page
/// out of ClickHouse's counts (it must not be there) and checks every other
/// answer.
fn verify_without_poison(rig: &Rig, report: &load::Report) -> load::Verdict {
    let dead_lettered = eventually(Duration::from_secs(30), || !dead_letters(rig).is_empty());
    rig.check(dead_lettered, || {
        format!(
            "no row in {} within 30 s of the load's end",
            rig.log_dir.join("dead-letter").display()
        )
    });
    let mut counts: HashMap<String, u64> = rig.drained();
    let poison = counts.remove(POISON).unwrap_or(0);
    rig.check(poison == 0, || {
        format!("the refused page {POISON} is counted {poison} times in ClickHouse")
    });
    rig.verify_counts(report, &counts, &[])
}

/// (e) Poison rows: ClickHouse refuses the rows of one page, mixed in the
/// same site and hour as steady load. They are isolated and dead-lettered
/// (with ClickHouse's code, never its text), every other hit is counted
/// exactly once, and delivery never stalls.
#[test]
fn poison_rows_are_dead_lettered_and_the_rest_counted_once() {
    let rig = Rig::shared("poison_rows", frequent_flushes());
    refuse_rows(&rig, &format!("page = '{POISON}'"));
    let load = rig.load(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let poison = send_poison(&rig, 6);
    let report = load.wait();
    let verdict = verify_without_poison(&rig, &report);
    check_dead_letters(&rig, poison);
    let dead = rig.metric("tamis_rows_dead_lettered_total");
    let isolated = rig.metric("tamis_groups_isolated_total");
    rig.check(dead.is_some_and(|n| n >= 1.0), || {
        format!("tamis_rows_dead_lettered_total = {dead:?}, expected at least 1")
    });
    rig.check(isolated.is_some_and(|n| n >= 1.0), || {
        format!("tamis_groups_isolated_total = {isolated:?}, expected at least 1")
    });
    eprintln!(
        "[{}] {poison} poison hits accepted, {} rows dead-lettered: {}",
        rig.name,
        dead_letters(&rig).len(),
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (e) tamis killed (SIGKILL) in the middle of isolating poison rows: when
/// the proxy sees the third insert holding a poison row (the refused group,
/// then its halves). The restarted tamis finishes the job: every other hit
/// counted exactly once, the poison page never.
#[test]
fn tamis_killed_while_isolating_poison_rows() {
    let mut rig = Rig::shared_via_proxy("poison_kill", frequent_flushes());
    refuse_rows(&rig, &format!("page = '{POISON}'"));
    rig.proxy()
        .arm(Rule::new(Matcher::body(POISON), Fault::Hold(Part::Nothing)).skip(2));
    let load = rig.load(Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let poison = send_poison(&rig, 4);
    let held = rig.proxy().wait_held(SEEN_WITHIN);
    rig.check(held, || {
        format!(
            "no third insert with a poison row within {SEEN_WITHIN:?} ({} seen)",
            rig.proxy().matched()
        )
    });
    if held {
        rig.tamis.kill9();
        rig.proxy().release_without_answer();
        rig.tamis.restart();
    }
    rig.proxy().disarm();
    let report = load.wait();
    let verdict = verify_without_poison(&rig, &report);
    check_dead_letters(&rig, poison);
    eprintln!(
        "[{}] {poison} poison hits accepted, tamis killed during isolation: {held}; {} rows dead-lettered: {}",
        rig.name,
        dead_letters(&rig).len(),
        verdict.summary()
    );
    rig.check_log_private();
    rig.finish();
}

/// (f) ClickHouse refuses everything for a while (`refuse`, undone by
/// `restore`): that is not a row's fault, so nothing is dead-lettered and
/// nothing lost. tamis says delivery is blocked, with ClickHouse's code, in
/// `/metrics` and `/readyz` while it lasts, keeps answering 202 from its
/// log, and delivers everything once ClickHouse takes rows again.
fn systemic_refusal(rig: &Rig, refuse: impl Fn(&Rig), restore: impl Fn(&Rig), code: u64) {
    let load = rig.load(Duration::from_secs(25));
    std::thread::sleep(Duration::from_secs(3));
    refuse(rig);
    let accepted_before = load.live.accepted();
    let started = std::time::Instant::now();
    let (mut metric_blocked, mut ready_blocked) = (false, None);
    while started.elapsed() < Duration::from_secs(10) {
        metric_blocked |= rig.metric("tamis_delivery_blocked") == Some(1.0);
        if let Some((status, body)) = readyz(rig.tamis.admin) {
            if body["delivery"]["blocked"] == true || ready_blocked.is_none() {
                ready_blocked = Some((status, body));
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let accepted_while_blocked = load.live.accepted() - accepted_before;
    restore(rig);
    let report = load.wait();
    let verdict = rig.verify(&report, &[]);
    rig.check(metric_blocked, || {
        "tamis_delivery_blocked never was 1 while ClickHouse refused every insert".into()
    });
    match ready_blocked {
        Some((status, body)) => rig.check(
            body["delivery"]["blocked"] == true && body["delivery"]["clickhouse_code"] == code,
            || format!("/readyz while ClickHouse refused every insert: {status} {body}, expected \"delivery\": {{\"blocked\": true, \"clickhouse_code\": {code}}}"),
        ),
        None => rig.check(false, || "/readyz never answered".into()),
    }
    rig.check(accepted_while_blocked > 0, || {
        "no 202 while ClickHouse refused every insert".into()
    });
    let unblocked = eventually(Duration::from_secs(10), || {
        rig.metric("tamis_delivery_blocked") == Some(0.0)
    });
    rig.check(unblocked, || {
        "tamis_delivery_blocked did not return to 0 once ClickHouse took rows again".into()
    });
    let dead = dead_letters(rig);
    rig.check(dead.is_empty(), || {
        format!(
            "{} rows dead-lettered although ClickHouse refused everything, e.g. {:?}",
            dead.len(),
            dead.first()
        )
    });
    let metric = rig.metric("tamis_rows_dead_lettered_total");
    rig.check(metric == Some(0.0), || {
        format!("tamis_rows_dead_lettered_total = {metric:?}, expected 0")
    });
    eprintln!(
        "[{}] {accepted_while_blocked} hits accepted while delivery was blocked: {}",
        rig.name,
        verdict.summary()
    );
    rig.check_log_private();
}

#[test]
fn every_row_refused_blocks_delivery_without_dead_letters() {
    // Not `throwIf(1)`: ClickHouse evaluates a constant when it creates the
    // view, and refuses the view itself.
    let rig = Rig::shared("refuse_all", frequent_flushes());
    systemic_refusal(
        &rig,
        |rig| refuse_rows(rig, "kind != ''"),
        stop_refusing,
        395,
    );
    rig.finish();
}

fn rename(rig: &Rig, from: &str, to: &str) {
    rig.ch().query(&format!(
        "RENAME TABLE {db}.{from} TO {db}.{to}",
        db = rig.db
    ));
}

#[test]
fn missing_table_blocks_delivery_without_dead_letters() {
    let rig = Rig::shared("table_away", frequent_flushes());
    systemic_refusal(
        &rig,
        // The insert table itself: on 18.16 a view keeps writing to its
        // target table after a rename of that table, so renaming
        // `traffic_hourly` refuses nothing; every insert goes through
        // `batch_in`.
        |rig| rename(rig, "batch_in", "batch_in_away"),
        |rig| rename(rig, "batch_in_away", "batch_in"),
        60,
    );
    rig.finish();
}
