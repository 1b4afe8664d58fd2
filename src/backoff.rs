//! Waiting between attempts: one doubling delay with a ceiling, used by
//! every loop that retries something ClickHouse or the disk refused for
//! now (inserts, mark look-ups, the in-flight note, migrations, the audit
//! record). Owns no policy beyond that: callers decide what is worth
//! retrying.

use std::time::Duration;

/// A delay that doubles after each failed attempt, up to `max`, and starts
/// over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt (for log lines), without waiting.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// The delay to wait now; the next one is twice as long, up to `max`.
    pub fn step(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    /// Waits the current delay (tokio's timer) and lengthens the next.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.step()).await;
    }

    /// Waits the current delay on a plain thread and lengthens the next.
    pub fn wait_blocking(&mut self) {
        std::thread::sleep(self.step());
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_its_ceiling_and_starts_over_after_a_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let steps: Vec<_> = (0..5).map(|_| b.step()).collect();
        assert_eq!(steps, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.peek(), ms(100));
    }
}
