//! The objects the operator owns, as every controller that owns some builds and keeps them:
//! labels, owner references, the workload Deployment, the hash of the Secrets and ConfigMaps a
//! pod references, and converging an owned object on what is desired ([`drift`] compares).
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, Secret, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::api::{PodOverrides, SecretKeySelector};
use crate::runtime::{Error, Result, field_manager};

pub mod drift;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The label naming the object a workload, and each of its pods, belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
pub const OPERATOR: &str = "colony-operator";
/// Hash of the desired object last applied; equal hash means nothing to apply.
pub const DESIRED_HASH_ANNOTATION: &str = "colony.zyeute.io/desired-hash";
/// Pod-template annotation: hash of the referenced Secrets/ConfigMaps, so a change rolls pods.
pub const CONFIG_HASH_ANNOTATION: &str = "colony.zyeute.io/config-hash";

/// Labels on everything the operator creates for `owner_name` of `kind`.
pub fn labels(kind_label: &str, owner_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), kind_label.to_string()),
        (INSTANCE_LABEL.to_string(), owner_name.to_string()),
        (MANAGED_BY.to_string(), OPERATOR.to_string()),
    ])
}

/// The labels that select the pods of `owner_name`'s workload of kind `app_label`.
pub fn selector_labels(app_label: &str, owner_name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), app_label.to_string()),
        (INSTANCE_LABEL.to_string(), owner_name.to_string()),
    ])
}

/// What differs between the workloads the operator runs; the rest of the Deployment (labels,
/// selector, owner reference, the config-hash annotation that rolls pods when referenced
/// Secrets change, pod overrides, the RuntimeDefault seccomp profile) is the same for all.
pub struct WorkloadParts {
    pub app_label: &'static str,
    pub replicas: i32,
    pub container: Container,
    pub volumes: Option<Vec<Volume>>,
    pub config_hash: String,
    pub overrides: PodOverrides,
    pub pod_security: PodSecurityContext,
    pub progress_deadline_seconds: Option<i32>,
}

pub fn workload_deployment<K: Resource<DynamicType = ()>>(owner: &K, parts: WorkloadParts) -> Result<Deployment> {
    let name = owner.meta().name.clone().unwrap_or_default();
    let mut pod_labels = labels(parts.app_label, &name);
    pod_labels.extend(selector_labels(parts.app_label, &name));
    let overrides = parts.overrides;
    let pod_security = PodSecurityContext {
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..parts.pod_security
    };
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: owner.meta().namespace.clone(),
            labels: Some(labels(parts.app_label, &name)),
            owner_references: Some(vec![owner_ref(owner)?]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(parts.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(parts.app_label, &name)),
                match_expressions: None,
            },
            progress_deadline_seconds: parts.progress_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), parts.config_hash)])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![parts.container],
                    volumes: parts.volumes,
                    node_selector: (!overrides.node_selector.is_empty()).then_some(overrides.node_selector),
                    tolerations: (!overrides.tolerations.is_empty()).then_some(overrides.tolerations),
                    affinity: overrides.affinity,
                    security_context: Some(pod_security),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        status: None,
    })
}

/// The controller owner reference to `owner`, so deleting it deletes what it owns.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Result<OwnerReference> {
    owner.controller_owner_ref(&()).ok_or_else(|| Error::InvalidSpec("object has no uid yet".into()))
}

/// Reads one key of a Secret. The value is returned to be used, never to be logged.
pub async fn secret_value(api: &Api<Secret>, sel: &SecretKeySelector) -> Result<Vec<u8>> {
    let secret = api
        .get_opt(&sel.name)
        .await?
        .ok_or_else(|| Error::MissingReference(format!("Secret {:?} not found", sel.name)))?;
    secret
        .data
        .and_then(|mut d| d.remove(&sel.key))
        .map(|b| b.0)
        .ok_or_else(|| Error::MissingReference(format!("Secret {:?} has no key {:?}", sel.name, sel.key)))
}

