//! The writer's state machine against a model of ClickHouse: random
//! batches (some with rows ClickHouse refuses), random faults (answers
//! lost before or after the insert went in, passing refusals, refusals
//! after a part went in, stretches where ClickHouse refuses everything,
//! and crashes of tamis before, after or while an insert is inside
//! ClickHouse), restarts that send the batch in flight again. Whatever
//! happens, every good row is applied exactly once, every refused row is
//! dead-lettered and never applied, nothing else is dead-lettered, and
//! every batch ends with its receipt. The same again with a model of a
//! cluster: two shards whose tables drop a block identical to one already
//! in (replicated tables), where the writer sends an insert whose fate is
//! unclear again as it was.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::*;
use crate::journal::Options;
use crate::sink::rows::{PropRow, TrafficDelta, VisitDims};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// The connection broke before ClickHouse took the insert.
    LostBefore,
    /// ClickHouse took the insert; its answer was lost.
    LostAfter,
    /// Too many parts: refused for now.
    Passing,
    /// A part went in, then a later view threw.
    RefusedAfterApplying,
    /// Every insert refused (a table missing) for this many attempts.
    Systemic(u8),
    /// tamis dies before the insert reaches ClickHouse.
    Crash,
    /// tamis dies after ClickHouse took the insert.
    CrashAfterApplying,
    /// tamis dies while ClickHouse holds the insert; it goes in later.
    CrashInFlight,
}

#[derive(Default)]
struct ModelState {
    faults: VecDeque<Fault>,
    /// Row id → times applied.
    counts: HashMap<String, u64>,
    marks: HashMap<(String, Group), u64>,
    receipts: HashSet<(String, u64)>,
    /// An insert inside ClickHouse when tamis died, with its shard, query
    /// id and how many more requests see it running before it lands.
    in_flight: Option<(String, Vec<BatchRow<'static>>, String, u32)>,
    /// A cluster of two shards of replicated tables, which remember the
    /// blocks inserted (per shard) and drop one that is in already.
    replicated: bool,
    blocks: HashSet<(String, String)>,
    systemic_left: u32,
    crashed: bool,
}

struct Model {
    state: Mutex<ModelState>,
    crash: tokio::sync::Notify,
}

const POISON: &str = "/poison";

/// What identifies a row in the model: its page, or its property value.
fn row_id(row: &BatchRow<'_>) -> String {
    match row.kind {
        RowKind::Prop => format!("prop:{}", row.prop_value),
        _ => format!("{}:{}", row.kind.as_str(), row.page),
    }
}

fn is_poison(row: &BatchRow<'_>) -> bool {
    row.page.starts_with(POISON) || row.prop_value.starts_with(POISON)
}

impl ModelState {
    /// One insert, atomic: refused whole if any row is poison.
    fn apply(&mut self, shard: &str, rows: &[BatchRow<'static>]) -> Result<(), Failure> {
        if rows.iter().any(is_poison) {
            return Err(Failure::Refused(Refusal::Code(395)));
        }
        if self.replicated && !self.blocks.insert((shard.to_string(), format!("{rows:?}"))) {
            return Ok(());
        }
        for row in rows {
            match row.kind {
                RowKind::Receipt => {
                    self.receipts.insert((shard.to_string(), row.end_seq));
                }
                _ if row.event.starts_with(crate::sink::rows::DELIVERY_MARK)
                    || row.reason.starts_with(crate::sink::rows::DELIVERY_MARK) =>
                {
                    // Funnel marks count in `visits` (see `BatchRow::mark`).
                    *self
                        .marks
                        .entry((shard.to_string(), Group::of(row)))
                        .or_default() += row.events + row.hits + row.visits.unsigned_abs();
                }
                _ => *self.counts.entry(row_id(row)).or_default() += 1,
            }
        }
        Ok(())
    }

    /// An insert left inside ClickHouse lands after a few requests.
    fn settle(&mut self) {
        if let Some((shard, rows, id, left)) = self.in_flight.take() {
            if left == 0 {
                let _ = self.apply(&shard, &rows);
            } else {
                self.in_flight = Some((shard, rows, id, left - 1));
            }
        }
    }
}

#[derive(Clone)]
struct ModelStore(Arc<Model>);

impl ModelStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, ModelState> {
        self.0.state.lock().unwrap()
    }

    /// A dead process makes no more requests.
    async fn dead() -> ! {
        std::future::pending().await
    }
}

impl Store for ModelStore {
    async fn shards(&self) -> Result<Vec<String>, Failure> {
        Ok(if self.lock().replicated {
            vec!["1".into(), "2".into()]
        } else {
            vec![String::new()]
        })
    }

    fn deduplicates(&self) -> bool {
        self.lock().replicated
    }

