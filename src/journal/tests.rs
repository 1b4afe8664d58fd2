//! The journal against an in-memory model: random sequences of appends,
//! confirmations, restarts and torn or damaged writes, checking after each
//! step that reading back gives exactly the model's unconfirmed records.

use std::collections::BTreeMap;
use std::io::Write;

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// Appends this many records of these sizes.
    Append(Vec<u16>),
    /// Confirms this share (in percent) of the unconfirmed records.
    Confirm(u8),
    /// Drops the journal and opens it again.
    Restart,
    /// A crash in the middle of a write: half a record at the end of the
    /// newest segment, then a restart.
    TornRestart,
    /// Flips a byte in the payload of one unconfirmed record, then restarts.
    DamageRestart(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0u16..3000, 1..20).prop_map(Op::Append),
        3 => (0u8..=100).prop_map(Op::Confirm),
        1 => Just(Op::Restart),
        1 => Just(Op::TornRestart),
        1 => (0u8..=255).prop_map(Op::DamageRestart),
    ]
}

/// What the journal must hold: unconfirmed records by number, `None` for
/// one that was damaged on disk.
struct Model {
    records: BTreeMap<u64, Option<Vec<u8>>>,
    confirmed_end: u64,
    next_seq: u64,
}

fn payload(seq: u64, size: u16) -> Vec<u8> {
    (0..size)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn open(dir: &Path, max_bytes: u64) -> (Journal, Recovery) {
    Journal::open(
        dir,
        Options {
            max_bytes,
            fsync: true,
        },
        Arc::new(Metrics::default()),
    )
    .unwrap()
}

/// Every unconfirmed record, read back from the start.
fn read_all(journal: &Journal, from: u64) -> Vec<Entry> {
    let mut reader = journal.reader(from);
    let mut out = Vec::new();
    loop {
        let got = reader.read(10_000, Duration::from_millis(20)).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

fn segments(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            segment::parse_name(&e.file_name().to_string_lossy()).map(|f| (f, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn check_against(journal: &Journal, model: &Model) {
    let read = read_all(journal, model.confirmed_end);
    let expected: Vec<Entry> = model
        .records
        .iter()
        .map(|(seq, p)| match p {
            Some(p) => Entry::Record {
                seq: *seq,
                payload: p.clone(),
            },
            None => Entry::Corrupt { seq: *seq },
        })
        .collect();
    assert_eq!(read, expected);
    assert_eq!(journal.durable_end(), model.next_seq);
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let max_bytes = 1 << 20;
    let (mut journal, _) = open(dir.path(), max_bytes);
    let mut model = Model {
        records: BTreeMap::new(),
        confirmed_end: 1,
        next_seq: 1,
    };
    for op in ops {
        match op {
            Op::Append(sizes) => {
                let waits: Vec<_> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, size)| {
                        let p = payload(model.next_seq + i as u64, *size);
                        (journal.append(&p), p)
                    })
                    .collect();
                for (wait, p) in waits {
                    match wait {
                        Ok(rx) => {
                            let seq = rx.blocking_recv().unwrap().unwrap();
                            assert_eq!(seq, model.next_seq, "numbers follow the order of appends");
                            model.records.insert(seq, Some(p));
                            model.next_seq += 1;
                        }
                        Err(AppendError::Full { .. }) => {
                            let on_disk: u64 = segments(dir.path())
                                .iter()
                                .map(|(_, p)| fs::metadata(p).unwrap().len())
                                .sum();
                            assert!(
                                on_disk + HEADER + p.len() as u64 > max_bytes,
                                "refused with room left"
                            );
                        }
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            Op::Confirm(share) => {
                let unconfirmed = model.next_seq - model.confirmed_end;
                let end = model.confirmed_end + unconfirmed * u64::from(share) / 100;
                journal.confirm(end);
                model.confirmed_end = end;
                model.records = model.records.split_off(&end);
            }
            Op::Restart | Op::TornRestart | Op::DamageRestart(_) => {
                if let Op::DamageRestart(pick) = op {
                    let intact: Vec<u64> = model
                        .records
                        .iter()
                        .filter(|(_, p)| p.as_ref().is_some_and(|p| !p.is_empty()))
                        .map(|(s, _)| *s)
                        .collect();
                    if !intact.is_empty() {
                        let seq = intact[pick as usize % intact.len()];
                        damage(dir.path(), seq);
                        model.records.insert(seq, None);
                    }
                }
                if matches!(op, Op::TornRestart) {
                    let (_, newest) = segments(dir.path()).pop().unwrap();
                    let mut f = OpenOptions::new().append(true).open(newest).unwrap();
                    let mut framed = Vec::new();
                    segment::frame(&[7u8; 100], &mut framed);
                    f.write_all(&framed[..framed.len() / 2]).unwrap();
                }
                drop(journal);
                let (reopened, recovery) = open(dir.path(), max_bytes);
                journal = reopened;
                assert_eq!(
                    recovery.next_seq, model.next_seq,
                    "numbering survives restarts"
                );
                assert_eq!(
                    recovery.torn_tails,
                    u64::from(matches!(op, Op::TornRestart))
                );
                // After a restart the caller confirms what ClickHouse holds.
                journal.confirm(model.confirmed_end);
            }
        }
        check_against(&journal, &model);
        for (_, path) in segments(dir.path()) {
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}

/// Flips the first payload byte of record `seq`.
fn damage(dir: &Path, seq: u64) {
    let (first, path) = segments(dir)
        .into_iter()
        .filter(|(f, _)| *f <= seq)
        .next_back()
        .unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let mut offset = 0usize;
    for _ in first..seq {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += HEADER as usize + len;
    }
    bytes[offset + HEADER as usize] ^= 0x5a;
    fs::write(&path, bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn the_journal_behaves_like_its_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}

#[test]
fn a_full_log_refuses_and_takes_appends_again_once_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = open(dir.path(), 64 * 1024);
    let mut last = 0;
    let refused = loop {
        match journal.append(&[1u8; 1000]) {
            Ok(rx) => last = rx.blocking_recv().unwrap().unwrap(),
            Err(e) => break e,
        }
    };
    assert!(matches!(refused, AppendError::Full { .. }), "{refused}");
    journal.confirm(last + 1);
    // The active segment is rotated away on the next write once it holds
    // only confirmed records, and then deleted.
    let mut appended = 0;
    for _ in 0..200 {
        if let Ok(rx) = journal.append(&[2u8; 1000]) {
            rx.blocking_recv().unwrap().unwrap();
            appended += 1;
        }
    }
    assert!(
        appended > 50,
        "only {appended} appends after confirming everything"
    );
}

#[test]
fn the_directory_and_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (journal, _) = open(&log, 1 << 20);
    journal
        .append(b"x")
        .unwrap()
        .blocking_recv()
        .unwrap()
        .unwrap();
    assert_eq!(
        fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in fs::read_dir(&log).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().permissions().mode() & 0o777,
            0o600,
            "{:?}",
            entry.file_name()
        );
    }
}
