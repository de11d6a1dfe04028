//! Skips status writes that would change nothing. Every reconcile ends with the status it
//! decided; without this, a no-op resync of every object costs one server-side-apply PATCH (and
//! an etcd write, and a watch event to every client) per object per resync period.
//!
//! The watch cache alone cannot say "unchanged": right after kaws writes a status, the cache can
//! still show the one before, and a reconcile that computes that older status again must write.
//! So a write is skipped only when the new status equals the cached one *and* what kaws last
//! wrote for the object (or kaws has not written it since it started: then the cache holds what
//! the API server had when the watch listed it).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Mutex,
};

use serde::Serialize;

/// A fingerprint of a status as kaws would write it: its JSON, hashed as it is written (no
/// copy of it is kept; every reconcile takes two fingerprints).
pub fn fingerprint<S: Serialize>(status: &S) -> u64 {
    let mut h = HashingWriter(DefaultHasher::new());
    // Writing into a hasher cannot fail; a status that cannot be serialised at all hashes as
    // far as it got, and its write would fail with the serialiser's error anyway.
    let _ = serde_json::to_writer(&mut h, status);
    h.0.finish()
}

/// Feeds what is written into a hasher.
struct HashingWriter(DefaultHasher);

impl std::io::Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What kaws last wrote per object (key: kind, namespace, name and uid), held as a 64-bit hash
/// of the key: 16 bytes an object instead of the key's string (~1 MiB at 10,000 objects). Two
/// keys that share a hash (odds ~10⁻¹¹ at 10,000 objects) would at worst cost a write, or skip
/// one that was due only when, besides, the cache lags behind a newer write of that exact status.
#[derive(Debug, Default)]
pub struct StatusWrites {
    written: Mutex<HashMap<u64, u64>>,
}

fn hashed(key: &str) -> u64 {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl StatusWrites {
    /// Whether the status `new` must be written, given the cached object's status `cached`.
    pub fn needed(&self, key: &str, cached: Option<u64>, new: u64) -> bool {
        if cached != Some(new) {
            return true;
        }
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(&hashed(key)).is_some_and(|last| *last != new)
    }

    /// Records a status written.
    pub fn wrote(&self, key: &str, status: u64) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.insert(hashed(key), status);
    }

    /// Forgets an object that is gone.
    pub fn forget(&self, key: &str) {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.remove(&hashed(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_written_unless_both_the_cache_and_the_last_write_already_hold_it() {
        let (a, b) = (fingerprint(&"A"), fingerprint(&"B"));
        assert_ne!(a, b);
        assert_eq!(
            a,
            fingerprint(&"A"),
            "the same status, the same fingerprint"
        );
        assert_ne!(
            fingerprint(&("ab", "c")),
            fingerprint(&("a", "bc")),
            "where one field ends is part of it"
        );
        let w = StatusWrites::default();
        // Since start, nothing written: the cache is the API server's view.
        assert!(w.needed("k", None, a), "no status yet");
        assert!(w.needed("k", Some(b), a), "the cache holds another status");
        assert!(!w.needed("k", Some(a), a), "the cache holds it: no write");
        // kaws wrote B; the cache still shows A and the reconcile computes A again: the API
        // server has B, so A must be written back.
        w.wrote("k", b);
        assert!(
            w.needed("k", Some(a), a),
            "the cache lags behind kaws' own write"
        );
        assert!(!w.needed("k", Some(b), b), "cache and last write agree");
        assert!(w.needed("k", Some(b), a), "a change");
        // Other objects are not confused with this one; a forgotten one is trusted to its cache.
        assert!(!w.needed("other", Some(a), a));
        w.forget("k");
        assert!(!w.needed("k", Some(a), a));
    }
}