    async fn insert(
        &self,
        shard: &str,
        rows: &[BatchRow<'_>],
        last: &BatchRow<'_>,
        query_id: &str,
    ) -> Result<(), Failure> {
        let all: Vec<BatchRow<'static>> = rows
            .iter()
            .chain(std::iter::once(last))
            .cloned()
            .map(BatchRow::into_owned)
            .collect();
        let crashed = {
            let mut s = self.lock();
            // As ClickHouse does: a second query with the id of one still
            // running is refused.
            if s.in_flight
                .as_ref()
                .is_some_and(|(_, _, id, _)| id == query_id)
            {
                s.settle();
                return Err(Failure::Refused(Refusal::Code(216)));
            }
            s.settle();
            if s.systemic_left > 0 {
                s.systemic_left -= 1;
                return Err(Failure::Refused(Refusal::Code(60)));
            }
            let fault = s.faults.pop_front().unwrap_or(Fault::None);
            match fault {
                Fault::None => return s.apply(shard, &all),
                Fault::LostBefore => return Err(Failure::Unclear("cut".into())),
                Fault::LostAfter => {
                    s.apply(shard, &all)?;
                    return Err(Failure::Unclear("answer lost".into()));
                }
                Fault::Passing => return Err(Failure::Refused(Refusal::Code(252))),
                Fault::RefusedAfterApplying => {
                    s.apply(shard, &all)?;
                    return Err(Failure::Refused(Refusal::Code(395)));
                }
                Fault::Systemic(n) => {
                    s.systemic_left = u32::from(n);
                    return Err(Failure::Refused(Refusal::Code(60)));
                }
                Fault::Crash => true,
                Fault::CrashAfterApplying => {
                    let _ = s.apply(shard, &all);
                    true
                }
                Fault::CrashInFlight => {
                    s.in_flight = Some((shard.to_string(), all, query_id.to_string(), 2));
                    true
                }
            }
        };
        if crashed {
            self.lock().crashed = true;
            self.0.crash.notify_one();
        }
        Self::dead().await
    }

    async fn mark(&self, shard: &str, group: &Group) -> Result<u64, Failure> {
        let mut s = self.lock();
        s.settle();
        Ok(s.marks
            .get(&(shard.to_string(), group.clone()))
            .copied()
            .unwrap_or(0))
    }

    async fn has_receipt(&self, shard: &str, end_seq: u64) -> Result<bool, Failure> {
        let mut s = self.lock();
        s.settle();
        Ok(s.receipts.contains(&(shard.to_string(), end_seq)))
    }

    async fn running_for_journal(&self, _shard: &str) -> Result<u64, Failure> {
        let mut s = self.lock();
        let running = u64::from(s.in_flight.is_some());
        s.settle();
        Ok(running)
    }

    async fn running(&self, _shard: &str, query_id: &str) -> Result<bool, Failure> {
        let mut s = self.lock();
        let running = s
            .in_flight
            .as_ref()
            .is_some_and(|(_, _, id, _)| id == query_id);
        s.settle();
        Ok(running)
    }
}

/// One row of a generated batch.
#[derive(Debug, Clone)]
struct Spec {
    site: bool,
    hour: bool,
    prop: bool,
    poison: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.08),
    )
        .prop_map(|(site, hour, prop, poison)| Spec {
            site,
            hour,
            prop,
            poison,
        })
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::LostBefore),
        1 => Just(Fault::LostAfter),
        1 => Just(Fault::Passing),
        1 => Just(Fault::RefusedAfterApplying),
        1 => (1u8..5).prop_map(Fault::Systemic),
        1 => Just(Fault::Crash),
        1 => Just(Fault::CrashAfterApplying),
        1 => Just(Fault::CrashInFlight),
    ]
}

fn dims(site: &str) -> Arc<VisitDims> {
    Arc::new(VisitDims {
        site_id: Arc::from(site),
        entry_page: "/".into(),
        source: String::new(),
        referrer: String::new(),
        utm_source: String::new(),
        utm_medium: String::new(),
        utm_campaign: String::new(),
        utm_content: String::new(),
        utm_term: String::new(),
        click_id: String::new(),
        country: String::new(),
        region: String::new(),
        browser: String::new(),
        browser_version: String::new(),
        os: String::new(),
        os_version: String::new(),
        device: "desktop",
        language: String::new(),
    })
}

