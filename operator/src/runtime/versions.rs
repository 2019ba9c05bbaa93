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
//! One lag is common and needs no read: the reconcile that follows a status write (woken by
//! an owned object's event, a probe, a requeue) often starts before the watch has delivered
//! that write. So a reconcile that wrote also leaves the object its write returned, with the
//! version it wrote over. When the cache still shows exactly that earlier version, it has
//! not seen the write yet, and the written object (which holds it) stands in for the read.
//! In the bench, these reads were a tenth of the operator's requests, each within a second
//! of its own status write.
//!
//! A resourceVersion is only ever compared for equality, never ordered.
use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::error::Result;

/// Per object key, the resourceVersion known to hold the controller's last write.
#[derive(Default)]
pub struct Versions {
    known: Mutex<HashMap<String, Record>>,
}

struct Record {
    version: String,
    written: Option<Written>,
}

/// The object a write returned, and the version it replaced.
struct Written {
    over: Option<String>,
    object: Box<dyn Any + Send>,
}

/// Where a reconcile's object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The watch cache, which holds this controller's last write.
    Cache,
    /// The object this controller's last write returned: the cache had not seen the write.
    Written,
    /// A read from the API server.
    Read,
}

impl Versions {
    /// The object to reconcile: `cached` when its version is the one recorded for `key`, the
    /// object the last write returned while the cache lags exactly that write, else the API
    /// server's (None once it is gone). The record is taken out either way: only a reconcile
    /// that ends cleanly puts one back ([`Versions::remember_left`]).
    pub async fn latest<K>(&self, api: &Api<K>, key: &str, cached: &K) -> Result<Option<(K, Source)>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + 'static,
    {
        let record = self.take_record(key);
        let cached_version = cached.resource_version();
        let known = record.as_ref().map(|r| r.version.as_str());
        let over = record.as_ref().and_then(|r| r.written.as_ref()).and_then(|w| w.over.as_deref());
        match decide(known, over, cached_version.as_deref()) {
            Source::Cache => return Ok(Some((cached.clone(), Source::Cache))),
            Source::Written => {
                if let Some(Ok(object)) = record.and_then(|r| r.written).map(|w| w.object.downcast::<K>()) {
                    return Ok(Some((*object, Source::Written)));
                }
            }
            Source::Read => {}
        }
        Ok(api.get_opt(&cached.name_any()).await?.map(|o| (o, Source::Read)))
    }

    /// Records what a reconcile that ended cleanly leaves: `written`, the object its last
    /// write returned (it wrote over version `read`, the one it started from), or, when it
    /// wrote nothing, `read` itself. The written object is kept until the next reconcile of
    /// the object takes the record, stripped as the cache strips it.
    pub fn remember_left<K>(&self, key: &str, read: Option<String>, written: Option<K>)
    where
        K: Resource + Send + 'static,
    {
        let Some(mut object) = written else {
            return self.remember(key, read);
        };
        let Some(version) = object.resource_version() else {
            return self.remember(key, None);
        };
        super::watch::strip_object(&mut object);
        let record = Record { version, written: Some(Written { over: read, object: Box::new(object) }) };
        self.known.lock().expect("versions poisoned").insert(key.to_string(), record);
    }

    /// Records that `version` of `key` holds everything this controller wrote to it. Call it
    /// only at the clean end of a reconcile whose last write to the object (if any) produced
    /// `version`.
    pub fn remember(&self, key: &str, version: Option<String>) {
        let mut known = self.known.lock().expect("versions poisoned");
        match version {
            Some(version) => known.insert(key.to_string(), Record { version, written: None }),
            None => known.remove(key),
        };
    }

    /// The version on record for `key`, taken out (see [`Versions::latest`]).
    pub fn take(&self, key: &str) -> Option<String> {
        self.take_record(key).map(|r| r.version)
    }

    fn take_record(&self, key: &str) -> Option<Record> {
        self.known.lock().expect("versions poisoned").remove(key)
    }

