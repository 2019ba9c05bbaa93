//! The caches a controller reads instead of the API server: watches kept in stores stripped
//! of what is never read, and the version index of objects watched only to notice changes.
use std::fmt::Debug;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use super::error::{Error, Result};

/// How a watch fills its cache at start, and again when its watch expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InitialList {
    /// One watch that sends every current object as its own event, then a bookmark
    /// (`sendInitialEvents`; served by Kubernetes 1.32 and later unless the `WatchList`
    /// feature gate is off). The objects are decoded one at a time.
    #[default]
    Streaming,
    /// Paged lists of [`LIST_PAGE_SIZE`] objects, then a watch. Every page is decoded whole
    /// before its objects are stripped: a start into a large cluster allocated tens of MiB
    /// at once with kube's default of 500 per page.
    Paged,
}

/// Objects per page of a paged initial list.
pub const LIST_PAGE_SIZE: u32 = 100;

impl InitialList {
    /// The watcher configuration that every watch of the operator starts from.
    pub fn config(self) -> watcher::Config {
        let paged = watcher::Config::default().page_size(LIST_PAGE_SIZE);
        match self {
            InitialList::Streaming => paged.streaming_lists(),
            InitialList::Paged => paged,
        }
    }

    /// Streaming when the API server serves it, else paged: one watch of `api` asks for its
    /// initial events and must end them with the `k8s.io/initial-events-end` bookmark within
    /// `wait`. A server that refuses the parameter answers with an error; one that ignores
    /// it sends no such bookmark.
    pub async fn detect<K>(api: &Api<K>, wait: std::time::Duration) -> InitialList
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        use kube::api::{WatchEvent, WatchParams};
        let params = WatchParams::streaming_lists().timeout(u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).max(1));
        let ends_initial_events = async {
            let Ok(stream) = api.watch(&params, "0").await else { return false };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Bookmark(b)) if b.metadata.annotations.contains_key(INITIAL_EVENTS_END) => {
                        return true;
                    }
                    Ok(WatchEvent::Added(_) | WatchEvent::Bookmark(_)) => {}
                    _ => return false,
                }
            }
            false
        };
        match tokio::time::timeout(wait, ends_initial_events).await {
            Ok(true) => InitialList::Streaming,
            _ => InitialList::Paged,
        }
    }
}

/// The bookmark annotation that ends a watch's initial events.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// What a cached copy never needs: who wrote which field (`managedFields`, often the larger
/// part of an object) and kubectl's copy of the last applied manifest.
pub fn strip_bookkeeping(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// [`strip_bookkeeping`] of any object, for [`cached_watch`].
pub fn strip_object<K: Resource>(obj: &mut K) {
    strip_bookkeeping(obj.meta_mut());
}

/// A watch of `K` kept in a store that a controller reads instead of the API server, with
/// `strip` applied to every object before it is stored; the stream of touched objects
/// triggers the controller (`owns_stream`, `watches_stream`), each after the store has it.
pub fn cached_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
) -> (reflector::Store<K>, impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher::watcher(api, config).modify(strip)).touched_objects();
    (reader, stream)
}

/// How long a reconcile waits for a cache's first list (the windows' among them).
pub const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (up to 30 s) until `store` holds its first list: before that, "absent" is unknown.
pub async fn store_ready<K>(store: &reflector::Store<K>, what: &'static str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(READY_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::CacheNotSynced(what)),
    }
}

/// What an index keeps from one watch's events: each object's entry follows it, and a
/// re-list replaces the whole index once the list is complete (what it no longer returns
/// was deleted while unwatched); until then the old index serves.
trait Entries<K> {
    fn put(&mut self, obj: &K);
    fn remove(&mut self, obj: &K);
    /// An empty index of the same kind, for a re-list to fill.
    fn emptied(&self) -> Self;
}

