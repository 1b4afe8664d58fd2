//! Durable delivery, with real processes: the tamis binary, a real
//! ClickHouse server, real HTTP load on loopback. tamis promises that every
//! hit it answered 202 ends up counted in ClickHouse exactly once, whatever
//! happens to either process. Each scenario drives steady load, breaks
//! something (kill -9 of tamis, a ClickHouse outage, a damaged log, a full
//! log, SIGTERM, inserts that time out), waits for the backlog to drain and
//! compares ClickHouse's per-page counts with the answers the client got,
//! request by request (`common::load::Report::check`):
//!
//! - answered 202 → counted exactly once;
//! - answered 503 (with Retry-After), or never sent → counted zero times;
//! - sent but never answered (tamis killed mid-request) → 0 or 1 times;
//!
//! so the pageviews in ClickHouse equal the 202s plus the unanswered
//! requests that were found counted. Every scenario also checks that the log
//! directory holds no client IP and no raw user agent, and is private to its
//! owner (0700/0600).
//!
//! Scenarios that stop ClickHouse run a server of their own; the others
//! share one server and isolate themselves in a database of their own.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::clickhouse::Stop;
use common::load;
use common::rig::*;
use common::*;

/// Samples the RSS of process `pid` every 100 ms until `stop` is set.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut samples = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = rss_kib(pid) {
                samples.push(kib);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        samples
    })
}

#[test]
fn record_checksum_is_crc32c() {
    // The test's own reader of the log format must agree with the standard
    // CRC-32C check value, or the corruption scenario would prove nothing.
    assert_eq!(common::journal::crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(load::id_of(&load::page(0)), Some(0));
    for id in [1, 25, 26, 27, 675, 676, 123_456] {
        assert_eq!(load::id_of(&load::page(id)), Some(id), "{}", load::page(id));
    }
}

#[test]
fn log_scan_finds_planted_secrets() {
    // The privacy scan of the log directory must see a secret anywhere,
    // in any file, at any depth, and loose permissions.
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new();
    let dir = scratch.path("log");
    std::fs::create_dir_all(dir.join("dead-letter")).expect("mkdir");
    for d in [dir.clone(), dir.join("dead-letter")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let mut bytes = vec![0u8; 1000];
    bytes[500..504].copy_from_slice(&[198, 51, 100, 77]);
    let file = dir.join("dead-letter/x.jsonl");
    std::fs::write(&file, &bytes).expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let needles = vec![
        ("raw".to_string(), vec![198, 51, 100, 77]),
        ("dotted".to_string(), b"198.51.100.77".to_vec()),
    ];
    let found = common::journal::find_needles(&dir, &needles);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("raw in ") && found[0].ends_with("at byte 500"),
        "{found:?}"
    );
    assert!(common::journal::loose_permissions(&dir).is_empty());
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(common::journal::loose_permissions(&dir).len(), 1);
}

/// (a) Under steady load, tamis is killed with SIGKILL every few seconds and
/// restarted at once, four times.
#[test]
fn kill9_restarts_under_load_lose_and_duplicate_nothing() {
    let mut rig = Rig::shared("kill9_loop", Knobs::default());
    let load = rig.load(Duration::from_secs(22));
    for _ in 0..4 {
        std::thread::sleep(Duration::from_secs(4));
        rig.tamis.kill9();
        rig.check_log_private();
        rig.tamis.restart();
    }
    let report = load.wait();
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] 4 kill -9 restarts; {} requests unanswered, {} of them counted",
        rig.name, verdict.no_answer, verdict.no_answer_counted
    );
    rig.check_log_private();
    rig.finish();
}

