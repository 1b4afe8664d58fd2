//! Isolating the rows ClickHouse refuses, so that one bad row costs one
//! row and never stalls delivery, and so that a crash in the middle never
//! counts a row twice.
//!
//! A group (one kind, site and hour) that ClickHouse refused is split in
//! halves until each refused row is alone. Every piece that goes in moves
//! the group's delivery mark one step ([`Bisection`]); a row refused alone
//! is dead-lettered only after ClickHouse took a delivery mark alone right
//! after it (the *control*): if it refuses that too, the cause is not the
//! row (a table gone, a permission, a full disk) and nothing is
//! dead-lettered. The walk is deterministic, so it is written down as it
//! goes ([`Isolation`], two files in the log folder, fsync'd): after a
//! crash the same rows are split the same way, the outcomes noted are
//! replayed, and the one step that may have happened unnoted is settled
//! by the mark. Rows are kept as they were first sent, because rows
//! re-formed by replay after a restart may differ (visits seen before the
//! restart are gone from memory).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Group;
use crate::sink::refusal::{Category, Refusal};
use crate::sink::rows::BatchRow;

/// The rows under isolation, written once before its first piece.
const ROWS_FILE: &str = "isolating.json";
/// One line per outcome, appended and fsync'd as they happen.
const STEPS_FILE: &str = "isolating.steps";

/// What the walk does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Insert these rows with a mark step.
    Insert(Range<usize>),
    /// The row was refused alone: a mark step alone tells whether
    /// ClickHouse takes anything at all.
    Control(usize, Refusal),
    /// Every row is in or dead-lettered: the last mark step, to the
    /// group's target.
    Finish,
}

/// What an action came to; noted in this order, one line each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The piece went in (one mark step).
    Applied,
    /// The piece was refused and is split in halves.
    Split,
    /// The row was refused alone, with this refusal; a control follows.
    Refused(Refusal),
    /// The control went in (one mark step): the row is dead-lettered, or
    /// tried once more ([`Bisection::control_condemns`]).
    ControlPassed,
    /// The control was refused too: not the row's fault; it is tried again.
    ControlRefused,
}

/// The walk over a group's rows, as a pure state machine: the same
/// outcomes give the same actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bisection {
    /// Ranges still to insert, the next one last.
    stack: Vec<Range<usize>>,
    /// A row refused alone, waiting for its control.
    pending: Option<(usize, Refusal)>,
    /// Times the row on top was refused alone with a control passing right
    /// after.
    strikes: u8,
    /// Mark steps taken (pieces applied and controls passed).
    pub steps: u64,
    /// Rows dead-lettered, in order, with their refusal.
    pub dead: Vec<(usize, Refusal)>,
}

impl Bisection {
    pub fn new(rows: usize) -> Bisection {
        Bisection {
            stack: if rows > 0 {
                std::iter::once(0..rows).collect()
            } else {
                Vec::new()
            },
            pending: None,
            strikes: 0,
            steps: 0,
            dead: Vec::new(),
        }
    }

    pub fn next(&self) -> Action {
        if let Some((row, refusal)) = self.pending {
            return Action::Control(row, refusal);
        }
        match self.stack.last() {
            Some(range) => Action::Insert(range.clone()),
            None => Action::Finish,
        }
    }

    /// Whether a control passing now condemns the row: at once for a
    /// refusal about data, and for any other refusal only the second time
    /// in a row (a passing cause that ended between the refusal and the
    /// control must not cost a good row).
    pub fn control_condemns(&self) -> bool {
        match self.pending {
            Some((_, refusal)) => refusal.category() == Category::Data || self.strikes >= 1,
            None => false,
        }
    }

    /// Whether `outcome` can follow the next action. Checked before an
    /// outcome is replayed: a steps file that does not fit the rows is not
    /// trusted past that point.
    pub fn accepts(&self, outcome: Outcome) -> bool {
        match (self.next(), outcome) {
            (Action::Insert(_), Outcome::Applied) => true,
            (Action::Insert(r), Outcome::Split) => r.len() > 1,
            (Action::Insert(r), Outcome::Refused(_)) => r.len() == 1,
            (Action::Control(..), Outcome::ControlPassed | Outcome::ControlRefused) => true,
            _ => false,
        }
    }