fn apply_event<K, E: Entries<K>>(current: &std::sync::RwLock<E>, relisting: &mut Option<E>, event: &watcher::Event<K>) {
    let write = || current.write().expect("index poisoned");
    let empty = || current.read().expect("index poisoned").emptied();
    match event {
        watcher::Event::Apply(o) => write().put(o),
        watcher::Event::Delete(o) => write().remove(o),
        watcher::Event::Init => *relisting = Some(empty()),
        watcher::Event::InitApply(o) => relisting.get_or_insert_with(empty).put(o),
        watcher::Event::InitDone => {
            let fresh = relisting.take().unwrap_or_else(empty);
            *write() = fresh;
        }
    }
}

/// `namespace/name` of an object.
fn object_key<K: Resource>(o: &K) -> String {
    let m = o.meta();
    index_key(m.namespace.as_deref().unwrap_or_default(), m.name.as_deref().unwrap_or_default())
}

fn index_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// The resourceVersion of every object of a kind, by namespace and name: all a controller
/// needs to keep of objects it watches only to notice changes (Secrets, ConfigMaps), at a
/// fraction of a store's memory (a string pair per object, not a whole metadata).
#[derive(Clone, Default)]
pub struct VersionIndex {
    versions: Arc<std::sync::RwLock<Versions>>,
}

#[derive(Default)]
struct Versions(std::collections::HashMap<String, String>);

impl<K: Resource> Entries<K> for Versions {
    fn put(&mut self, o: &K) {
        self.0.insert(object_key(o), o.meta().resource_version.clone().unwrap_or_default());
    }

    fn remove(&mut self, o: &K) {
        self.0.remove(&object_key(o));
    }

    fn emptied(&self) -> Self {
        Self::default()
    }
}

impl VersionIndex {
    /// The version of `namespace/name`, if the watch has seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.versions.read().expect("version index poisoned").0.get(&index_key(namespace, name)).cloned()
    }

    /// Objects indexed.
    pub fn len(&self) -> usize {
        self.versions.read().expect("version index poisoned").0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies one watch event; a re-list replaces the index whole once it is complete.
    fn apply<K: Resource>(&self, event: &watcher::Event<K>, relisting: &mut Option<Versions>) {
        apply_event(&self.versions, relisting, event);
    }
}

/// The objects of a kind grouped by the value of one label, within their namespace: which
/// pods are a bee's (its instance label) without looking at every cached pod. Keeps names
/// only; the objects are in the store the same watch fills.
#[derive(Clone)]
pub struct GroupIndex {
    groups: Arc<std::sync::RwLock<Groups>>,
}

pub(crate) struct Groups {
    label: &'static str,
    /// `namespace/name` → `namespace/label value`.
    group_of: std::collections::HashMap<String, String>,
    /// `namespace/label value` → names.
    members: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
}

impl<K: Resource> Entries<K> for Groups {
    fn put(&mut self, o: &K) {
        Entries::<K>::remove(self, o);
        let m = o.meta();
        let Some(value) = m.labels.as_ref().and_then(|l| l.get(self.label)) else { return };
        let group = index_key(m.namespace.as_deref().unwrap_or_default(), value);
        self.members.entry(group.clone()).or_default().insert(m.name.clone().unwrap_or_default());
        self.group_of.insert(object_key(o), group);
    }

    fn remove(&mut self, o: &K) {
        let Some(group) = self.group_of.remove(&object_key(o)) else { return };
        if let Some(names) = self.members.get_mut(&group) {
            names.remove(o.meta().name.as_deref().unwrap_or_default());
            if names.is_empty() {
                self.members.remove(&group);
            }
        }
    }

    fn emptied(&self) -> Self {
        Self { label: self.label, group_of: Default::default(), members: Default::default() }
    }
}

impl GroupIndex {
    /// An empty index grouping by `label`.
    pub fn by_label(label: &'static str) -> Self {
        let empty = Groups { label, group_of: Default::default(), members: Default::default() };
        Self { groups: Arc::new(std::sync::RwLock::new(empty)) }
    }

    /// Names of the objects in `namespace` whose label is `value`, sorted.
    pub fn members(&self, namespace: &str, value: &str) -> Vec<String> {
        let groups = self.groups.read().expect("group index poisoned");
        groups.members.get(&index_key(namespace, value)).map(|n| n.iter().cloned().collect()).unwrap_or_default()
    }

    pub(crate) fn apply<K: Resource>(&self, event: &watcher::Event<K>, relisting: &mut Option<Groups>) {
        apply_event(&self.groups, relisting, event);
    }
}

