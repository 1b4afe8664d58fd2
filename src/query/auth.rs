//! Bearer tokens: configured as SHA-256 digests, compared in constant time.
//! A token that may not read a site gets the same answer as a site that does
//! not exist, so tokens cannot probe which sites are configured.
//!
//! Refused tokens are slowed down per client network ([`Throttle`]): after
//! [`FREE_FAILURES`] refusals, a network gets 429 with Retry-After for a
//! delay that doubles with each further refusal. Networks are keyed by the
//! truncated address (`privacy::ip::truncate`), never the full one, and the
//! token a client sent is never kept or logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Disclosure, TokenSettings};
use crate::privacy::ip::TruncatedIp;

#[derive(Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// No token, or an unknown one.
    Unauthorized,
    Granted {
        token: &'a str,
        sites: &'a [String],
        admin: bool,
        disclosure: Disclosure,
    },
}

pub fn authorize<'a>(authorization: Option<&str>, tokens: &'a [TokenSettings]) -> Access<'a> {
    let Some(secret) = authorization
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Access::Unauthorized;
    };
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    // Every configured token is compared, matched or not, so timing does
    // not tell which one came close.
    let mut found = None;
    for token in tokens {
        if bool::from(token.secret_sha256.ct_eq(&digest)) {
            found = Some(token);
        }
    }
    match found {
        Some(t) => Access::Granted {
            token: &t.name,
            sites: &t.sites,
            admin: t.admin,
            disclosure: t.disclosure,
        },
        None => Access::Unauthorized,
    }
}

/// What a request's `Authorization` header amounts to, for the throttle:
/// no token at all is not a guess.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    NoToken,
    Refused,
    Accepted,
}

pub fn attempt(authorization: Option<&str>, tokens: &[TokenSettings]) -> Attempt {
    match (authorization, authorize(authorization, tokens)) {
        (_, Access::Granted { .. }) => Attempt::Accepted,
        (None, Access::Unauthorized) => Attempt::NoToken,
        (Some(_), Access::Unauthorized) => Attempt::Refused,
    }
}

/// Refusals a network may have before it is slowed down.
pub const FREE_FAILURES: u32 = 5;
/// The first delay after the free refusals; each further refusal doubles it.
const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// A network without a refusal for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Networks remembered at once, so the throttle's memory is bounded.
const MAX_NETWORKS: usize = 10_000;

