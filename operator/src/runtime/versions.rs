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
//! record) the object is read from the API server, as before. When only the cache lags (the
//! reconcile was triggered by an event that overtook the watch event of its own last write,
//! such as the owned Deployment's), the reconcile waits briefly for the cache instead.
//!
//! A resourceVersion is only ever compared for equality, never ordered.
use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::time::{Duration, Instant};

use super::error::Result;

/// How long a bee's reconcile waits for its own last write to reach the cache before it reads
/// the object instead ([`Versions::latest`]). Short: the wait holds one of the controller's
/// reconcile slots, and under a burst (a fleet created, pods failing at once) a longer one
/// kept other bees waiting for a slot (bench: the operator's own time at p99 rose from 5 to
/// 223 ms for servers with 200 ms, mostly waits that ended in the read anyway).
pub const CATCH_UP: Duration = Duration::from_millis(50);
/// How often the cache is looked at meanwhile.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);

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
    /// The object to reconcile: the cached one when its version is the one recorded for
    /// `key`, else the API server's (None once it is gone). `cached` is the copy the
    /// reconcile was triggered with; when it lags the recorded version, the controller's
    /// `store` is looked at again, and for up to `wait` (such as [`CATCH_UP`]) while the watch
    /// brings that version in (a watch event follows its write by milliseconds; a read costs
    /// a request). The record is taken out either way: only a reconcile that ends cleanly
    /// puts one back ([`Versions::remember`]).
    pub async fn latest<K>(
        &self,
        api: &Api<K>,
        key: &str,
        store: &Store<K>,
        cached: &K,
        wait: Duration,
    ) -> Result<Option<(K, Source)>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let known = self.take(key);
        if decide(known.as_deref(), cached.resource_version().as_deref()) == Source::Cache {
            return Ok(Some((cached.clone(), Source::Cache)));
        }
        if known.as_deref().is_some_and(|k| !k.is_empty()) {
            let at = ObjectRef::from_obj(cached);
            let deadline = Instant::now() + wait;
            while let Some(current) = store.get(&at) {
                if decide(known.as_deref(), current.resource_version().as_deref()) == Source::Cache {
                    return Ok(Some((current.as_ref().clone(), Source::Cache)));
                }
                if Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(CATCH_UP_POLL).await;
            }
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

    /// Whether a version is on record for `key` (else [`Versions::latest`] reads at once).
    pub fn is_recorded(&self, key: &str) -> bool {
        self.known.lock().expect("versions poisoned").contains_key(key)
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

    fn config_map(rv: &str) -> k8s_openapi::api::core::v1::ConfigMap {
        let mut c = k8s_openapi::api::core::v1::ConfigMap::default();
        c.metadata.namespace = Some("ns".into());
        c.metadata.name = Some("a".into());
        c.metadata.resource_version = Some(rv.into());
        c
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_behind_our_own_write_is_waited_for_not_read_around() {
        use crate::runtime::testing::{Reply, client};
        use kube::runtime::{reflector, watcher};
        let (c, mut server) = client();
        let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c, "ns");
        let mut writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("1")));
        let v = std::sync::Arc::new(Versions::default());

        // Our write made version 2; the reconcile starts from version 1, and the watch brings
        // version 2 a little later: no request at all.
        v.remember("ns/a", Some("2".into()));
        let (a, s, vv) = (api.clone(), store.clone(), v.clone());
        let run = tokio::spawn(async move { vv.latest(&a, "ns/a", &s, &config_map("1"), CATCH_UP).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(30)).await;
        writer.apply_watcher_event(&watcher::Event::Apply(config_map("2")));
        let (obj, source) = server.finish(run).await.unwrap();
        assert_eq!((obj.resource_version().as_deref(), source), (Some("2"), Source::Cache));

        // The cache never shows our version (someone else wrote after us): read, after the wait.
        v.remember("ns/a", Some("7".into()));
        let (a, s, vv) = (api.clone(), store.clone(), v.clone());
        let started = Instant::now();
        let run = tokio::spawn(async move { vv.latest(&a, "ns/a", &s, &config_map("2"), CATCH_UP).await.unwrap() });
        server.expect(http::Method::GET, "/api/v1/namespaces/ns/configmaps/a", Reply::ok(&config_map("9"))).await;
        assert!(started.elapsed() >= CATCH_UP, "the cache was given its time first");
        let (obj, source) = server.finish(run).await.unwrap();
        assert_eq!((obj.resource_version().as_deref(), source), (Some("9"), Source::Read));

        // Told not to wait: the store is looked at once, then the object read.
        v.remember("ns/a", Some("8".into()));
        let (a, s, vv) = (api.clone(), store.clone(), v.clone());
        let started = Instant::now();
        let run =
            tokio::spawn(async move { vv.latest(&a, "ns/a", &s, &config_map("2"), Duration::ZERO).await.unwrap() });
        server.expect(http::Method::GET, "/api/v1/namespaces/ns/configmaps/a", Reply::ok(&config_map("8"))).await;
        assert!(started.elapsed() < CATCH_UP, "not waited for");
        assert_eq!(server.finish(run).await.unwrap().1, Source::Read);
        v.remember("ns/a", Some("2".into()));
        let (a, s, vv) = (api.clone(), store.clone(), v.clone());
        let run =
            tokio::spawn(async move { vv.latest(&a, "ns/a", &s, &config_map("1"), Duration::ZERO).await.unwrap() });
        assert_eq!(server.finish(run).await.unwrap().1, Source::Cache, "the store already holds it");

        // Nothing recorded (a first reconcile), or a write of unknown outcome: read at once.
        for record in [None, Some(String::new())] {
            match &record {
                Some(_) => v.writing("ns/a"),
                None => v.remember("ns/a", None),
            }
            let (a, s, vv) = (api.clone(), store.clone(), v.clone());
            let started = Instant::now();
            let run = tokio::spawn(async move { vv.latest(&a, "ns/a", &s, &config_map("2"), CATCH_UP).await.unwrap() });
            server.expect(http::Method::GET, "/api/v1/namespaces/ns/configmaps/a", Reply::ok(&config_map("2"))).await;
            assert!(started.elapsed() < CATCH_UP, "{record:?}: not waited for");
            assert_eq!(server.finish(run).await.unwrap().1, Source::Read);
        }
        server.done().await;
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