/// [`cached_watch`] that also keeps a [`GroupIndex`] by `label`, updated before the store:
/// a reconcile the stream triggers finds the object in both.
pub fn grouped_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    strip: fn(&mut K),
    label: &'static str,
) -> (
    reflector::Store<K>,
    GroupIndex,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let index = GroupIndex::by_label(label);
    let writer = index.clone();
    let mut relisting = None;
    let (reader, store_writer) = reflector::store();
    let events = watcher::watcher(api, config).modify(strip).inspect(move |event| {
        if let Ok(event) = event {
            writer.apply(event, &mut relisting);
        }
    });
    (reader, index, reflector::reflector(store_writer, events).touched_objects())
}

/// A metadata-only watch of `K` that fills a [`VersionIndex`]; its stream of touched objects
/// (each after the index has it, with nothing but name and namespace kept) triggers a
/// controller (`watches_stream`).
pub fn indexed_watch<K>(
    api: Api<kube::core::PartialObjectMeta<K>>,
    config: watcher::Config,
) -> (
    VersionIndex,
    impl futures::Stream<Item = std::result::Result<kube::core::PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    kube::core::PartialObjectMeta<K>: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send,
{
    let index = VersionIndex::default();
    let writer = index.clone();
    let mut relisting = None;
    let stream = watcher::watcher(api, config)
        .inspect(move |event| {
            if let Ok(event) = event {
                writer.apply(event, &mut relisting);
            }
        })
        .modify(|o: &mut kube::core::PartialObjectMeta<K>| {
            let m = &mut o.metadata;
            *m = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: m.name.take(),
                namespace: m.namespace.take(),
                ..Default::default()
            };
        })
        .touched_objects();
    (index, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;

    fn meta(ns: &str, name: &str, rv: &str) -> PartialObjectMeta<Secret> {
        let mut m = PartialObjectMeta::<Secret>::default();
        m.metadata.namespace = Some(ns.into());
        m.metadata.name = Some(name.into());
        m.metadata.resource_version = Some(rv.into());
        m
    }

    #[test]
    fn the_version_index_follows_changes_deletes_and_relists() {
        let index = VersionIndex::default();
        let mut relisting = None;
        let mut apply = |e: watcher::Event<PartialObjectMeta<Secret>>| index.apply(&e, &mut relisting);
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(meta("a", "key", "1")));
        apply(watcher::Event::InitApply(meta("b", "key", "2")));
        assert_eq!(index.get("a", "key"), None, "nothing is known before the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!((index.get("a", "key"), index.get("b", "key")), (Some("1".into()), Some("2".into())));
        apply(watcher::Event::Apply(meta("a", "key", "3")));
        apply(watcher::Event::Delete(meta("b", "key", "2")));
        assert_eq!((index.get("a", "key"), index.get("b", "key")), (Some("3".into()), None));
        // A re-list after a gap: what it no longer returns is gone (deleted while unwatched).
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(meta("c", "key", "9")));
        assert_eq!(index.get("a", "key"), Some("3".into()), "the old index serves until the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!((index.get("a", "key"), index.get("c", "key")), (None, Some("9".into())));
        assert_eq!(index.len(), 1);
    }

    fn pod(ns: &str, name: &str, bee: Option<&str>) -> k8s_openapi::api::core::v1::Pod {
        let mut p = k8s_openapi::api::core::v1::Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = bee.map(|b| [("app.kubernetes.io/instance".to_string(), b.to_string())].into());
        p
    }

    #[test]
    fn the_group_index_follows_label_changes_deletes_and_relists() {
        use k8s_openapi::api::core::v1::Pod;
        let index = GroupIndex::by_label("app.kubernetes.io/instance");
        let mut relisting = None;
        let mut apply = |e: watcher::Event<Pod>| index.apply(&e, &mut relisting);
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(pod("a", "p1", Some("bee"))));
        apply(watcher::Event::InitApply(pod("a", "p2", Some("bee"))));
        apply(watcher::Event::InitApply(pod("b", "p3", Some("bee"))));
        apply(watcher::Event::InitApply(pod("a", "other", None)));
        assert!(index.members("a", "bee").is_empty(), "nothing is known before the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!(index.members("a", "bee"), ["p1", "p2"], "the same label in another namespace is another group");
        assert_eq!(index.members("b", "bee"), ["p3"]);
        let indexed = || index.groups.read().unwrap().group_of.len();
        assert_eq!(indexed(), 3, "an object without the label is in no group");
        // The label changes: the pod moves; it is removed: it goes; the last one leaves no
        // empty group behind.
        apply(watcher::Event::Apply(pod("a", "p2", Some("other-bee"))));
        assert_eq!(
            (index.members("a", "bee"), index.members("a", "other-bee")),
            (vec!["p1".into()], vec!["p2".into()])
        );
        apply(watcher::Event::Apply(pod("a", "p1", None)));
        apply(watcher::Event::Delete(pod("a", "p2", Some("other-bee"))));
        assert!(index.members("a", "bee").is_empty() && index.members("a", "other-bee").is_empty());
        assert_eq!(index.groups.read().unwrap().members.len(), 1, "only b/bee is left");
        // A re-list after a gap: what it no longer returns is gone.
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(pod("c", "p4", Some("bee"))));
        assert_eq!(index.members("b", "bee"), ["p3"], "the old index serves until the list is complete");
        apply(watcher::Event::InitDone);
        assert_eq!((index.members("b", "bee"), index.members("c", "bee")), (vec![], vec!["p4".to_string()]));
        assert_eq!(indexed(), 1);
    }

    mod initial_list {
        use std::time::Duration;

        use http::Method;
        use kube::Api;
        use serde_json::json;

        use super::super::InitialList;
        use crate::api::MaintenanceWindow;
        use crate::runtime::testing::{self, Reply};

        const WINDOWS: &str = "/apis/colony.zyeute.io/v1alpha1/maintenancewindows";

        fn bookmark(annotations: serde_json::Value) -> serde_json::Value {
            json!({"type": "BOOKMARK", "object": {
                "apiVersion": "colony.zyeute.io/v1alpha1", "kind": "MaintenanceWindow",
                "metadata": {"resourceVersion": "12", "annotations": annotations}}})
        }

        /// Runs the detection against one answer of the mocked API server; returns the
        /// strategy and the request's query.
        async fn detect_with(reply: Reply) -> (InitialList, String) {
            let (client, mut api) = testing::client();
            let windows: Api<MaintenanceWindow> = Api::all(client);
            let run = tokio::spawn(async move { InitialList::detect(&windows, Duration::from_secs(2)).await });
            let seen = api.expect(Method::GET, WINDOWS, reply).await;
            (api.finish(run).await, seen.query)
        }

        #[tokio::test]
        async fn streaming_when_the_server_ends_the_initial_events() {
            let (chosen, query) = detect_with(Reply::Ok(bookmark(json!({"k8s.io/initial-events-end": "true"})))).await;
            assert_eq!(chosen, InitialList::Streaming);
            for param in ["watch=true", "sendInitialEvents=true", "resourceVersionMatch=NotOlderThan"] {
                assert!(query.contains(param), "{param} in {query}");
            }
        }

        #[tokio::test]
        async fn paged_when_the_server_refuses_or_ignores_the_request() {
            // A server with the WatchList feature gate off refuses the parameter.
            assert_eq!(detect_with(Reply::Error(422, "Invalid")).await.0, InitialList::Paged);
            // An older one ignores it: the watch sends no bookmark that ends initial events.
            assert_eq!(detect_with(Reply::Ok(bookmark(json!({})))).await.0, InitialList::Paged);
        }

        #[test]
        fn every_watch_pages_small_and_streams_only_when_chosen() {
            use kube::runtime::watcher::InitialListStrategy;
            let paged = InitialList::Paged.config();
            assert_eq!(paged.page_size, Some(super::super::LIST_PAGE_SIZE));
            assert!(matches!(paged.initial_list_strategy, InitialListStrategy::ListWatch));
            let streaming = InitialList::Streaming.config();
            assert!(matches!(streaming.initial_list_strategy, InitialListStrategy::StreamingList));
        }
    }
}