    /// Moves on by `outcome` of [`Bisection::next`]. Returns false, and
    /// changes nothing, for an outcome that cannot follow it.
    pub fn record(&mut self, outcome: Outcome) -> bool {
        if !self.accepts(outcome) {
            return false;
        }
        match outcome {
            Outcome::Applied => {
                self.stack.pop();
                self.steps += 1;
                self.strikes = 0;
            }
            Outcome::Split => {
                if let Some(range) = self.stack.pop() {
                    let half = range.start + range.len().div_ceil(2);
                    // The first half is tried first.
                    self.stack.push(half..range.end);
                    self.stack.push(range.start..half);
                }
            }
            Outcome::Refused(refusal) => {
                if let Some(range) = self.stack.last() {
                    self.pending = Some((range.start, refusal));
                }
            }
            Outcome::ControlPassed => {
                let condemned = self.control_condemns();
                self.steps += 1;
                if let Some(dead) = self.pending.take() {
                    if condemned {
                        self.stack.pop();
                        self.dead.push(dead);
                        self.strikes = 0;
                    } else {
                        self.strikes += 1;
                    }
                }
            }
            // The row stays next, to be tried again after a wait; what
            // was seen of it so far proves nothing.
            Outcome::ControlRefused => {
                self.pending = None;
                self.strikes = 0;
            }
        }
        true
    }
}

/// A group under isolation, as written down.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Isolation {
    pub group: Group,
    /// The batch it belongs to.
    pub first_seq: u64,
    pub end_seq: u64,
    /// The mark when the walk began (after the first control).
    pub base: u64,
    /// The mark once the group is wholly applied.
    pub target: u64,
    pub rows: Vec<BatchRow<'static>>,
    #[serde(skip)]
    pub outcomes: Vec<Outcome>,
}

impl Isolation {
    /// Writes the rows down, durably, with no outcome yet. Replaces any
    /// earlier isolation (finished, or of rows that are in since).
    pub fn begin(&self, dir: &Path) -> io::Result<()> {
        let text = serde_json::to_vec(self).map_err(io::Error::other)?;
        crate::journal::replace_file(dir, STEPS_FILE, b"", true)?;
        crate::journal::replace_file(dir, ROWS_FILE, &text, true)
    }

    /// Notes an outcome, durably, before anything that depends on it.
    pub fn note(&mut self, dir: &Path, outcome: Outcome) -> io::Result<()> {
        let mut line = serde_json::to_vec(&outcome).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(dir.join(STEPS_FILE))?;
        file.write_all(&line)?;
        file.sync_data()?;
        self.outcomes.push(outcome);
        Ok(())
    }