/// Accumulates the referenced configuration into one hash. Only the referenced keys count,
/// so unrelated edits to a shared Secret do not roll anything.
#[derive(Default)]
pub struct ConfigHasher {
    parts: BTreeMap<String, Vec<u8>>,
}

impl ConfigHasher {
    pub fn add(&mut self, source: &str, key: &str, value: &[u8]) {
        self.parts.insert(format!("{source}/{key}"), value.to_vec());
    }

    /// Hashes every key of a whole Secret (for `envFrom`).
    pub fn add_secret(&mut self, secret: &Secret) {
        let name = secret.name_any();
        for (k, v) in secret.data.iter().flatten() {
            self.add(&format!("secret/{name}"), k, &v.0);
        }
    }

    pub fn add_config_map(&mut self, cm: &ConfigMap) {
        let name = cm.name_any();
        for (k, v) in cm.data.iter().flatten() {
            self.add(&format!("configmap/{name}"), k, v.as_bytes());
        }
    }

    pub fn finish(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.parts {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k.as_bytes());
            h.update((v.len() as u64).to_be_bytes());
            h.update(v);
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// Stable hash of a serialisable value (its JSON form).
pub fn hash_of<T: Serialize>(value: &T) -> Result<String> {
    let bytes = serde_json::to_vec(value)?;
    Ok(hex::encode(&Sha256::digest(&bytes)[..16]))
}

/// Whether `live`, found under the name of the `app_label` object the operator makes for
/// `owner`, is the operator's to change ([`drift::is_ours`]).
pub fn owned_by<O: Resource<DynamicType = ()>, K: Resource>(owner: &O, live: &K, app_label: &str) -> bool {
    let owner_name = owner.meta().name.clone().unwrap_or_default();
    drift::is_ours(live.meta(), owner.meta().uid.as_deref().unwrap_or_default(), &labels(app_label, &owner_name))
}

/// What [`converge_over`] did.
#[derive(Debug)]
pub enum Converged<K> {
    /// The live object already held every desired field: nothing was written.
    InSync(K),
    /// Created, changed to a new desired state, or a hand edit put back; `fields` names
    /// what differed (paths only, never values).
    Written { object: K, fields: Vec<String> },
    /// An object of that name exists and is not the operator's: it was left alone.
    NotOwned,
}

impl<K> Converged<K> {
    /// The object as the converge left it, unless it is someone else's.
    pub fn left(&self) -> Option<&K> {
        match self {
            Converged::InSync(o) | Converged::Written { object: o, .. } => Some(o),
            Converged::NotOwned => None,
        }
    }

    /// The object as it now stands, unless it is someone else's.
    pub fn object(self) -> Option<K> {
        match self {
            Converged::InSync(o) | Converged::Written { object: o, .. } => Some(o),
            Converged::NotOwned => None,
        }
    }
}

/// Makes the object `desired` names hold what `desired` holds, given `live` as just read.
///
/// Decided by comparing the live fields with the desired ones ([`drift::compare`]), plus
/// the hash of the desired object, so that a field the operator stopped setting is removed
/// too. Equal means no write at all (steady state is silent). A missing object, or a new
/// desired state, is server-side applied (forced: the operator's fields are its own); a
/// hand edit of an unchanged desired state is put back with one JSON merge patch of the
/// fields that differ, which also removes entries a hand edit added to the operator's lists
/// (server-side apply would keep those). An object of that name that is
/// not the operator's ([`drift::is_ours`]) is never written.
pub async fn converge_over<K>(api: &Api<K>, live: Option<K>, mut desired: K, controller: &str) -> Result<Converged<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let hash = hash_of(&desired)?;
    desired.annotations_mut().insert(DESIRED_HASH_ANNOTATION.into(), hash.clone());
    let name = desired.name_any();
    let exact = drift::exact_maps(&K::kind(&()));
    let params = PatchParams::apply(&field_manager(controller)).force();
    let Some(live) = live else {
        let created = api.patch(&name, &params, &Patch::Apply(&desired)).await?;
        return Ok(Converged::Written { object: created, fields: vec!["(created)".into()] });
    };
    let controller_ref = desired.meta().owner_references.iter().flatten().find(|r| r.controller == Some(true));
    if let Some(owner) = controller_ref
        && !drift::is_ours(live.meta(), &owner.uid, desired.labels())
    {
        return Ok(Converged::NotOwned);
    }
    let desired_json = serde_json::to_value(&desired)?;
    let live_json = serde_json::to_value(&live)?;
    let found = drift::compare(&live_json, &desired_json, exact);
    if found.is_empty() {
        return Ok(Converged::InSync(live));
    }
    let new_state = live.annotations().get(DESIRED_HASH_ANNOTATION) != Some(&hash);
    let mut current = live_json;
    if new_state {
        match api.patch(&name, &params, &Patch::Apply(&desired)).await {
            Ok(applied) => current = serde_json::to_value(&applied)?,
            // A hand-added entry can clash with the desired one (two ports named "http"):
            // the merge patch below replaces the whole list.
            Err(kube::Error::Api(e)) if e.code == 422 => {
                tracing::debug!(kind = %K::kind(&()), %name, error = %e, "apply refused; patching the lists whole");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let rest = drift::compare(&current, &desired_json, exact);
    let object = if rest.is_empty() {
        serde_json::from_value(current)?
    } else {
        // No resourceVersion precondition: the patch sets only fields the operator owns,
        // and the status updates of a Deployment's own controller would make it conflict.
        let patch = drift::merge_patch(&current, &rest.merged);
        let params = PatchParams { field_manager: Some(field_manager(controller)), ..Default::default() };
        api.patch(&name, &params, &Patch::Merge(&patch)).await?
    };
    Ok(Converged::Written { object, fields: found.fields })
}

/// The live object `name` that the controller owns and keeps in `store`, for
/// [`converge_recorded`]: the cached one, unless this controller wrote it since and the cache
/// does not show that write yet (then, and when the cache has no such object, it is read from
/// the API server). So a reconcile that finds everything in place makes no request at all.
pub async fn cached_live<K>(
    api: &Api<K>,
    store: &kube::runtime::reflector::Store<K>,
    versions: &crate::runtime::versions::Versions,
    owner_key: &str,
    name: &str,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let known = versions.take(&owned_key::<K>(owner_key, name));
    let ns = api.namespace().unwrap_or_default();
    let cached = store
        .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
        .filter(|c| crate::runtime::versions::owned_cache_usable(known.as_deref(), c.resource_version().as_deref()));
    match cached {
        Some(c) => Ok(Some(c.as_ref().clone())),
        None => Ok(api.get_opt(name).await?),
    }
}

/// [`converge_over`], recording the version it leaves the object at for [`cached_live`].
pub async fn converge_recorded<K>(
    api: &Api<K>,
    versions: &crate::runtime::versions::Versions,
    owner_key: &str,
    live: Option<K>,
    desired: K,
    controller: &str,
) -> Result<Converged<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let key = owned_key::<K>(owner_key, &desired.name_any());
    // Until the write returns, its outcome is unknown: no cached version is trusted.
    versions.writing(&key);
    let converged = converge_over(api, live, desired, controller).await?;
    versions.remember(&key, converged.left().and_then(|o| o.resource_version()));
    Ok(converged)
}

/// [`cached_live`], then [`converge_recorded`].
pub async fn converge_cached<K>(
    api: &Api<K>,
    store: &kube::runtime::reflector::Store<K>,
    versions: &crate::runtime::versions::Versions,
    owner_key: &str,
    desired: K,
    controller: &str,
) -> Result<Converged<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let live = cached_live(api, store, versions, owner_key, &desired.name_any()).await?;
    converge_recorded(api, versions, owner_key, live, desired, controller).await
}

/// What a reconcile has seen of an object it converges with [`converge_summarized`].
#[derive(Debug)]
pub enum Seen<K> {
    /// The cache's summary of it (None: the cache has none).
    Summary(Option<K>),
    /// The whole object, just read from the API server (None: there is none).
    Whole(Option<K>),
}

impl<K> Seen<K> {
    /// The object as seen, summary or whole.
    pub fn as_ref(&self) -> Option<&K> {
        match self {
            Seen::Summary(o) | Seen::Whole(o) => o.as_ref(),
        }
    }
}

/// [`converge_over`] an object the controller caches as a summary (its metadata and status,
/// not the whole spec). In sync straight from what was seen, with no request, when the object
/// is at the generation this controller's last converge left it (any edit of the spec moves
/// the generation), still carries the hash of the same desired state, and its labels,
/// annotations and controller still hold (edits of those may not move it). Otherwise the
/// object is converged whole: as just read when the caller read it ([`Seen::Whole`]), else
/// read now.
pub async fn converge_summarized<K>(
    api: &Api<K>,
    versions: &crate::runtime::versions::Versions,
    owner_key: &str,
    seen: Seen<K>,
    desired: K,
    controller: &str,
) -> Result<Converged<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.name_any();
    let key = format!("{}#generation", owned_key::<K>(owner_key, &name));
    let known = versions.take(&key);
    let hash = hash_of(&desired)?;
    if let Some(v) = seen.as_ref().filter(|v| summary_in_sync(v.meta(), known.as_deref(), desired.meta(), &hash)) {
        versions.remember(&key, known);
        return Ok(Converged::InSync(v.clone()));
    }
    let live = match seen {
        Seen::Whole(live) => live,
        Seen::Summary(_) => api.get_opt(&name).await?,
    };
    // Until the write returns, its outcome is unknown: no summary is trusted.
    versions.writing(&key);
    let converged = converge_over(api, live, desired, controller).await?;
    versions.remember(&key, converged.left().and_then(|o| o.meta().generation).map(|g| g.to_string()));
    Ok(converged)
}

/// The rule of [`converge_summarized`]: whether a summary shows the object as this
/// controller left it, for the same desired state.
pub fn summary_in_sync(view: &ObjectMeta, known_generation: Option<&str>, desired: &ObjectMeta, hash: &str) -> bool {
    let generation = view.generation.map(|g| g.to_string());
    let holds = |want: &Option<BTreeMap<String, String>>, have: &Option<BTreeMap<String, String>>| {
        want.iter().flatten().all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    let controller = |m: &ObjectMeta| {
        m.owner_references.iter().flatten().find(|r| r.controller == Some(true)).map(|r| r.uid.clone())
    };
    known_generation.is_some_and(|k| !k.is_empty() && Some(k) == generation.as_deref())
        && view.annotations.as_ref().and_then(|a| a.get(DESIRED_HASH_ANNOTATION)).map(String::as_str) == Some(hash)
        && holds(&desired.labels, &view.labels)
        && holds(&desired.annotations, &view.annotations)
        && controller(desired) == controller(view)
}

/// The record key of an object of kind `K` named `name` owned by the object `owner_key`
/// (forgotten with it).
fn owned_key<K: Resource<DynamicType = ()>>(owner_key: &str, name: &str) -> String {
    format!("{owner_key}/{}/{name}", K::kind(&()))
}

/// The label selector (as a query string) of `owner_name`'s pods of kind `app_label`.
pub fn pod_selector(app_label: &str, owner_name: &str) -> String {
    selector_labels(app_label, owner_name).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hash_depends_on_values_and_keys_only() {
        let mut a = ConfigHasher::default();
        a.add("secret/db", "password", b"one");
        let mut b = ConfigHasher::default();
        b.add("secret/db", "password", b"two");
        assert_ne!(a.finish(), b.finish());
        let mut c = ConfigHasher::default();
        c.add("secret/db", "password", b"one");
        assert_eq!(a.finish(), c.finish());
        // Insertion order does not matter.
        let mut d = ConfigHasher::default();
        d.add("x", "k", b"1");
        d.add("y", "k", b"2");
        let mut e = ConfigHasher::default();
        e.add("y", "k", b"2");
        e.add("x", "k", b"1");
        assert_eq!(d.finish(), e.finish());
        // Boundaries between key and value cannot be shifted to collide.
        let mut f = ConfigHasher::default();
        f.add("s", "ab", b"c");
        let mut g = ConfigHasher::default();
        g.add("s", "a", b"bc");
        assert_ne!(f.finish(), g.finish());
    }

    #[test]
    fn a_summary_is_in_sync_only_as_this_controller_left_it() {
        let owner = |uid: &str| OwnerReference { uid: uid.into(), controller: Some(true), ..Default::default() };
        let desired = ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), "bee".to_string())])),
            owner_references: Some(vec![owner("u1")]),
            ..Default::default()
        };
        let view = ObjectMeta {
            generation: Some(4),
            labels: Some(BTreeMap::from([
                ("app".to_string(), "bee".to_string()),
                ("extra".to_string(), "x".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(DESIRED_HASH_ANNOTATION.to_string(), "h1".to_string())])),
            owner_references: Some(vec![owner("u1")]),
            ..Default::default()
        };
        assert!(summary_in_sync(&view, Some("4"), &desired, "h1"));
        // Never written here (a restart), or a write of unknown outcome: read it whole.
        assert!(!summary_in_sync(&view, None, &desired, "h1"));
        assert!(!summary_in_sync(&view, Some(""), &desired, "h1"));
        // The spec was edited since (the generation moved), or the desired state changed.
        assert!(!summary_in_sync(&view, Some("3"), &desired, "h1"));
        assert!(!summary_in_sync(&view, Some("4"), &desired, "h2"));
        // A label of ours edited by hand (labels do not move the generation).
        let mut edited = view.clone();
        edited.labels.as_mut().unwrap().insert("app".into(), "other".into());
        assert!(!summary_in_sync(&edited, Some("4"), &desired, "h1"));
        // Another controller now.
        let mut adopted = view.clone();
        adopted.owner_references = Some(vec![owner("u2")]);
        assert!(!summary_in_sync(&adopted, Some("4"), &desired, "h1"));
    }

    fn a_config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), ..Default::default() },
            data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn an_object_just_read_whole_is_not_read_again() {
        use crate::runtime::testing::{Reply, client};
        use http::Method;
        let (c, mut server) = client();
        let api: Api<ConfigMap> = Api::namespaced(c, "ns");
        let versions = std::sync::Arc::new(crate::runtime::versions::Versions::default());
        // Seen whole, and absent: created at once, with no read first.
        let (a, v) = (api.clone(), versions.clone());
        let run = tokio::spawn(async move {
            converge_summarized(&a, &v, "o", Seen::Whole(None), a_config_map("cm"), "test")
                .await
                .map(|c| c.left().is_some())
        });
        let sent = server.expect(Method::PATCH, "/api/v1/namespaces/ns/configmaps/cm", Reply::Echo).await;
        assert_eq!(sent.body["data"]["k"], "v");
        assert!(server.finish(run).await.unwrap());
        // Only a summary seen (here, none cached): the object is read whole first.
        let (a, v) = (api.clone(), versions.clone());
        let run = tokio::spawn(async move {
            converge_summarized(&a, &v, "o", Seen::Summary(None), a_config_map("other"), "test").await.map(|_| ())
        });
        server.expect(Method::GET, "/api/v1/namespaces/ns/configmaps/other", Reply::Error(404, "NotFound")).await;
        server.expect(Method::PATCH, "/api/v1/namespaces/ns/configmaps/other", Reply::Echo).await;
        server.finish(run).await.unwrap();
        server.done().await;
    }

    #[test]
    fn pod_selector_matches_the_selector_labels() {
        assert_eq!(pod_selector("finance-bee", "b"), "app.kubernetes.io/instance=b,app.kubernetes.io/name=finance-bee");
    }

    #[test]
    fn labels_name_the_owner_and_manager() {
        let l = labels("colony-server", "prod");
        assert_eq!(l["app.kubernetes.io/instance"], "prod");
        assert_eq!(l[MANAGED_BY], OPERATOR);
    }
}
