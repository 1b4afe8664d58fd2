//! Taking a `std::sync::Mutex` whose state is changed in several steps (the
//! journal's segment list and counters, the aggregator's sessions and
//! rows). A panic while such a lock was held leaves that state half
//! changed, and nothing in memory can say which half: the process stops
//! instead of reading it, and the next start recovers from the journal on
//! disk, which is the source of truth. Must not be used for a lock guarding
//! a value written in one step: those take the guard back from a poisoned
//! lock and continue, with a comment saying why where they lock.

use std::sync::LockResult;

/// The guard (or whatever a lock or condition-variable wait gives back),
/// unless a thread panicked while holding the lock: then logs which
/// `state` it guarded and aborts the process.
///
/// Aborts rather than panics: release builds unwind, and a panic ends only
/// the thread or tokio task it happens in, so the rest of tamis would keep
/// accepting hits in front of a stage that stopped, or stop silently. An
/// abort ends everything at once, and a supervisor's restart replays the
/// log from the last receipt.
pub fn or_abort<G>(result: LockResult<G>, state: &'static str) -> G {
    match result {
        Ok(guard) => guard,
        Err(_) => {
            tracing::error!(
                state,
                "a thread panicked while changing this state; stopping, the next start recovers from the durable log"
            );
            eprintln!("tamis: a thread panicked while changing {state}; aborting");
            std::process::abort()
        }
    }
}