/// (b) ClickHouse stops for 30 s under load: tamis keeps answering 202 from
/// its log, says so in /readyz and /metrics, and drains the backlog when
/// ClickHouse returns.
#[test]
fn clickhouse_outage_under_load_is_absorbed_by_the_log() {
    let mut rig = Rig::own("ch_outage", Knobs::default());
    let load = rig.load(Duration::from_secs(42));
    std::thread::sleep(Duration::from_secs(5));
    rig.ch_mut().stop(Stop::Graceful);
    let outage = Instant::now();
    let accepted_at_stop = load.live.accepted();

    let mut saw_down = false;
    let mut saw_backlog = false;
    let mut ready_while_down = None;
    while outage.elapsed() < Duration::from_secs(30) {
        if let Some(m) = rig.metrics() {
            let backlog = m.get("tamis_log_backlog_hits").copied().unwrap_or(0.0);
            let age = m
                .get("tamis_log_backlog_age_seconds")
                .copied()
                .unwrap_or(0.0);
            saw_backlog |= backlog > 0.0 && age > 0.0;
            saw_down |= m.get("tamis_clickhouse_up") == Some(&0.0);
        }
        if let Some((status, body)) = readyz(rig.tamis.admin) {
            if body["clickhouse"] == "down" || ready_while_down.is_none() {
                ready_while_down = Some((status, body));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let accepted_during_outage = load.live.accepted() - accepted_at_stop;
    rig.check_log_private();
    rig.ch_mut().restart();
    let report = load.wait();

    rig.check(saw_down, || {
        "tamis_clickhouse_up never became 0 during a 30 s outage".into()
    });
    rig.check(saw_backlog, || {
        "tamis_log_backlog_hits and tamis_log_backlog_age_seconds never grew during the outage"
            .into()
    });
    match ready_while_down {
        Some((status, body)) => {
            rig.check(body["clickhouse"] == "down", || format!("/readyz never said clickhouse \"down\" during the outage; last: {status} {body}"));
            rig.check(status == 200 && body["accepting"] == true, || {
                format!("/readyz while ClickHouse is down and the log has room: {status} {body}, expected 200 and accepting")
            });
        }
        None => rig.check(false, || "/readyz never answered during the outage".into()),
    }
    rig.check(accepted_during_outage > 0, || {
        "no 202 while ClickHouse was down".into()
    });
    let verdict = rig.verify(&report, &[]);
    rig.check(verdict.refused == 0, || {
        format!(
            "{} 503s although the log was far from its cap",
            verdict.refused
        )
    });
    eprintln!(
        "[{}] {accepted_during_outage} hits accepted during the 30 s outage",
        rig.name
    );
    rig.finish();
}

/// The aggregator takes each durable hit from memory, as ingest made it;
/// the log is read back only for what that hand-off could not hold. Here
/// the aggregator may hold 500 records, so during a ClickHouse outage at
/// 300 hits/s it stops taking them, the hand-off fills (500 more) and the
/// rest wait in the log alone. Before the outage nothing is read back;
/// after it, what was left to the log is, and every 202 is counted once.
#[test]
fn hits_the_memory_handoff_could_not_hold_are_read_back_from_the_log() {
    let mut rig = Rig::own(
        "handoff_full",
        Knobs {
            queue_capacity: 500,
            ..Knobs::default()
        },
    );
    let load = rig.load(Duration::from_secs(25));
    std::thread::sleep(Duration::from_secs(4));
    let read_back = || rig.metric("tamis_log_records_read_back_total");
    let before = read_back();
    rig.check(before == Some(0.0), || {
        format!("a collector that keeps up read its log back: tamis_log_records_read_back_total = {before:?}")
    });
    let accepted_before = load.live.accepted();
    rig.ch_mut().stop(Stop::Graceful);
    std::thread::sleep(Duration::from_secs(10));
    let held_by_the_log = load.live.accepted() - accepted_before;
    rig.ch_mut().restart();
    let report = load.wait();
    let verdict = rig.verify(&report, &[]);
    let after = rig
        .metric("tamis_log_records_read_back_total")
        .unwrap_or(0.0);
    rig.check(held_by_the_log > 1_000, || {
        format!(
            "only {held_by_the_log} hits accepted during the outage: the hand-off was never full"
        )
    });
    rig.check(after > 0.0, || {
        format!("{held_by_the_log} hits accepted while the aggregator and the hand-off were full, yet none was read back from the log")
    });
    rig.check(verdict.refused == 0, || {
        format!(
            "{} 503s although the log was far from its cap",
            verdict.refused
        )
    });
    eprintln!(
        "[{}] {held_by_the_log} hits accepted during the outage, {after} read back from the log",
        rig.name
    );
    rig.finish();
}

/// (c) A damaged log: with records waiting in it (ClickHouse down), tamis is
/// killed, the newest segment gets a torn partial record at its end and one
/// record of an older segment gets a flipped byte. tamis must start, drop the
/// torn tail and the corrupt record (counting each), and deliver the rest.
#[test]
fn torn_tail_and_corrupt_record_are_skipped_and_counted() {
    // A small cap (far above the ~1,500 hits sent) makes for small
    // segments, so that the corrupt record sits in an older segment than the
    // torn tail; with a single segment the test still works, in its middle.
    let mut rig = Rig::own(
        "damaged_log",
        Knobs {
            log_max_bytes: 1 << 20,
            ..Knobs::default()
        },
    );
    rig.ch_mut().stop(Stop::Graceful);
    let report = rig.load(Duration::from_secs(5)).wait();
    rig.tamis.kill9();
    rig.check_log_private();

    assert!(
        rig.log_dir.is_dir(),
        "no log directory at {} after {} hits were accepted",
        rig.log_dir.display(),
        report.accepted_ids().len()
    );
    let segments = common::journal::segments(&rig.log_dir);
    assert!(
        !segments.is_empty(),
        "no segment in {} after {} hits were accepted",
        rig.log_dir.display(),
        report.accepted_ids().len()
    );
    let walks: Vec<_> = segments
        .iter()
        .map(|s| common::journal::walk(&std::fs::read(s).expect("read segment")))
        .collect();
    for (i, (segment, walk)) in segments.iter().zip(&walks).enumerate() {
        let bad = walk.records.iter().filter(|r| !r.crc_ok).count();
        // Zero padding ends the newest (active, preallocated) segment
        // only: older ones are cut to their records when sealed.
        let newest = i + 1 == segments.len();
        let stray_padding = if newest { 0 } else { walk.padding };
        assert_eq!(
            (bad, walk.trailing, stray_padding),
            (0, 0, 0),
            "{} does not follow the documented framing before the test touched it ({} records, {bad} with a bad CRC-32C, {} trailing bytes, {} bytes of zero padding, newest: {newest})",
            segment.display(),
            walk.records.len(),
            walk.trailing,
            walk.padding
        );
    }
    let records: usize = walks.iter().map(|w| w.records.len()).sum();
    // A record in the middle of the oldest segment (with a single segment,
    // in its middle, well before the tail).
    let victim = walks[0].records[walks[0].records.len() / 2];
    let payload = common::journal::corrupt_record(&segments[0], victim);
    let lost: Vec<u64> = common::journal::pages_in(&payload)
        .iter()
        .filter_map(|p| load::id_of(p))
        .collect();
    let newest = segments.last().expect("a segment");
    common::journal::append_torn_record(newest, 300, b"{\"torn\":");
    eprintln!(
        "[{}] {} segments, {records} records; corrupted the record at byte {} of {} (pages {:?}); torn record appended to {}",
        rig.name,
        segments.len(),
        victim.offset,
        segments[0].display(),
        lost.iter().map(|&id| load::page(id)).collect::<Vec<_>>(),
        newest.display()
    );

    rig.ch_mut().restart();
    rig.tamis.restart();
    let torn = rig.metric("tamis_log_records_skipped_total{reason=\"torn_tail\"}");
    let corrupt = rig.metric("tamis_log_records_skipped_total{reason=\"corrupt\"}");
    rig.check((torn, corrupt) == (Some(1.0), Some(1.0)), || {
        format!("skipped-record counters after the restart: torn_tail {torn:?}, corrupt {corrupt:?}; expected 1 and 1")
    });

    let lost = if lost.is_empty() {
        // The payload does not show its page as text: the corrupted hit is
        // then the single 202 that is missing (one record per hit).
        let counts = rig.drained();
        let missing: Vec<u64> = report
            .accepted_ids()
            .into_iter()
            .filter(|id| !counts.contains_key(&load::page(*id)))
            .collect();
        rig.check(missing.len() == 1, || {
            format!("the corrupted record's page is not readable in its payload, and {} accepted hits are missing instead of 1: {missing:?}", missing.len())
        });
        missing
    } else {
        lost
    };
    rig.verify(&report, &lost);
    // Once more, with the damage behind: no crash loop, nothing counted twice.
    rig.tamis.kill9();
    rig.tamis.restart();
    rig.verify(&report, &lost);
    rig.finish();
}

/// (d) ClickHouse down long enough to fill a small log: ingestion answers
/// 503 with Retry-After instead of 202, /readyz says log_full, memory stays
/// bounded, and every 202 is delivered once ClickHouse returns.
#[test]
fn full_log_answers_503_and_memory_stays_bounded() {
    const CAP: u64 = 512 * 1024;
    let mut rig = Rig::own(
        "log_cap",
        Knobs {
            log_max_bytes: CAP,
            ..Knobs::default()
        },
    );
    let idle_kib = rig.tamis.rss_kib().expect("tamis RSS");
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(rig.tamis.pid(), stop_sampling.clone());
    rig.ch_mut().stop(Stop::Graceful);
    let load = rig.load(Duration::from_secs(120));

    let full = eventually(Duration::from_secs(40), || load.live.refused() > 0);
    rig.check(full, || {
        format!(
            "no 503 after 40 s of load with ClickHouse down and a {CAP}-byte log cap ({} accepted)",
            load.live.accepted()
        )
    });
    // Stay full a while: memory must not grow with refused traffic.
    std::thread::sleep(Duration::from_secs(5));
    let ready = readyz(rig.tamis.admin);
    let log_full_metric = rig.metric("tamis_log_full");
    let on_disk = rig.log_bytes_on_disk();
    let records_on_disk = rig.log_record_bytes();
    rig.check_log_private();

    rig.ch_mut().restart();
    let accepted_at_restart = load.live.accepted();
    let recovered = eventually(Duration::from_secs(60), || {
        load.live.accepted() > accepted_at_restart + u64::from(RATE)
    });
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    stop_sampling.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let peak_kib = samples.iter().copied().max().unwrap_or(0);

    if full {
        match ready {
            Some((status, body)) => rig.check(status == 503 && body["log_full"] == true, || {
                format!("/readyz while the log is full: {status} {body}, expected 503 with log_full true")
            }),
            None => rig.check(false, || "/readyz did not answer while the log was full".into()),
        }
        rig.check(log_full_metric == Some(1.0), || {
            format!("tamis_log_full while full: {log_full_metric:?}")
        });
    }
    // The cap counts records and is checked before a group is committed,
    // so the records may pass it by at most one group (4 connections, one
    // hit each); 64 KiB is far more than that. Files on disk hold, on top,
    // the zeros of the preallocated active segment and of the spare: at
    // most two segments of CAP / 8 each (the documented bound).
    rig.check(records_on_disk <= CAP + 64 * 1024, || {
        format!("the log holds {records_on_disk} bytes of records, cap {CAP}")
    });
    rig.check(on_disk <= CAP + 2 * (CAP / 8) + 64 * 1024, || {
        format!(
            "the log's files take {on_disk} bytes on disk, cap {CAP} (+ two segments of {})",
            CAP / 8
        )
    });
    rig.check(recovered, || {
        "tamis did not accept again within 60 s of ClickHouse's return".into()
    });
    // Memory: what tamis holds beyond its idle footprint is bounded by the
    // log cap (0.5 MiB of records on disk, none needed in memory), the
    // bounded channels and the in-memory visits of the 4 simulated
    // visitors: 64 MiB above the idle RSS is generous, while a backlog kept
    // in memory grows without limit at 300 hits/s.
    rig.check(peak_kib <= idle_kib + 64 * 1024, || {
        format!(
            "tamis RSS peaked at {peak_kib} KiB, idle was {idle_kib} KiB ({} samples)",
            samples.len()
        )
    });
    let verdict = rig.verify(&report, &[]);
    rig.check(verdict.refused > 0, || "no 503 at all".into());
    rig.check(verdict.refused_without_retry_after == 0, || {
        format!(
            "{} 503s without Retry-After",
            verdict.refused_without_retry_after
        )
    });
    eprintln!(
        "[{}] log on disk when full: {on_disk} bytes ({records_on_disk} of records); RSS idle {idle_kib} KiB, peak {peak_kib} KiB",
        rig.name
    );
    rig.finish();
}

/// (e) SIGTERM under load: /readyz turns 503, tamis stops accepting, finishes
/// what is in flight and exits within `server.shutdown_timeout_ms` (a
/// deadline from the config, plus a margin for process scheduling on a busy
/// machine); every 202 is delivered.
#[test]
fn sigterm_under_load_exits_in_time_and_loses_nothing() {
    const SHUTDOWN_MS: u64 = 5_000;
    let mut rig = Rig::shared(
        "sigterm",
        Knobs {
            shutdown_timeout_ms: SHUTDOWN_MS,
            ..Knobs::default()
        },
    );
    let load = rig.load(Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));

    // /readyz polled on fresh connections every 5 ms, from before the
    // signal until the exit.
    let addr = rig.tamis.addr;
    let polling = Arc::new(AtomicBool::new(true));
    let poller = {
        let polling = polling.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while polling.load(Ordering::Relaxed) {
                let answer = try_http(addr, "GET", "/readyz", &[], b"")
                    .map(|r| r.status)
                    .map_err(|e| e.kind());
                seen.push((Instant::now(), answer));
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    let ended = rig
        .tamis
        .terminate(Duration::from_millis(SHUTDOWN_MS) + Duration::from_secs(30));
    polling.store(false, Ordering::Relaxed);
    let seen = poller.join().expect("poller");
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();

    let after: Vec<_> = seen
        .iter()
        .filter(|(t, _)| *t > signalled)
        .map(|(t, a)| (t.duration_since(signalled), *a))
        .collect();
    let first_503 = after.iter().find(|(_, a)| *a == Ok(503)).map(|(t, _)| *t);
    let first_not_ready = after.iter().position(|(_, a)| *a != Ok(200));
    let ready_again = first_not_ready.and_then(|i| after[i..].iter().find(|(_, a)| *a == Ok(200)));
    eprintln!(
        "[{}] exit {:?} after {:?}; first /readyz 503 {:?} after the signal; {} polls until the exit",
        rig.name,
        ended.status,
        ended.after,
        first_503,
        after.len()
    );
    rig.check(ended.status.is_some_and(|s| s.success()), || {
        format!("after SIGTERM: {ended:?}, expected a clean exit")
    });
    rig.check(
        ended.after <= Duration::from_millis(SHUTDOWN_MS) + Duration::from_secs(5),
        || {
            format!(
                "tamis took {:?} to exit, shutdown_timeout_ms = {SHUTDOWN_MS}",
                ended.after
            )
        },
    );
    rig.check(first_503.is_some(), || {
        let shown: Vec<_> = after.iter().take(20).collect();
        format!("/readyz never answered 503 between SIGTERM and exit; first polls after the signal: {shown:?}")
    });
    rig.check(ready_again.is_none(), || {
        format!("/readyz answered 200 again after turning not-ready: {ready_again:?}")
    });

    // Whatever tamis left in its log is delivered by the next start.
    rig.tamis.restart();
    eprintln!(
        "[{}] backlog at restart: {:?} hits",
        rig.name,
        rig.metric("tamis_log_backlog_hits")
    );
    rig.verify(&report, &[]);
    rig.check_log_private();
    rig.finish();
}

/// Ambiguous failures: with a ClickHouse timeout so short that inserts
/// often time out after ClickHouse received them, a retry must not apply a
/// batch twice (tamis checks its receipt table before retrying).
#[test]
fn inserts_that_time_out_are_not_applied_twice() {
    const TINY_MS: u64 = 15;
    let mut rig = Rig::shared("ambiguous", Knobs::default());
    // Migrations ran with a sane timeout; now restart with a tiny one.
    rig.reconfigure(&Knobs {
        clickhouse_timeout_ms: TINY_MS,
        ..Knobs::default()
    });
    rig.tamis.kill9();
    rig.tamis.restart();
    let report = rig.load(Duration::from_secs(10)).wait();
    let drained_alone = eventually(Duration::from_secs(20), || {
        rig.metric("tamis_log_backlog_hits") == Some(0.0)
    });
    let failures = rig.metric("tamis_insert_failures_total");
    let written = rig.metric("tamis_batches_written_total");
    // Back to a sane timeout, so that whatever is left drains; SIGKILL, so
    // the batches still pending are resolved from the log at start-up.
    rig.reconfigure(&Knobs::default());
    rig.tamis.kill9();
    rig.tamis.restart();
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] timeout_ms = {TINY_MS}: failed insert attempts {failures:?}, inserts confirmed {written:?}, drained without help: {drained_alone}; {}",
        rig.name,
        verdict.summary()
    );
    rig.check(failures.is_some_and(|n| n > 0.0), || {
        format!("no insert failed with timeout_ms = {TINY_MS}: the scenario tested nothing")
    });
    rig.finish();
}

/// ClickHouse killed (SIGKILL) again and again under load, at varied
/// moments: every 202 counted exactly once. ClickHouse commits each table
/// and partition of an insert as a part of its own, and a kill can fall
/// between two of them; tamis applies a batch as one insert per table,
/// site and hour, each proven by its own delivery mark, so a half-applied
/// batch is completed, not repeated. Two sites in different time zones
/// make every batch several inserts.
#[test]
fn clickhouse_killed_mid_insert_again_and_again() {
    // Frequent small inserts: the more of its time ClickHouse spends inside
    // an insert, the likelier a kill falls between two of its parts.
    let knobs = Knobs {
        flush_interval_ms: 50,
        ..Knobs::default()
    };
    let mut rig = Rig::own("ch_kill_loop", knobs);
    let load = rig.load(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    // Up times that do not line up with the flush interval, so the
    // kills land at different points of the insert cycle.
    let up_times_ms = [1_130, 1_870, 1_410, 2_290, 1_650, 1_030, 1_550, 1_970];
    for up_ms in up_times_ms {
        rig.ch_mut().stop(Stop::Kill);
        std::thread::sleep(Duration::from_millis(700));
        rig.ch_mut().restart();
        std::thread::sleep(Duration::from_millis(up_ms));
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    let kills = up_times_ms.len();
    let verdict = rig.verify(&report, &[]);
    let found_applied = rig.tamis.log_text().matches("found applied").count();
    eprintln!(
        "[{}] {kills} ClickHouse kills: {} hits answered 202, {} counted twice; {found_applied} inserts found applied after an unclear failure",
        rig.name, verdict.accepted, verdict.doubled
    );
    rig.finish();
}

/// tamis killed while an insert of its batch is inside ClickHouse: the
/// server is frozen (SIGSTOP) under load, so the writer waits on an insert
/// it has sent; tamis is killed; ClickHouse thaws and finishes that insert
/// with nobody waiting for it. The batch is then half applied, without
/// receipt, and the new tamis process must complete it rather than repeat
/// it: it cuts replayed records into the same batch (the note in flight)
/// and skips the inserts whose delivery marks are there. Two sites in
/// different time zones make every batch several inserts.
#[test]
fn tamis_killed_while_clickhouse_holds_its_insert() {
    let knobs = Knobs {
        flush_interval_ms: 100,
        ..Knobs::default()
    };
    let mut rig = Rig::own("kill_during_insert", knobs);
    let load = rig.load(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let frozen_times_ms = [150, 400, 250, 600];
    let rounds = frozen_times_ms.len();
    for frozen_ms in frozen_times_ms {
        rig.ch().freeze(true);
        std::thread::sleep(Duration::from_millis(frozen_ms));
        rig.tamis.kill9();
        rig.ch().freeze(false);
        rig.tamis.restart();
        std::thread::sleep(Duration::from_millis(1_500));
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = load.stop();
    let verdict = rig.verify(&report, &[]);
    let log = rig.tamis.log_text();
    let skipped = log.matches("rows found applied before a restart").count();
    let cut = log
        .matches("writing logged hits not yet in ClickHouse")
        .count();
    eprintln!(
        "[{}] {rounds} kills with an insert inside ClickHouse: {} hits answered 202, {} counted twice; {cut} replays, {skipped} inserts found applied and skipped",
        rig.name, verdict.accepted, verdict.doubled
    );
    rig.check_log_private();
    rig.finish();
}

/// tamis killed while ClickHouse is down, and started again before
/// ClickHouse returns: it must come up without ClickHouse, keep logging
/// hits, and deliver the old and the new ones once ClickHouse answers.
#[test]
fn tamis_restarted_during_a_clickhouse_outage() {
    let mut rig = Rig::own("restart_in_outage", Knobs::default());
    let load = rig.load(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(3));
    rig.ch_mut().stop(Stop::Graceful);
    std::thread::sleep(Duration::from_secs(3));
    rig.tamis.kill9();
    // Restarted with a changed configuration: its audit record waits for
    // ClickHouse too.
    rig.tamis.edit_config(|text| {
        let changed = text.replace("flush_interval_ms = ", "flush_interval_ms = 1");
        assert_ne!(changed, text);
        changed
    });
    let restarted = Instant::now();
    rig.tamis.restart();
    let came_up_after = restarted.elapsed();
    let accepted_at_restart = load.live.accepted();
    std::thread::sleep(Duration::from_secs(4));
    let accepted_without_clickhouse = load.live.accepted() - accepted_at_restart;
    rig.check_log_private();
    rig.ch_mut().restart();
    std::thread::sleep(Duration::from_secs(4));
    let report = load.stop();
    rig.check(accepted_without_clickhouse > 0, || {
        "no 202 from the tamis started while ClickHouse was down".into()
    });
    let changes = || {
        rig.ch().query_in(
            &rig.db,
            "SELECT summary FROM audit_log WHERE kind = 'config_change' ORDER BY at FORMAT TSV",
        )
    };
    let recorded = eventually(Duration::from_secs(20), || changes().lines().count() == 2);
    rig.check(
        recorded && changes().contains("changed: clickhouse"),
        || {
            format!(
                "the configuration changed during the outage is not in the audit log once:\n{}",
                changes()
            )
        },
    );
    let verdict = rig.verify(&report, &[]);
    eprintln!(
        "[{}] restarted without ClickHouse, serving after {came_up_after:?}; {accepted_without_clickhouse} hits accepted before ClickHouse returned; {} not sent meanwhile",
        rig.name, verdict.not_sent
    );
    rig.finish();
}

/// The acceptance run: fixed rate, two kill -9 restarts of tamis
/// and a 20 s ClickHouse stop (SIGTERM) in the middle: every 202 counted
/// exactly once (plus the unanswered requests tamis had logged when it was
/// killed).
#[test]
fn acceptance_two_kill9_and_a_clickhouse_stop() {
    let mut rig = Rig::own("acceptance", Knobs::default());
    let load = rig.load(Duration::from_secs(38));
    std::thread::sleep(Duration::from_secs(4));
    rig.tamis.kill9();
    rig.tamis.restart();
    std::thread::sleep(Duration::from_secs(4));
    rig.ch_mut().stop(Stop::Graceful);
    std::thread::sleep(Duration::from_secs(20));
    rig.check_log_private();
    rig.ch_mut().restart();
    std::thread::sleep(Duration::from_secs(4));
    rig.tamis.kill9();
    rig.tamis.restart();
    let report = load.wait();
    rig.verify(&report, &[]);
    rig.check_log_private();
    rig.finish();
}
