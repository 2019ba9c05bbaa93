//! Which version of each object is known to hold a controller's own last write, so that a
//! reconcile can start from the watch cache instead of reading the object again.
//!
//! A reconciler that counts things in status (restarts, pages, flips) must not start from a
//! cached object that lacks its own last status write: it would count twice. Reading the
//! object from the API server on every reconcile guarantees that, at one request per
//! reconcile. This record gives the same guarantee without the request in the common case:
//! after a reconcile ends cleanly, the resourceVersion of the object as it left it (its own
//! status write, or the version it read and did not change) is recorded. The next reconcile
//! takes the record out; when the cached object has exactly that version, the cache holds
//! every write this controller made and is used as it is. Otherwise (someone else changed
//! the object, the cache lags, the last reconcile failed or wrote something it did not
//! record) the object is read from the API server, as before.
//!
//! A resourceVersion is only ever compared for equality, never ordered.
use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Result;

/// Per object key, the resourceVersion known to hold the controller's last write.
#[derive(Default)]
pub struct Versions {
    known: Mutex<HashMap<String, String>>,
}

/// Where a reconcile's object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The watch cache, which holds this controller's last write.
    Cache,
    /// A read from the API server.
    Read,
}

impl Versions {
    /// The object to reconcile: `cached` when its version is the one recorded for `key`,
    /// else the API server's (None once it is gone). The record is taken out either way:
    /// only a reconcile that ends cleanly puts one back ([`Versions::remember`]).
    pub async fn latest<K>(&self, api: &Api<K>, key: &str, cached: &K) -> Result<Option<(K, Source)>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let known = self.take(key);
        if decide(known.as_deref(), cached.resource_version().as_deref()) == Source::Cache {
            return Ok(Some((cached.clone(), Source::Cache)));
        }
        Ok(api.get_opt(&cached.name_any()).await?.map(|o| (o, Source::Read)))
    }

    /// Records that `version` of `key` holds everything this controller wrote to it. Call it
    /// only at the clean end of a reconcile whose last write to the object (if any) produced
    /// `version`.
    pub fn remember(&self, key: &str, version: Option<String>) {
        let mut known = self.known.lock().expect("versions poisoned");
        match version {
            Some(v) => known.insert(key.to_string(), v),
            None => known.remove(key),
        };
    }

    /// The version on record for `key`, taken out (see [`Versions::latest`]).
    pub fn take(&self, key: &str) -> Option<String> {
        self.known.lock().expect("versions poisoned").remove(key)
    }

    /// Marks `key` as written with an outcome not known yet: until a [`Versions::remember`]
    /// replaces the mark, no cached version matches, so the object is read again.
    pub fn writing(&self, key: &str) {
        self.known.lock().expect("versions poisoned").insert(key.to_string(), String::new());
    }

    /// Forgets a deleted object, and what was kept of the objects it owns (keys
    /// `<key>/...`).
    pub fn forget(&self, key: &str) {
        let owned = format!("{key}/");
        self.known.lock().expect("versions poisoned").retain(|k, _| k != key && !k.starts_with(&owned));
    }

    /// Objects with a version on record (bounded by the objects that exist).
    pub fn len(&self) -> usize {
        self.known.lock().expect("versions poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The rule: the cache is used only when its version equals the recorded one.
fn decide(known: Option<&str>, cached: Option<&str>) -> Source {
    match (known, cached) {
        (Some(k), Some(c)) if k == c && !k.is_empty() => Source::Cache,
        _ => Source::Read,
    }
}

/// Whether the cached copy of an object the controller owns may stand for the live one:
/// always when this controller has not written it (in this process), else only at the
/// version its last write left (never while a write's outcome is unknown). A cached copy that
/// lags someone else's change is fine: that change's own watch event reconciles again.
pub fn owned_cache_usable(known: Option<&str>, cached: Option<&str>) -> bool {
    match known {
        None => true,
        Some(k) => !k.is_empty() && Some(k) == cached,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_used_only_at_the_recorded_version() {
        assert_eq!(decide(Some("7"), Some("7")), Source::Cache);
        // Someone else wrote after us, or the cache lags behind our write.
        assert_eq!(decide(Some("7"), Some("8")), Source::Read);
        assert_eq!(decide(Some("8"), Some("7")), Source::Read);
        // Nothing recorded: a first reconcile, a restart, a failed or unrecorded write.
        assert_eq!(decide(None, Some("7")), Source::Read);
        assert_eq!(decide(Some("7"), None), Source::Read);
        assert_eq!(decide(None, None), Source::Read);
    }

    #[test]
    fn a_record_is_used_once_and_only_a_clean_end_puts_it_back() {
        let v = Versions::default();
        v.remember("ns/a", Some("7".into()));
        assert_eq!(v.take("ns/a").as_deref(), Some("7"));
        // Taken: a reconcile that fails before remembering leaves nothing behind.
        assert_eq!(v.take("ns/a"), None);
        v.remember("ns/a", Some("9".into()));
        v.remember("ns/a", None);
        assert!(v.is_empty());
        v.remember("ns/b", Some("1".into()));
        v.remember("ns/b/Deployment/b", Some("2".into()));
        v.remember("ns/bb", Some("3".into()));
        v.forget("ns/b");
        assert_eq!(v.len(), 1, "only the other object's record is left");
        assert_eq!(v.take("ns/bb").as_deref(), Some("3"));
    }

    #[test]
    fn an_owned_object_is_read_from_the_cache_unless_our_write_is_not_in_it() {
        assert!(owned_cache_usable(None, Some("3")), "never written here");
        assert!(owned_cache_usable(Some("3"), Some("3")), "the cache holds our write");
        assert!(!owned_cache_usable(Some("4"), Some("3")), "our write is not cached yet");
        assert!(!owned_cache_usable(Some(""), Some("3")), "a write of unknown outcome");
        assert!(!owned_cache_usable(Some(""), Some("")));
    }

    #[test]
    fn a_write_of_unknown_outcome_matches_no_version() {
        let v = Versions::default();
        v.writing("k");
        let known = v.take("k");
        assert_eq!(decide(known.as_deref(), Some("")), Source::Read, "an object always has a version");
        assert_eq!(decide(known.as_deref(), Some("5")), Source::Read);
    }
}
