//! The one source of "now". Salt rotation, sessions and batching read time
//! through a [`Clock`] so tests can move it across midnight.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

/// Wall-clock time, or a manual clock that tests set and advance.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual_ms: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock { manual_ms: None }
    }

    /// A clock that only moves when told to, starting at `start`.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Clock {
            manual_ms: Some(Arc::new(AtomicI64::new(start.timestamp_millis()))),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual_ms {
            None => Utc::now(),
            Some(ms) => Utc
                .timestamp_millis_opt(ms.load(Ordering::Relaxed))
                .single()
                .unwrap_or_else(Utc::now),
        }
    }

    /// Moves a manual clock to `to`; does nothing to the system clock.
    pub fn set(&self, to: DateTime<Utc>) {
        if let Some(ms) = &self.manual_ms {
            ms.store(to.timestamp_millis(), Ordering::Relaxed);
        }
    }

    pub fn is_manual(&self) -> bool {
        self.manual_ms.is_some()
    }
}