    /// Marks `key` as written with an outcome not known yet: until a [`Versions::remember`]
    /// replaces the mark, no cached version matches, so the object is read again.
    pub fn writing(&self, key: &str) {
        self.remember(key, Some(String::new()));
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

/// The rule: the cache is used only when its version equals the recorded one; the object
/// the last write returned, only when the cache still shows the version that write replaced
/// (it lags exactly that write); otherwise the object is read.
fn decide(known: Option<&str>, written_over: Option<&str>, cached: Option<&str>) -> Source {
    match (known, written_over, cached) {
        (Some(k), _, Some(c)) if k == c && !k.is_empty() => Source::Cache,
        (Some(k), Some(o), Some(c)) if o == c && !o.is_empty() && !k.is_empty() => Source::Written,
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
        assert_eq!(decide(Some("7"), None, Some("7")), Source::Cache);
        // Someone else wrote after us, or the cache lags behind our write.
        assert_eq!(decide(Some("7"), None, Some("8")), Source::Read);
        assert_eq!(decide(Some("8"), None, Some("7")), Source::Read);
        // Nothing recorded: a first reconcile, a restart, a failed or unrecorded write.
        assert_eq!(decide(None, None, Some("7")), Source::Read);
        assert_eq!(decide(Some("7"), None, None), Source::Read);
        assert_eq!(decide(None, None, None), Source::Read);
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
        assert_eq!(decide(known.as_deref(), None, Some("")), Source::Read, "an object always has a version");
        assert_eq!(decide(known.as_deref(), None, Some("5")), Source::Read);
    }

    #[test]
    fn the_written_object_stands_in_only_while_the_cache_shows_what_it_replaced() {
        // Our write took the object from 7 to 8.
        assert_eq!(decide(Some("8"), Some("7"), Some("8")), Source::Cache, "the cache has our write");
        assert_eq!(decide(Some("8"), Some("7"), Some("7")), Source::Written, "the cache lags exactly our write");
        // Any other version: someone else's write (after ours, or before it and not read by
        // us), or a cache older still. Only a read can tell.
        assert_eq!(decide(Some("8"), Some("7"), Some("9")), Source::Read);
        assert_eq!(decide(Some("8"), Some("7"), Some("6")), Source::Read);
        // We wrote over a version we never knew (none): nothing to compare with.
        assert_eq!(decide(Some("8"), Some(""), Some("")), Source::Read);
        assert_eq!(decide(None, Some("7"), Some("7")), Source::Read);
    }

    mod latest {
        use http::Method;
        use kube::Api;
        use kube::api::ObjectMeta;

        use super::super::{Source, Versions};
        use crate::runtime::testing::{self, Reply};
        use k8s_openapi::api::core::v1::ConfigMap;

        fn cm(version: &str, data: &str) -> ConfigMap {
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some("c".into()),
                    namespace: Some("ns".into()),
                    resource_version: Some(version.into()),
                    managed_fields: Some(vec![Default::default()]),
                    ..Default::default()
                },
                data: Some([("k".to_string(), data.to_string())].into()),
                ..Default::default()
            }
        }

        #[tokio::test]
        async fn a_cache_that_lags_our_write_is_answered_with_the_written_object_once() {
            let (client, mut api) = testing::client();
            let configmaps: Api<ConfigMap> = Api::namespaced(client, "ns");
            let v = std::sync::Arc::new(Versions::default());
            v.remember_left("ns/c", Some("7".into()), Some(cm("8", "after")));
            // The cache still shows 7: the written object, with no request, stripped.
            let (got, source) = v.latest(&configmaps, "ns/c", &cm("7", "before")).await.unwrap().unwrap();
            assert_eq!((source, got.data.unwrap()["k"].as_str()), (Source::Written, "after"));
            assert_eq!(got.metadata.managed_fields, None);
            // Taken: without a new record, the next reconcile reads.
            let (v2, cm2) = (v.clone(), configmaps.clone());
            let run =
                tokio::spawn(async move { v2.latest(&cm2, "ns/c", &cm("7", "before")).await.unwrap().unwrap().1 });
            api.expect(Method::GET, "/api/v1/namespaces/ns/configmaps/c", Reply::ok(&cm("8", "after"))).await;
            assert_eq!(api.finish(run).await, Source::Read);
        }

        #[tokio::test]
        async fn a_cache_at_another_version_is_read_again() {
            let (client, mut api) = testing::client();
            let configmaps: Api<ConfigMap> = Api::namespaced(client, "ns");
            let v = std::sync::Arc::new(Versions::default());
            v.remember_left("ns/c", Some("7".into()), Some(cm("8", "after")));
            let (v2, cm2) = (v.clone(), configmaps.clone());
            let run = tokio::spawn(async move { v2.latest(&cm2, "ns/c", &cm("9", "theirs")).await.unwrap().unwrap() });
            api.expect(Method::GET, "/api/v1/namespaces/ns/configmaps/c", Reply::ok(&cm("9", "theirs"))).await;
            let (got, source) = api.finish(run).await;
            assert_eq!((source, got.data.unwrap()["k"].as_str()), (Source::Read, "theirs"));
            // A reconcile that wrote nothing leaves the version it read, and no object.
            v.remember_left::<ConfigMap>("ns/c", Some("9".into()), None);
            assert_eq!(v.latest(&configmaps, "ns/c", &cm("9", "theirs")).await.unwrap().unwrap().1, Source::Cache);
        }
    }
}