    /// The isolation under way when tamis stopped, if any: its rows, and
    /// the outcomes noted (a torn last line was never acted on).
    pub fn load(dir: &Path) -> io::Result<Option<Isolation>> {
        let text = match fs::read(dir.join(ROWS_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut isolation: Isolation = serde_json::from_slice(&text).map_err(io::Error::other)?;
        let steps = match fs::read_to_string(dir.join(STEPS_FILE)) {
            Ok(steps) => steps,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut walk = Bisection::new(isolation.rows.len());
        for line in steps.lines() {
            match serde_json::from_str::<Outcome>(line) {
                Ok(outcome) if walk.record(outcome) => isolation.outcomes.push(outcome),
                // A torn last line: its outcome was never acted on.
                _ => break,
            }
        }
        Ok(Some(isolation))
    }

    /// The walk as far as the outcomes noted take it.
    pub fn walk(&self) -> Bisection {
        let mut walk = Bisection::new(self.rows.len());
        for outcome in &self.outcomes {
            walk.record(*outcome);
        }
        walk
    }

    /// The group is wholly applied: its notes go.
    pub fn end(dir: &Path) -> io::Result<()> {
        for name in [ROWS_FILE, STEPS_FILE] {
            match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs the walk over `rows` rows of which `bad` are refused; returns
    /// the rows applied (each piece's rows) and the dead ones.
    fn run(rows: usize, bad: &[usize]) -> (Vec<usize>, Vec<usize>, u64) {
        let mut walk = Bisection::new(rows);
        let mut applied = Vec::new();
        let mut guard = 0;
        loop {
            guard += 1;
            assert!(guard < 10 * rows + 10, "the walk does not end");
            let outcome = match walk.next() {
                Action::Finish => break,
                Action::Insert(r) if r.clone().any(|i| bad.contains(&i)) => {
                    if r.len() > 1 {
                        Outcome::Split
                    } else {
                        Outcome::Refused(Refusal::Code(395))
                    }
                }
                Action::Insert(r) => {
                    applied.extend(r);
                    Outcome::Applied
                }
                Action::Control(..) => Outcome::ControlPassed,
            };
            assert!(walk.record(outcome));
        }
        let dead = walk.dead.iter().map(|(i, _)| *i).collect();
        (applied, dead, walk.steps)
    }

    #[test]
    fn one_bad_row_among_many_is_the_only_one_left_out() {
        let (mut applied, dead, steps) = run(601, &[417]);
        applied.sort();
        assert_eq!(dead, vec![417]);
        assert_eq!(applied.len(), 600);
        assert!(!applied.contains(&417));
        // One mark step per piece in and per control: far below the 2^20
        // steps a mark has between two record numbers.
        assert!(steps < 40, "{steps} steps");
    }

    #[test]
    fn outcomes_that_do_not_fit_are_refused() {
        let mut walk = Bisection::new(1);
        assert!(!walk.record(Outcome::Split));
        assert!(!walk.record(Outcome::ControlPassed));
        assert!(walk.record(Outcome::Refused(Refusal::Code(27))));
        assert_eq!(walk.next(), Action::Control(0, Refusal::Code(27)));
        assert!(walk.record(Outcome::ControlRefused));
        assert_eq!(walk.next(), Action::Insert(0..1));
    }

    #[test]
    fn a_row_refused_for_another_reason_is_condemned_only_the_second_time() {
        let table_gone = Refusal::Code(60);
        let mut walk = Bisection::new(1);
        assert!(walk.record(Outcome::Refused(table_gone)));
        assert!(!walk.control_condemns());
        assert!(walk.record(Outcome::ControlPassed));
        assert_eq!(walk.next(), Action::Insert(0..1));
        assert!(walk.record(Outcome::Refused(table_gone)));
        assert!(walk.control_condemns());
        assert!(walk.record(Outcome::ControlPassed));
        assert_eq!(walk.dead, vec![(0, table_gone)]);
        assert_eq!(walk.next(), Action::Finish);
        // A bad value is condemned at once.
        let mut walk = Bisection::new(1);
        assert!(walk.record(Outcome::Refused(Refusal::Code(27))));
        assert!(walk.control_condemns());
    }

    proptest! {
        /// Every row is applied exactly once or dead-lettered, and only
        /// refused rows are dead-lettered.
        #[test]
        fn every_row_is_applied_once_or_dead(rows in 1usize..200, bad in proptest::collection::vec(0usize..200, 0..6)) {
            let bad: Vec<usize> = bad.into_iter().filter(|b| *b < rows).collect();
            let (mut applied, mut dead, _) = run(rows, &bad);
            applied.sort();
            let before = applied.len();
            applied.dedup();
            prop_assert_eq!(before, applied.len());
            dead.sort();
            dead.dedup();
            let mut expected_dead = bad.clone();
            expected_dead.sort();
            expected_dead.dedup();
            prop_assert_eq!(&dead, &expected_dead);
            prop_assert_eq!(applied.len() + dead.len(), rows);
        }
    }

    #[test]
    fn notes_survive_a_restart_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<BatchRow<'static>> = (0..3)
            .map(|_| BatchRow::blank(crate::sink::rows::RowKind::Traffic))
            .collect();
        let mut isolation = Isolation {
            group: Group {
                kind: crate::sink::rows::RowKind::Traffic,
                site: "example.org".into(),
                hour: 3600,
            },
            first_seq: 1,
            end_seq: 9,
            base: 1 << 20,
            target: 9 << 20,
            rows,
            outcomes: Vec::new(),
        };
        isolation.begin(dir.path()).unwrap();
        isolation.note(dir.path(), Outcome::Split).unwrap();
        isolation.note(dir.path(), Outcome::Applied).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(STEPS_FILE))
            .unwrap();
        file.write_all(b"\"Appl").unwrap();
        let back = Isolation::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.outcomes, vec![Outcome::Split, Outcome::Applied]);
        assert_eq!(back.walk().next(), Action::Insert(2..3));
        assert_eq!(back.rows.len(), 3);
        Isolation::end(dir.path()).unwrap();
        assert!(Isolation::load(dir.path()).unwrap().is_none());
    }
}
