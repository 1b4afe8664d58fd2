//! Settings that a reload (SIGHUP, see `reload`) may replace while tamis
//! runs: each stage that reads them holds a [`Live`] handle and loads the
//! current value when it needs it. A load takes no lock (an `arc-swap`
//! pointer), so the ingest path stays free of locks; a reload stores a
//! whole new value, never changes one in place.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{SiteSettings, TokenSettings};

/// One reloadable value, shared by every stage that reads it.
pub struct Live<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Live<T> {
    fn clone(&self) -> Self {
        Live(self.0.clone())
    }
}

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// The current value; a reload after this call does not change it.
    pub fn load(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// Replaces the value for every reader's next load.
    pub fn store(&self, value: T) {
        self.0.store(Arc::new(value));
    }
}

/// The configured sites, in configuration order at start-up. A reload only
/// changes a site's settings or appends a site: a site's position (which
/// the aggregator, the salts and ingest use) never changes while tamis runs.
pub type LiveSites = Live<Vec<Arc<SiteSettings>>>;

/// The stats API's tokens.
pub type LiveTokens = Live<Vec<TokenSettings>>;

impl From<Vec<Arc<SiteSettings>>> for LiveSites {
    fn from(sites: Vec<Arc<SiteSettings>>) -> Self {
        Live::new(sites)
    }
}
