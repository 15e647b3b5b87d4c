//! In-process cache of devices by (tenant, id), shared by both stores.
//!
//! Every submit names a device, so reading it from the database would put a round trip on the
//! accept path. The cache keeps that read local and stays *exact*:
//!
//! * Writes made by this process replace the entry after their commit ([`DeviceCache::put`]).
//! * Writes made elsewhere (another replica, an operator's SQL) reach PostgreSQL replicas as
//!   `NOTIFY dmpushd_devices` from a trigger, and [`DeviceCache::invalidate`] drops the entry.
//! * A read that misses fills the entry only if no invalidation or local write happened while it
//!   was reading (the epoch check in [`DeviceCache::fill`]): otherwise a slow reader could put back
//!   a version that an invalidation had just removed, and keep it forever.
//! * While invalidations cannot be received (the LISTEN connection is down) the cache is
//!   disabled and every read goes to the database; it is cleared when listening resumes, because
//!   notifications sent in between are lost.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use super::Device;

/// Entries kept before the cache is reset (a crude bound; devices are small).
const MAX_ENTRIES: usize = 100_000;

type Key = (String, String);

/// See the module documentation.
pub struct DeviceCache {
    /// `None` = known absent (deleted or never registered).
    map: Mutex<HashMap<Key, Option<Device>>>,
    /// Bumped by every invalidation and local write.
    epoch: AtomicU64,
    enabled: AtomicBool,
}

/// What a reader saw before going to the database; hand it back to [`DeviceCache::fill`].
#[derive(Clone, Copy, Debug)]
pub struct Ticket(u64);

impl DeviceCache {
    /// A cache that starts enabled (SQLite: this process is the only writer) or disabled
    /// (PostgreSQL: until the listener is subscribed).
    pub fn new(enabled: bool) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            enabled: AtomicBool::new(enabled),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<Key, Option<Device>>> {
        // Every critical section is a single insert/remove/clear: the map is consistent even if
        // a holder panicked.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached entry: `Some(None)` means "known absent"; `None` means "ask the database", and
    /// comes with the ticket to fill the entry afterwards.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Option<Device>, Ticket> {
        // Take the ticket before looking, so an invalidation racing with the miss is seen.
        let ticket = Ticket(self.epoch.load(Ordering::Acquire));
        if self.enabled.load(Ordering::Acquire)
            && let Some(hit) = self.map().get(&(tenant.to_owned(), id.to_owned()))
        {
            return Ok(hit.clone());
        }
        Err(ticket)
    }

    /// Stores what a database read returned, unless the cache changed since `ticket`.
    pub fn fill(&self, ticket: Ticket, tenant: &str, id: &str, device: Option<&Device>) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let mut map = self.map();
        // Checked under the lock: invalidations bump the epoch under the same lock.
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert((tenant.to_owned(), id.to_owned()), device.cloned());
    }

    /// This process committed `device` (or, with `None`, deleted it).
    pub fn put(&self, tenant: &str, id: &str, device: Option<Device>) {
        let mut map = self.map();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert((tenant.to_owned(), id.to_owned()), device);
    }

    /// Someone changed the device: forget it.
    pub fn invalidate(&self, tenant: &str, id: &str) {
        let mut map = self.map();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.remove(&(tenant.to_owned(), id.to_owned()));
    }

    /// Forgets everything and turns the cache on or off.
    pub fn reset(&self, enabled: bool) {
        let mut map = self.map();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        map.clear();
        self.enabled.store(enabled, Ordering::Release);
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, at: i64) -> Device {
        Device {
            tenant: "t".into(),
            id: id.into(),
            bindings: vec![],
            dm: None,
            created_at_ms: at,
            updated_at_ms: at,
        }
    }

    #[test]
    fn a_miss_fills_and_then_hits() {
        let c = DeviceCache::new(true);
        let t = c.get("t", "a").unwrap_err();
        c.fill(t, "t", "a", Some(&dev("a", 1)));
        assert_eq!(c.get("t", "a").unwrap(), Some(dev("a", 1)));
        let t = c.get("t", "b").unwrap_err();
        c.fill(t, "t", "b", None);
        assert_eq!(c.get("t", "b").unwrap(), None, "absence is cached too");
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_cached() {
        let c = DeviceCache::new(true);
        let t = c.get("t", "a").unwrap_err();
        // The device changes elsewhere while the read is in flight.
        c.invalidate("t", "a");
        c.fill(t, "t", "a", Some(&dev("a", 1)));
        assert!(c.get("t", "a").is_err(), "the stale read must not be kept");
    }

    #[test]
    fn a_read_that_raced_a_local_write_does_not_overwrite_it() {
        let c = DeviceCache::new(true);
        let t = c.get("t", "a").unwrap_err();
        c.put("t", "a", Some(dev("a", 2)));
        c.fill(t, "t", "a", Some(&dev("a", 1)));
        assert_eq!(c.get("t", "a").unwrap(), Some(dev("a", 2)));
    }

    #[test]
    fn a_disabled_cache_answers_nothing_and_keeps_nothing() {
        let c = DeviceCache::new(false);
        let t = c.get("t", "a").unwrap_err();
        c.fill(t, "t", "a", Some(&dev("a", 1)));
        assert!(c.is_empty());
        c.reset(true);
        let t = c.get("t", "a").unwrap_err();
        c.fill(t, "t", "a", Some(&dev("a", 1)));
        assert_eq!(c.len(), 1);
        c.reset(false);
        assert!(c.get("t", "a").is_err());
        assert!(c.is_empty());
    }
}
