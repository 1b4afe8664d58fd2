//! The in-memory hand-off from ingest to the feeder: each logged hit's
//! messages, as the request handler made them, once its record is durable.
//! The feeder takes them from here instead of reading the log back and
//! decoding it; it reads the log only for what is not here (replay after a
//! restart, and records that arrived while the hand-off was full). The log
//! stays the single source of truth: a record is here only after it is
//! durable, under its sequence number, and decoding it would give the same
//! messages (`journal::record`'s round-trip tests).
//!
//! Pushes come from the journal's appender thread, in log order
//! (`journal::OnDurable`), before the record's durable end is published;
//! so when the feeder finds the log's durable end past its position and
//! nothing here at that position, the record was not handed on and must be
//! read from the log.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Logged, Message};

/// Records held at most: past it, records are left to be read from the
/// log (memory stays bounded while the feeder waits for the aggregator).
pub const CAPACITY: usize = 16_384;

pub struct Handoff {
    state: Mutex<State>,
    /// Signalled on a push while the feeder waits.
    arrived: Condvar,
    capacity: usize,
}

struct State {
    records: VecDeque<(u64, Vec<Message>)>,
    /// The feeder sleeps on `arrived`: only then is a push worth a wake-up.
    waiting: bool,
}

/// What [`Handoff::take`] found at the feeder's position.
pub enum Taken {
    /// Records from the position on, consecutive.
    Records(Vec<Logged>),
    /// Nothing at the position; the first record held, if any, is further
    /// on: the ones before it are to be read from the log.
    Missing { next_held: Option<u64> },
}

impl Handoff {
    pub fn new(capacity: usize) -> Handoff {
        Handoff {
            state: Mutex::new(State {
                records: VecDeque::new(),
                waiting: false,
            }),
            arrived: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock::or_abort(self.state.lock(), "the feeder's hand-off")
    }

    /// Hands on record `seq`'s messages; left out when full (the feeder
    /// reads them from the log instead).
    pub fn push(&self, seq: u64, messages: Vec<Message>) {
        let mut state = self.lock();
        if state.records.len() >= self.capacity {
            return;
        }
        state.records.push_back((seq, messages));
        if std::mem::take(&mut state.waiting) {
            drop(state);
            self.arrived.notify_one();
        }
    }

    /// Up to `max` consecutive records from `next` on, dropping any held
    /// below it (already read from the log).
    pub fn take(&self, next: u64, max: usize) -> Taken {
        let mut state = self.lock();
        while state.records.front().is_some_and(|(seq, _)| *seq < next) {
            state.records.pop_front();
        }
        let consecutive = (state.records.iter().map(|(seq, _)| *seq))
            .zip(next..)
            .take(max)
            .take_while(|(seq, expected)| seq == expected)
            .count();
        let out: Vec<Logged> = (state.records.drain(..consecutive))
            .map(|(seq, messages)| (seq, Some(messages)))
            .collect();
        if out.is_empty() {
            return Taken::Missing {
                next_held: state.records.front().map(|(seq, _)| *seq),
            };
        }
        Taken::Records(out)
    }

    /// Waits at most `wait` for a push, unless one is already held.
    pub fn wait(&self, wait: Duration) {
        let mut state = self.lock();
        if !state.records.is_empty() {
            return;
        }
        state.waiting = true;
        let (mut state, _) = crate::lock::or_abort(
            self.arrived.wait_timeout(state, wait),
            "the feeder's hand-off",
        );
        state.waiting = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::pipeline::{DropReason, Dropped};

    fn message() -> Vec<Message> {
        vec![Message::Dropped(
            Dropped {
                reason: DropReason::Bot,
                site: None,
            },
            chrono::Utc::now(),
        )]
    }

    fn seqs(taken: Taken) -> Vec<u64> {
        match taken {
            Taken::Records(records) => records.into_iter().map(|(seq, _)| seq).collect(),
            Taken::Missing { .. } => panic!("nothing taken"),
        }
    }

    impl Handoff {
        fn len(&self) -> usize {
            self.lock().records.len()
        }
    }

    #[test]
    fn records_come_out_in_order_from_the_position_and_stop_at_a_gap() {
        let handoff = Handoff::new(10);
        for seq in [1, 2, 3, 5, 6] {
            handoff.push(seq, message());
        }
        assert_eq!(seqs(handoff.take(1, 10)), vec![1, 2, 3]);
        // 4 was never handed on: the feeder reads it from the log.
        assert!(matches!(
            handoff.take(4, 10),
            Taken::Missing { next_held: Some(5) }
        ));
        assert_eq!(seqs(handoff.take(5, 1)), vec![5]);
        assert_eq!(seqs(handoff.take(6, 10)), vec![6]);
        assert!(matches!(
            handoff.take(7, 10),
            Taken::Missing { next_held: None }
        ));
    }

    #[test]
    fn records_already_read_from_the_log_are_dropped() {
        let handoff = Handoff::new(10);
        for seq in 1..=4 {
            handoff.push(seq, message());
        }
        assert_eq!(seqs(handoff.take(3, 10)), vec![3, 4]);
        assert_eq!(handoff.len(), 0);
    }

    #[test]
    fn a_full_handoff_leaves_records_to_the_log() {
        let handoff = Handoff::new(2);
        for seq in 1..=3 {
            handoff.push(seq, message());
        }
        assert_eq!(handoff.len(), 2);
        assert_eq!(seqs(handoff.take(1, 10)), vec![1, 2]);
        handoff.push(4, message());
        assert!(matches!(
            handoff.take(3, 10),
            Taken::Missing { next_held: Some(4) }
        ));
    }
}