/// Batches of three log records each, rows named after their batch.
fn batches(specs: &[Vec<Spec>]) -> Vec<Batch> {
    specs
        .iter()
        .enumerate()
        .map(|(b, rows)| {
            let mut batch = Batch {
                first_seq: 1 + 3 * b as u64,
                end_seq: 4 + 3 * b as u64,
                hits: rows.len() as u64,
                ..Batch::default()
            };
            for (i, r) in rows.iter().enumerate() {
                let site = if r.site { "a.example" } else { "b.example" };
                let hour = if r.hour { 7200 } else { 3600 };
                let name = format!("{}{b}-{i}", if r.poison { POISON } else { "/ok" });
                if r.prop {
                    batch.props.push(PropRow {
                        site_id: site.into(),
                        hour,
                        event: "signup".into(),
                        page: "/".into(),
                        prop_key: "plan".into(),
                        prop_value: name,
                        visitor: 0,
                        events: 1,
                    });
                } else {
                    batch.traffic.push(TrafficDelta {
                        hour,
                        dims: dims(site),
                        event: Arc::from("pageview"),
                        page: Arc::from(name.as_str()),
                        hostname: Arc::from(site),
                        consent: crate::privacy::consent::Consent::Unset,
                        visitor: 1 + i as u64,
                        pageviews: 1,
                        events: 0,
                        visits: 1,
                        bounces: 1,
                        duration: 0,
                        exits: 1,
                        engagement: Default::default(),
                    });
                }
            }
            batch
        })
        .collect()
}

/// A journal in a fresh folder holding `records` records, as the batches
/// of a test cover.
async fn journal_with(records: usize) -> (tempfile::TempDir, Arc<Metrics>, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (journal, _) = Journal::open(
        dir.path(),
        Options {
            max_bytes: 1 << 24,
            fsync: false,
        },
        metrics.clone(),
    )
    .unwrap();
    for _ in 0..records {
        journal.append(b"record").unwrap().await.unwrap().unwrap();
    }
    (dir, metrics, journal)
}

async fn run(specs: Vec<Vec<Spec>>, faults: Vec<Fault>) -> Result<(), TestCaseError> {
    run_on(specs, faults, false).await
}

/// `run`, on one server or (`replicated`) on a model of a cluster.
async fn run_on(
    specs: Vec<Vec<Spec>>,
    faults: Vec<Fault>,
    replicated: bool,
) -> Result<(), TestCaseError> {
    let batches = batches(&specs);
    let (dir, metrics, journal) = journal_with(3 * batches.len()).await;
    let model = Arc::new(Model {
        state: Mutex::new(ModelState {
            faults: faults.into(),
            replicated,
            ..ModelState::default()
        }),
        crash: tokio::sync::Notify::new(),
    });
    let store = ModelStore(model.clone());
    let new_writer = || {
        Writer::with_store(store.clone(), metrics.clone(), journal.clone())
            .with_waits(Duration::from_millis(1), Duration::from_millis(2))
    };
    let mut restarts = 0;
    let mut writer = new_writer();
    for batch in &batches {
        loop {
            let done = tokio::select! {
                _ = writer.write(batch.clone()) => true,
                _ = model.crash.notified() => false,
            };
            if done {
                break;
            }
            // tamis died: a new process, nothing in memory, the batch in
            // flight formed again from the log.
            restarts += 1;
            model.state.lock().unwrap().crashed = false;
            // Its first batch waits for the inserts the dead one left
            // running, and goes to the shard noted for it.
            writer = new_writer();
        }
    }
    let s = model.state.lock().unwrap();
    let dead_letters = std::fs::read_to_string(
        dir.path()
            .join("dead-letter")
            .join(format!("{}.jsonl", journal.id())),
    )
    .unwrap_or_default();
    for (b, batch) in batches.iter().enumerate() {
        prop_assert!(
            s.receipts.iter().any(|(_, end)| *end == batch.end_seq),
            "batch {b} has no receipt"
        );
        for (i, r) in specs[b].iter().enumerate() {
            let name = format!("{}{b}-{i}", if r.poison { POISON } else { "/ok" });
            let kind = if r.prop {
                RowKind::Prop
            } else {
                RowKind::Traffic
            };
            let id = format!("{}:{name}", kind.as_str());
            let count = s.counts.get(&id).copied().unwrap_or(0);
            let dead = dead_letters.contains(&format!("\"{name}\""));
            if r.poison {
                prop_assert_eq!(count, 0, "{} applied ({} restarts)", id, restarts);
                prop_assert!(dead, "{} not dead-lettered", id);
            } else {
                prop_assert_eq!(
                    count,
                    1,
                    "{} applied {} times ({} restarts)",
                    id,
                    count,
                    restarts
                );
                prop_assert!(!dead, "{} dead-lettered", id);
            }
        }
    }
    // Every group's mark ends at the end of the last batch that had it, in
    // the shard that batch went to; in no shard past it.
    let mut furthest: HashMap<Group, u64> = HashMap::new();
    for ((_, group), at) in &s.marks {
        let far = furthest.entry(group.clone()).or_default();
        *far = (*far).max(*at);
    }
    let mut expected: HashMap<Group, u64> = HashMap::new();
    for batch in &batches {
        for row in batch
            .traffic
            .iter()
            .map(BatchRow::traffic)
            .chain(batch.props.iter().map(BatchRow::prop))
        {
            expected.insert(Group::of(&row), batch.end_seq << SHIFT);
        }
    }
    prop_assert_eq!(&furthest, &expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn the_writer_applies_every_row_once_whatever_fails(
        specs in prop::collection::vec(prop::collection::vec(spec(), 1..14), 1..5),
        faults in prop::collection::vec(fault(), 0..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run(specs, faults))
                .await
                .map_err(|_| TestCaseError::fail("the writer stalled"))?
        })?;
    }

    /// The same on a cluster: batches spread over two shards, inserts
    /// whose answer was lost sent again as they were, ClickHouse dropping
    /// the copy when the first went in.
    #[test]
    fn on_a_cluster_the_writer_applies_every_row_once_whatever_fails(
        specs in prop::collection::vec(prop::collection::vec(spec(), 1..14), 1..5),
        faults in prop::collection::vec(fault(), 0..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(60), run_on(specs, faults, true))
                .await
                .map_err(|_| TestCaseError::fail("the writer stalled"))?
        })?;
    }
}

