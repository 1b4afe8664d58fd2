//! Daily salts: one random 256-bit key per site per local day. This module
//! only holds them in memory; `sink::salts` shares them through ClickHouse
//! so every collector uses the same one, and destroys them.
//!
//! A salt is used only on its own local day. It is created at most a couple
//! of hours before that day starts and destroyed shortly after it ends, so
//! no salt lives 48 hours.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::NaiveDate;
use rand::RngCore;

/// The secret key of one site's day. Never printed, logged or exported.
#[derive(Clone, PartialEq, Eq)]
pub struct DailySalt([u8; 32]);

impl DailySalt {
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        DailySalt(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DailySalt(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public commitment to the salt, safe to record when the salt is
    /// destroyed: it tells which salt existed without revealing it. It is a
    /// blake3 hash under its own derivation context, so it can never equal
    /// a visitor key or any other hash tamis makes with the salt.
    pub fn commitment(&self) -> String {
        commitment(&self.0)
    }
}

/// See [`DailySalt::commitment`].
pub fn commitment(salt: &[u8; 32]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("tamis 2026 daily salt destruction commitment");
    hasher.update(salt);
    hasher.finalize().to_hex().to_string()
}

/// A dropped salt is overwritten, so a destroyed one does not linger in
/// freed memory. (Bytes the compiler copied while moving it, and buffers of
/// the HTTP client that carried it, are not covered.)
impl Drop for DailySalt {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites `bytes` with zeros in a way the optimizer may not remove.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

impl std::fmt::Debug for DailySalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DailySalt(<redacted>)")
    }
}

/// Whether ClickHouse already holds this salt (so other collectors share it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Shared,
    /// Made here because none was known yet; the salt keeper publishes it or
    /// replaces it with the one another collector published first.
    Local,
}

/// Salts by (site index, local day).
///
/// A poisoned lock is taken back and used: every change is one map insert
/// or remove, so a panic elsewhere cannot leave the map half changed, and
/// `destroy_before` finishes what an interrupted pass left at its next
/// call. Refusing the lock would stop hashing visitors, or stop destroying
/// salts, which is worse.
#[derive(Debug, Default)]
pub struct SaltStore {
    salts: RwLock<HashMap<(usize, NaiveDate), (DailySalt, Origin)>>,
}

impl SaltStore {
    pub fn new() -> Self {
        SaltStore::default()
    }

    /// The salt for `day`, creating a local one if none is known. The hot
    /// path takes the read lock only; the write lock is taken once per site
    /// per day.
    pub fn get_or_create(&self, site: usize, day: NaiveDate) -> DailySalt {
        if let Some((salt, _)) = self.read().get(&(site, day)) {
            return salt.clone();
        }
        let mut map = self.salts.write().unwrap_or_else(|e| e.into_inner());
        map.entry((site, day))
            .or_insert_with(|| (DailySalt::random(), Origin::Local))
            .0
            .clone()
    }

    /// Installs the salt every collector agreed on.
    pub fn set_shared(&self, site: usize, day: NaiveDate, salt: DailySalt) {
        let mut map = self.salts.write().unwrap_or_else(|e| e.into_inner());
        map.insert((site, day), (salt, Origin::Shared));
    }

    /// Salts made locally and not yet published.
    pub fn local(&self) -> Vec<(usize, NaiveDate, DailySalt)> {
        self.read()
            .iter()
            .filter(|(_, (_, origin))| *origin == Origin::Local)
            .map(|(&(site, day), (salt, _))| (site, day, salt.clone()))
            .collect()
    }

    /// Forgets every salt of `site` for days before `first_kept`.
    pub fn destroy_before(
        &self,
        site: usize,
        first_kept: NaiveDate,
    ) -> Vec<(NaiveDate, DailySalt)> {
        let mut map = self.salts.write().unwrap_or_else(|e| e.into_inner());
        let old: Vec<_> = map
            .keys()
            .filter(|(s, day)| *s == site && *day < first_kept)
            .copied()
            .collect();
        old.into_iter()
            .filter_map(|key| map.remove(&key).map(|(salt, _)| (key.1, salt)))
            .collect()
    }

    /// Days held for `site`, oldest first (for tests and `/metrics`).
    pub fn days(&self, site: usize) -> Vec<NaiveDate> {
        let mut days: Vec<_> = self
            .read()
            .keys()
            .filter(|(s, _)| *s == site)
            .map(|(_, d)| *d)
            .collect();
        days.sort();
        days
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(usize, NaiveDate), (DailySalt, Origin)>> {
        self.salts.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    #[test]
    fn one_salt_per_site_and_day() {
        let store = SaltStore::new();
        let a = store.get_or_create(0, day(1));
        assert_eq!(a, store.get_or_create(0, day(1)));
        assert_ne!(a, store.get_or_create(0, day(2)));
        assert_ne!(a, store.get_or_create(1, day(1)));
        assert_eq!(store.local().len(), 3);
        let shared = DailySalt::random();
        store.set_shared(0, day(1), shared.clone());
        assert_eq!(store.get_or_create(0, day(1)), shared);
        assert_eq!(store.local().len(), 2);
    }

    #[test]
    fn destroy_forgets_old_days_of_one_site() {
        let store = SaltStore::new();
        for d in 1..=3 {
            store.get_or_create(0, day(d));
            store.get_or_create(1, day(d));
        }
        let gone = store.destroy_before(0, day(3));
        assert_eq!(gone.len(), 2);
        assert_eq!(store.days(0), vec![day(3)]);
        assert_eq!(store.days(1).len(), 3);
    }

    #[test]
    fn debug_is_redacted() {
        let salt = DailySalt::from_bytes([7; 32]);
        assert_eq!(format!("{salt:?}"), "DailySalt(<redacted>)");
        assert_eq!(salt.commitment().len(), 64);
        assert_ne!(
            salt.commitment(),
            blake3::hash(&[7; 32]).to_hex().to_string(),
            "domain-separated"
        );
        assert_ne!(
            salt.commitment(),
            DailySalt::from_bytes([8; 32]).commitment()
        );
    }
}