/// Refused tokens by client network.
#[derive(Debug, Default)]
pub struct Throttle {
    networks: Mutex<HashMap<TruncatedIp, Strikes>>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle::default()
    }

    /// `Err(wait)` while `network` must wait before its next try.
    pub fn check(&self, network: TruncatedIp, now: Instant) -> Result<(), Duration> {
        let networks = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        match networks.get(&network).and_then(|s| s.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Notes a refused token from `network`; returns the wait it now has.
    pub fn failed(&self, network: TruncatedIp, now: Instant) -> Option<Duration> {
        let mut networks = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        if networks.len() >= MAX_NETWORKS && !networks.contains_key(&network) {
            networks.retain(|_, s| now.saturating_duration_since(s.last) < FORGET_AFTER);
            if networks.len() >= MAX_NETWORKS {
                // Still full: the network refused longest ago makes room, so
                // new guessers are always tracked.
                let oldest = networks.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    networks.remove(&oldest);
                }
            }
        }
        let strikes = networks.entry(network).or_insert(Strikes {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if now.saturating_duration_since(strikes.last) >= FORGET_AFTER {
            strikes.failures = 0;
        }
        strikes.failures = strikes.failures.saturating_add(1);
        strikes.last = now;
        let wait = delay(strikes.failures);
        strikes.blocked_until = wait.map(|w| now + w);
        wait
    }

    /// A token from `network` was accepted: its refusals are forgotten.
    pub fn succeeded(&self, network: TruncatedIp) {
        let mut networks = self.networks.lock().unwrap_or_else(|e| e.into_inner());
        networks.remove(&network);
    }
}

/// The wait after the `failures`-th refusal: none for the free ones, then
/// 1 s, 2 s, 4 s, … up to [`MAX_DELAY`].
fn delay(failures: u32) -> Option<Duration> {
    let over = failures.checked_sub(FREE_FAILURES + 1)?;
    let factor = 1u32.checked_shl(over.min(20)).unwrap_or(u32::MAX);
    Some(FIRST_DELAY.saturating_mul(factor).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<TokenSettings> {
        vec![TokenSettings {
            name: "dashboard".into(),
            secret_sha256: Sha256::digest(b"s3cret").into(),
            sites: vec!["example.org".into()],
            admin: false,
            disclosure: Disclosure::Protected,
        }]
    }

    fn check(header: Option<&str>, expected: Option<&str>) {
        let tokens = tokens();
        let got = match authorize(header, &tokens) {
            Access::Granted { token, .. } => Some(token.to_string()),
            Access::Unauthorized => None,
        };
        assert_eq!(got.as_deref(), expected, "{header:?}");
    }

    #[test]
    fn only_the_right_secret_opens() {
        check(Some("Bearer s3cret"), Some("dashboard"));
        check(Some("Bearer s3cret2"), None);
        check(Some("Basic s3cret"), None);
        check(Some("Bearer "), None);
        check(None, None);
    }

    fn network(last: u8) -> TruncatedIp {
        crate::privacy::ip::truncate(format!("198.51.{last}.77").parse().unwrap(), 24, 48)
    }

    #[test]
    fn attempts_tell_guesses_from_no_token() {
        let tokens = tokens();
        assert_eq!(attempt(None, &tokens), Attempt::NoToken);
        assert_eq!(attempt(Some("Bearer nope"), &tokens), Attempt::Refused);
        assert_eq!(attempt(Some(""), &tokens), Attempt::Refused);
        assert_eq!(attempt(Some("Bearer s3cret"), &tokens), Attempt::Accepted);
    }

    #[test]
    fn delays_double_after_the_free_failures() {
        let got: Vec<Option<u64>> = (1..=8).map(|n| delay(n).map(|d| d.as_secs())).collect();
        assert_eq!(
            got,
            [None, None, None, None, None, Some(1), Some(2), Some(4)]
        );
        assert_eq!(delay(40), Some(MAX_DELAY));
        assert_eq!(delay(u32::MAX), Some(MAX_DELAY));
    }

    /// Issue 12, point 12: failed logins were neither counted nor slowed.
    #[test]
    fn failed_logins_are_slowed_per_network() {
        let throttle = Throttle::new();
        let t0 = Instant::now();
        let (a, b) = (network(100), network(101));
        for _ in 0..FREE_FAILURES {
            assert_eq!(throttle.check(a, t0), Ok(()));
            assert_eq!(throttle.failed(a, t0), None);
        }
        assert_eq!(throttle.failed(a, t0), Some(Duration::from_secs(1)));
        assert_eq!(throttle.check(a, t0), Err(Duration::from_secs(1)));
        // Another address of the same /24 is the same network.
        let same = crate::privacy::ip::truncate("198.51.100.9".parse().unwrap(), 24, 48);
        assert!(throttle.check(same, t0).is_err());
        // Another network is not held up.
        assert_eq!(throttle.check(b, t0), Ok(()));
        // Once the wait is over, the next refusal waits twice as long.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(throttle.check(a, t1), Ok(()));
        assert_eq!(throttle.failed(a, t1), Some(Duration::from_secs(2)));
        // An hour without refusals, or an accepted token, starts afresh.
        let later = t1 + FORGET_AFTER;
        assert_eq!(throttle.failed(a, later), None);
        throttle.succeeded(a);
        assert_eq!(throttle.check(a, later), Ok(()));
    }

    #[test]
    fn remembered_networks_are_bounded() {
        let throttle = Throttle::new();
        let t0 = Instant::now();
        for i in 0..(MAX_NETWORKS as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8));
            let net = crate::privacy::ip::truncate(ip.into(), 24, 48);
            throttle.failed(net, t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(throttle.networks.lock().unwrap().len(), MAX_NETWORKS);
    }
}