/// Regression: a crash in the middle of isolating refused rows sent every
/// row from the partial mark again, so pieces already in were counted
/// twice. A crash at each insert of the walk in turn.
#[test]
fn crash_during_bisection_counts_rows_twice() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let specs = vec![(0..9)
        .map(|i| Spec {
            site: true,
            hour: true,
            prop: false,
            poison: i == 6,
        })
        .collect::<Vec<_>>()];
    for crash_at in 0..12 {
        let mut faults = vec![Fault::None; crash_at];
        faults.push(Fault::CrashAfterApplying);
        rt.block_on(run(specs.clone(), faults.clone())).unwrap();
        faults.pop();
        faults.push(Fault::CrashInFlight);
        rt.block_on(run(specs.clone(), faults)).unwrap();
    }
}

/// Regression: a refused receipt was logged as "the batch's records stay
/// in the log", and the next batch's confirm deleted them without one.
/// Now the receipt is retried until it is in, before any later batch.
#[test]
fn records_confirmed_without_their_receipt() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let specs = vec![
        vec![Spec {
            site: true,
            hour: true,
            prop: false,
            poison: false,
        }],
        vec![Spec {
            site: false,
            hour: true,
            prop: false,
            poison: false,
        }],
    ];
    // The first batch's receipt meets ClickHouse refusing everything.
    rt.block_on(run(specs, vec![Fault::None, Fault::Systemic(4)]))
        .unwrap();
}

/// Regression: when the in-flight note could not be written the batch was
/// sent anyway, so a crash during its inserts could count part of it
/// twice. Now nothing is sent until the note is durable. The note is made
/// impossible by a folder where its temporary file goes.
#[test]
fn in_flight_note_failures() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (dir, metrics, journal) = journal_with(3).await;
        let model = Arc::new(Model {
            state: Mutex::new(ModelState::default()),
            crash: tokio::sync::Notify::new(),
        });
        let mut writer = Writer::with_store(ModelStore(model.clone()), metrics, journal)
            .with_waits(Duration::from_millis(1), Duration::from_millis(5));
        let blocker = dir.path().join("in-flight.tmp");
        std::fs::create_dir(&blocker).unwrap();
        let specs = vec![vec![Spec {
            site: true,
            hour: true,
            prop: false,
            poison: false,
        }]];
        let batch = batches(&specs).remove(0);
        let write = writer.write(batch);
        tokio::pin!(write);
        // Many failed attempts at the note, and nothing sent meanwhile.
        let waited = tokio::time::timeout(Duration::from_millis(300), &mut write).await;
        assert!(waited.is_err(), "the batch was written without its note");
        {
            let s = model.state.lock().unwrap();
            assert!(s.counts.is_empty() && s.marks.is_empty() && s.receipts.is_empty());
        }
        std::fs::remove_dir(&blocker).unwrap();
        tokio::time::timeout(Duration::from_secs(10), write)
            .await
            .expect("the batch is written once the note can be");
        let s = model.state.lock().unwrap();
        assert_eq!(s.counts.values().sum::<u64>(), 1);
        assert!(s.receipts.contains(&(String::new(), 4)));
    });
}

/// Regression: on a cluster the two controls of an isolation were the same
/// block (a mark step of one, the same journal, site and hour), so a
/// replicated table dropped the second as a copy of the first and the
/// mark never reached its target. Each step's mark now names its end.
#[test]
fn identical_mark_steps_were_dropped_as_copies_on_a_cluster() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let poison_only = vec![vec![Spec {
        site: false,
        hour: false,
        prop: false,
        poison: true,
    }]];
    rt.block_on(run_on(poison_only, Vec::new(), true)).unwrap();
}
