//! What a bee's reconcile reads, from the controller's caches instead of the API server: its
//! Deployment, its pods, its ColonyServer, and the hash of the Secrets and ConfigMaps its
//! pods read. Each cache is fed by the watch that also triggers the reconcile, so a change
//! is in the cache before the reconcile it causes starts. Where "absent from the cache" could
//! mean "not seen yet" (a Deployment of the bee's name that someone else made, a server
//! just created), the API server is asked.
use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::builders;
use crate::api::{ColonyServer, FinanceBee};
use crate::controllers::common::{ConfigHasher, secret_value};
use crate::controllers::store_ready;
use crate::runtime::{Context, Error, Result};

/// The controller's caches, shared by its reconciles.
pub struct Caches {
    pub deployments: Store<Deployment>,
    pub pods: Store<Pod>,
    pub servers: Store<ColonyServer>,
    /// Metadata only (name and resourceVersion): which version of each is current.
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    /// Per bee, the config hash last computed and the versions of what it was computed from.
    hashes: Mutex<HashMap<String, Hashed>>,
}

/// A config hash and the (source, resourceVersion) pairs it was computed from.
#[derive(Clone, PartialEq, Debug)]
struct Hashed {
    sources: Vec<(String, Option<String>)>,
    hash: String,
}

impl Caches {
    pub fn new(
        deployments: Store<Deployment>,
        pods: Store<Pod>,
        servers: Store<ColonyServer>,
        secrets: Store<PartialObjectMeta<Secret>>,
        config_maps: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        Self { deployments, pods, servers, secrets, config_maps, hashes: Default::default() }
    }

    /// Waits for the caches whose absence is read as a fact (no pods, no Deployment).
    pub async fn ready(&self) -> Result<()> {
        store_ready(&self.deployments, "Deployments").await?;
        store_ready(&self.pods, "bee pods").await?;
        store_ready(&self.servers, "ColonyServers").await
    }

    /// The bee's pods.
    pub fn pods(&self, ns: &str, bee: &str) -> Vec<Pod> {
        let selector = crate::controllers::common::selector_labels(builders::APP_LABEL, bee);
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(ns)
                    && selector.iter().all(|(k, v)| p.labels().get(k).is_some_and(|l| l == v))
            })
            .map(|p| p.as_ref().clone())
            .collect()
    }

    /// The bee's ColonyServer; one the cache has not seen yet is asked for.
    pub async fn server(&self, ctx: &Context, ns: &str, name: &str) -> Result<Option<ColonyServer>> {
        match self.servers.get(&ObjectRef::new(name).within(ns)) {
            Some(cs) => Ok(Some(cs.as_ref().clone())),
            None => Ok(ctx.api::<ColonyServer>(ns).get_opt(name).await?),
        }
    }

    /// Hash of everything the bee's pods read from Secrets and ConfigMaps. Computed from the
    /// API server's data (the caches hold no Secret data), and reused while every source is
    /// at the version it had then.
    pub async fn config_hash(&self, ctx: &Context, fb: &FinanceBee) -> Result<String> {
        let ns = fb.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", fb.name_any());
        let sources = self.versions_of(&ns, &sources(fb));
        if let Some(h) = self.hashes.lock().expect("hashes poisoned").get(&key).filter(|h| h.sources == sources) {
            return Ok(h.hash.clone());
        }
        let hash = read_config_hash(ctx, fb).await?;
        self.hashes.lock().expect("hashes poisoned").insert(key, Hashed { sources, hash: hash.clone() });
        Ok(hash)
    }

    /// The cached resourceVersion of each source (None: not in the cache).
    fn versions_of(&self, ns: &str, sources: &[Source]) -> Vec<(String, Option<String>)> {
        fn version<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, ns: &str, name: &str) -> Option<String> {
            store.get(&ObjectRef::new(name).within(ns)).and_then(|o| o.meta().resource_version.clone())
        }
        sources
            .iter()
            .map(|s| match s {
                Source::Secret(n) => (format!("secret/{n}"), version(&self.secrets, ns, n)),
                Source::ConfigMap(n) => (format!("configmap/{n}"), version(&self.config_maps, ns, n)),
            })
            .collect()
    }

    /// Forgets a deleted bee.
    pub fn forget(&self, ns: &str, name: &str) {
        self.hashes.lock().expect("hashes poisoned").remove(&format!("{ns}/{name}"));
    }

    /// Bees with a hash on record (bounded by the bees that exist).
    pub fn hashes_kept(&self) -> usize {
        self.hashes.lock().expect("hashes poisoned").len()
    }
}

