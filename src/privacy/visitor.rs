//! The daily visitor key: a keyed blake3 hash of length-prefixed (site id,
//! truncated IP, reduced user agent) under the site's salt of the day. It
//! lives in memory only: sessions use it, and the unique-visitor sketch is
//! fed from it, but it is never stored, logged or exported.

use crate::privacy::agent::ReducedAgent;
use crate::privacy::ip::TruncatedIp;
use crate::privacy::salt::DailySalt;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VisitorKey(u128);

impl VisitorKey {
    /// The 64 bits fed to ClickHouse's unique-count sketch. Never 0: 0 marks
    /// rows counted without a visitor key.
    pub fn sketch_input(&self) -> u64 {
        (self.0 as u64).max(1)
    }
}

impl VisitorKey {
    /// The key as the durable log keeps it: only the value the sketches
    /// take (see `journal::record`).
    pub fn from_sketch_input(value: u64) -> Self {
        VisitorKey(u128::from(value.max(1)))
    }

    /// A key with a chosen value, for tests of what consumes keys.
    #[doc(hidden)]
    pub fn for_tests(value: u64) -> Self {
        VisitorKey(u128::from(value))
    }
}

impl std::fmt::Debug for VisitorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VisitorKey(<redacted>)")
    }
}

pub fn key(salt: &DailySalt, site_id: &str, ip: &TruncatedIp, agent: &ReducedAgent) -> VisitorKey {
    let mut hasher = blake3::Hasher::new_keyed(salt.as_bytes());
    // Each field is prefixed with its length so that no two different
    // inputs concatenate to the same bytes ("ab"+"c" vs "a"+"bc").
    for field in [
        site_id.as_bytes(),
        &ip.hash_bytes(),
        agent.browser.as_bytes(),
        agent.browser_version.as_bytes(),
        agent.os.as_bytes(),
        agent.device.as_str().as_bytes(),
    ] {
        hasher.update(&(field.len() as u32).to_le_bytes());
        hasher.update(field);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_bytes()[..16]);
    VisitorKey(u128::from_le_bytes(first))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::agent::Device;

    fn agent(browser: &str, version: &str) -> ReducedAgent {
        ReducedAgent {
            browser: browser.into(),
            browser_version: version.into(),
            os: "Linux".into(),
            os_version: String::new(),
            device: Device::Desktop,
        }
    }

    fn ip(s: &str) -> TruncatedIp {
        TruncatedIp::for_tests(s.parse().unwrap())
    }

    #[test]
    fn same_inputs_same_key_and_any_change_changes_it() {
        let salt = DailySalt::from_bytes([1; 32]);
        let base = key(
            &salt,
            "example.org",
            &ip("198.51.100.0"),
            &agent("Firefox", "133"),
        );
        assert_eq!(
            base,
            key(
                &salt,
                "example.org",
                &ip("198.51.100.0"),
                &agent("Firefox", "133")
            )
        );
        assert_ne!(
            base,
            key(
                &DailySalt::from_bytes([2; 32]),
                "example.org",
                &ip("198.51.100.0"),
                &agent("Firefox", "133")
            )
        );
        assert_ne!(
            base,
            key(
                &salt,
                "example.com",
                &ip("198.51.100.0"),
                &agent("Firefox", "133")
            )
        );
        assert_ne!(
            base,
            key(
                &salt,
                "example.org",
                &ip("198.51.101.0"),
                &agent("Firefox", "133")
            )
        );
        assert_ne!(
            base,
            key(
                &salt,
                "example.org",
                &ip("198.51.100.0"),
                &agent("Firefox", "134")
            )
        );
    }

    #[test]
    fn fields_are_length_prefixed() {
        let salt = DailySalt::from_bytes([1; 32]);
        let a = key(
            &salt,
            "example.org",
            &ip("198.51.100.0"),
            &agent("Fire", "fox133"),
        );
        let b = key(
            &salt,
            "example.org",
            &ip("198.51.100.0"),
            &agent("Firefox", "133"),
        );
        assert_ne!(a, b);
    }

    /// The OS version came after the key's inputs were fixed: a visitor
    /// whose key changed on an upgrade day would be counted twice.
    #[test]
    fn the_os_version_is_not_part_of_the_key() {
        let salt = DailySalt::from_bytes([7; 32]);
        let a = agent("Firefox", "133.0");
        let mut b = a.clone();
        b.os_version = "14".into();
        assert_eq!(
            key(&salt, "example.org", &ip("198.51.100.0"), &a).0,
            key(&salt, "example.org", &ip("198.51.100.0"), &b).0
        );
    }
}