/// A Secret or ConfigMap the bee's pods read.
#[derive(Debug, PartialEq)]
enum Source {
    Secret(String),
    ConfigMap(String),
}

/// Every Secret and ConfigMap the bee's pods read, in the spec's order.
fn sources(fb: &FinanceBee) -> Vec<Source> {
    let mut out = vec![Source::Secret(fb.spec.executor_key_secret_ref.name.clone())];
    for e in &fb.spec.env {
        if let Some(r) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
            out.push(Source::Secret(r.name.clone()));
        }
    }
    for src in &fb.spec.env_from {
        if let Some(r) = &src.secret_ref {
            out.push(Source::Secret(r.name.clone()));
        }
        if let Some(r) = &src.config_map_ref {
            out.push(Source::ConfigMap(r.name.clone()));
        }
    }
    out
}

/// Hash of everything the pod reads from Secrets and ConfigMaps, read from the API server.
async fn read_config_hash(ctx: &Context, fb: &FinanceBee) -> Result<String> {
    let ns = fb.namespace().unwrap_or_default();
    let secrets: Api<Secret> = ctx.api(&ns);
    let config_maps: Api<ConfigMap> = ctx.api(&ns);
    let mut h = ConfigHasher::default();
    let key = &fb.spec.executor_key_secret_ref;
    h.add(&format!("secret/{}", key.name), &key.key, &secret_value(&secrets, key).await?);
    for e in &fb.spec.env {
        if let Some(r) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
            let sel = crate::api::SecretKeySelector::new(r.name.clone(), r.key.clone());
            match secret_value(&secrets, &sel).await {
                Ok(v) => h.add(&format!("secret/{}", r.name), &r.key, &v),
                Err(e) if r.optional == Some(true) => {
                    tracing::debug!(error = %e, "optional secret missing")
                }
                Err(e) => return Err(e),
            }
        }
    }
    for src in &fb.spec.env_from {
        if let Some(r) = &src.secret_ref {
            match secrets.get_opt(&r.name).await? {
                Some(s) => h.add_secret(&s),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(Error::MissingReference(format!("Secret {:?} not found", r.name)));
                }
            }
        }
        if let Some(r) = &src.config_map_ref {
            match config_maps.get_opt(&r.name).await? {
                Some(c) => h.add_config_map(&c),
                None if r.optional == Some(true) => {}
                None => {
                    return Err(Error::MissingReference(format!("ConfigMap {:?} not found", r.name)));
                }
            }
        }
    }
    Ok(h.finish())
}

/// Keeps of a cached pod what the reconcile reads: its labels, spec (images) and status.
pub fn strip_pod(pod: &mut Pod) {
    crate::controllers::strip_bookkeeping(&mut pod.metadata);
    pod.metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
        }
    }
}

/// Keeps of a Secret's or ConfigMap's metadata what the cache is for: name and version.
pub fn strip_to_version<K>(obj: &mut PartialObjectMeta<K>) {
    let m = &mut obj.metadata;
    m.managed_fields = None;
    m.annotations = None;
    m.labels = None;
    m.owner_references = None;
    m.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bee(yaml: &str) -> FinanceBee {
        serde_yaml::from_str(yaml).expect("a bee")
    }

    #[test]
    fn the_sources_are_every_secret_and_config_map_the_pods_read() {
        let fb = bee(r#"
apiVersion: colony.zyeute.io/v1alpha1
kind: FinanceBee
metadata: {name: b, namespace: ns}
spec:
  colonyServerRef: {name: s}
  colonyName: c
  image: img
  executorKeySecretRef: {name: key, key: prvkey}
  env:
    - name: A
      valueFrom: {secretKeyRef: {name: extra, key: a}}
    - name: B
      value: plain
  envFrom:
    - secretRef: {name: bulk}
    - configMapRef: {name: settings}
"#);
        assert_eq!(
            sources(&fb),
            vec![
                Source::Secret("key".into()),
                Source::Secret("extra".into()),
                Source::Secret("bulk".into()),
                Source::ConfigMap("settings".into()),
            ]
        );
    }

    #[test]
    fn stripped_pods_keep_what_restarts_and_rollbacks_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {"x": "y"},
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "c", "image": "img:1", "env": [{"name": "K", "value": "v"}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Failed"}
        }))
        .unwrap();
        strip_pod(&mut pod);
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.metadata.annotations, None);
        assert_eq!(pod.labels().get("a").map(String::as_str), Some("b"));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("img:1"));
        assert_eq!(spec.containers[0].env, None);
        assert_eq!(spec.volumes, None);
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    }
}
