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
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{ColonyServer, FinanceBee};
use crate::runtime::owned::{ConfigHasher, secret_value};
use crate::runtime::summary::{DeploymentSummary, PodSummary};
use crate::runtime::watch::{GroupIndex, VersionIndex, store_ready};
use crate::runtime::{Context, Error, Result};

/// The controller's caches, shared by its reconciles.
pub struct Caches {
    pub deployments: Store<DeploymentSummary>,
    pub pods: Store<PodSummary>,
    /// Which cached pods are whose: names by bee (their instance label).
    pub pods_by_bee: GroupIndex,
    pub servers: Store<ColonyServer>,
    /// Which version of each Secret and ConfigMap is current (their data is never kept).
    pub secrets: VersionIndex,
    pub config_maps: VersionIndex,
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
        deployments: Store<DeploymentSummary>,
        (pods, pods_by_bee): (Store<PodSummary>, GroupIndex),
        servers: Store<ColonyServer>,
        secrets: VersionIndex,
        config_maps: VersionIndex,
    ) -> Self {
        Self { deployments, pods, pods_by_bee, servers, secrets, config_maps, hashes: Default::default() }
    }

    /// Waits for the caches whose absence is read as a fact (no pods, no Deployment).
    pub async fn ready(&self) -> Result<()> {
        store_ready(&self.deployments, "Deployments").await?;
        store_ready(&self.pods, "bee pods").await?;
        store_ready(&self.servers, "ColonyServers").await
    }

    /// The bee's pods: those its group in the index names (the watch selects the bees' pods
    /// by name and manager labels; the index groups them by instance), looked up by name.
    pub fn pods(&self, ns: &str, bee: &str) -> Vec<Pod> {
        self.pods_by_bee
            .members(ns, bee)
            .iter()
            .filter_map(|name| self.pods.get(&ObjectRef::new(name).within(ns)))
            .map(|p| p.to_pod())
            .collect()
    }

    /// The bee's Deployment as cached (its summary), if the cache has it.
    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        self.deployments.get(&ObjectRef::new(name).within(ns)).map(|d| d.to_deployment())
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
        sources
            .iter()
            .map(|s| match s {
                Source::Secret(n) => (format!("secret/{n}"), self.secrets.get(ns, n)),
                Source::ConfigMap(n) => (format!("configmap/{n}"), self.config_maps.get(ns, n)),
            })
            .collect()
    }

    /// Forgets a deleted bee.
    pub fn forget(&self, ns: &str, name: &str) {
        self.hashes.lock().expect("hashes poisoned").remove(&format!("{ns}/{name}"));
    }
}

/// A Secret or ConfigMap the bee's pods read.
#[derive(Debug, PartialEq)]
pub enum Source {
    Secret(String),
    ConfigMap(String),
}

/// Every Secret and ConfigMap the bee's pods read, in the spec's order.
pub fn sources(fb: &FinanceBee) -> Vec<Source> {
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

#[cfg(test)]
mod tests {
    use super::super::builders;
    use super::*;

    fn bee(yaml: &str) -> FinanceBee {
        serde_yaml::from_str(yaml).expect("a bee")
    }

    /// Caches holding `pods` (namespace, name, instance label) as the pod watch delivers them.
    fn caches_with(pods: &[(&str, &str, &str)]) -> Caches {
        let (reader, mut writer) = kube::runtime::reflector::store::<PodSummary>();
        let index = GroupIndex::by_label(crate::runtime::owned::INSTANCE_LABEL);
        let mut relisting = None;
        for (ns, name, bee) in pods {
            let mut p = PodSummary::default();
            p.metadata.namespace = Some(ns.to_string());
            p.metadata.name = Some(name.to_string());
            p.metadata.labels = Some(builders::selector_labels(bee));
            let event = kube::runtime::watcher::Event::Apply(p);
            index.apply(&event, &mut relisting);
            writer.apply_watcher_event(&event);
        }
        let deployments = kube::runtime::reflector::store().0;
        let servers = kube::runtime::reflector::store().0;
        Caches::new(deployments, (reader, index), servers, VersionIndex::default(), VersionIndex::default())
    }

    #[test]
    fn a_bees_pods_are_those_of_its_name_in_its_namespace() {
        let caches =
            caches_with(&[("ns", "a-1", "a"), ("ns", "a-2", "a"), ("ns", "ab-1", "ab"), ("other", "a-3", "a")]);
        let names = |ns, bee| caches.pods(ns, bee).into_iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names("ns", "a"), ["a-1", "a-2"]);
        assert_eq!(names("ns", "ab"), ["ab-1"]);
        assert_eq!(names("other", "a"), ["a-3"]);
        assert!(names("ns", "b").is_empty());
        // Each comes back with its labels, as the restart rules read it.
        assert_eq!(caches.pods("ns", "ab")[0].labels(), &builders::selector_labels("ab"));
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
    fn a_stripped_deployment_answers_what_the_rollout_rules_and_availability_ask() {
        use crate::runtime::rollout::{fully_available, progress_deadline_exceeded, running_image};
        let whole = serde_json::json!({
            "metadata": {"name": "b", "namespace": "ns", "generation": 3, "labels": {"app": "bee"},
                         "annotations": {"colony.zyeute.io/desired-hash": "h"},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "FinanceBee", "name": "b", "uid": "u", "controller": true}],
                         "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "bee"}},
                     "template": {"metadata": {"labels": {"app": "bee"}},
                                  "spec": {"containers": [{"name": "bee", "image": "img:2", "env": [{"name": "A", "value": "1"}]}],
                                           "dnsPolicy": "ClusterFirst"}}},
            "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2, "readyReplicas": 2,
                       "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
        });
        let d: Deployment = serde_json::from_value(whole.clone()).unwrap();
        // As the cache has it: decoded as a summary, stripped by its watch.
        let mut summary: DeploymentSummary = serde_json::from_value(whole).unwrap();
        crate::runtime::watch::strip_object(&mut summary);
        let s = summary.to_deployment();
        assert_eq!(running_image(&s), running_image(&d));
        assert_eq!(running_image(&s).as_deref(), Some("img:2"));
        assert_eq!(fully_available(&s), fully_available(&d));
        assert!(fully_available(&s));
        assert_eq!(progress_deadline_exceeded(&s), progress_deadline_exceeded(&d));
        assert_eq!(s.metadata.generation, Some(3));
        assert_eq!(s.metadata.owner_references, d.metadata.owner_references);
        assert_eq!(s.metadata.managed_fields, None);
        let containers = &s.spec.template.spec.as_ref().unwrap().containers;
        assert_eq!(containers[0].env, None, "the rest of the spec is not kept");
    }

    #[test]
    fn stripped_pods_keep_what_restarts_and_rollbacks_read() {
        use super::super::restart::PodView;
        let whole = serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}, "annotations": {"x": "y"},
                         "creationTimestamp": "2026-11-29T10:00:00Z",
                         "managedFields": [{"manager": "kubelet"}]},
            "spec": {"containers": [{"name": "c", "image": "img:1", "env": [{"name": "K", "value": "v"}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {
                "phase": "Running", "reason": "Evicted", "podIP": "10.0.0.1",
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": "2026-11-29T10:01:00Z", "message": "m"}
                ],
                "containerStatuses": [{"name": "c", "image": "img:1", "imageID": "sha", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1}}}]
            }
        });
        let pod: Pod = serde_json::from_value(whole.clone()).unwrap();
        let mut summary: PodSummary = serde_json::from_value(whole).unwrap();
        summary.strip();
        let stripped = summary.to_pod();
        // What the decisions read is the same, whole or stripped.
        assert_eq!(PodView::from_pod(&stripped), PodView::from_pod(&pod));
        assert_eq!(crate::runtime::rollout::crash_looping(&stripped), crate::runtime::rollout::crash_looping(&pod));
        assert!(crate::runtime::rollout::crash_looping(&stripped));
        assert_eq!(crate::runtime::rollout::pod_image(&stripped), Some("img:1"));
        assert_eq!(stripped.labels().get("a").map(String::as_str), Some("b"));
        // The rest is gone.
        assert_eq!(stripped.metadata.managed_fields, None);
        assert_eq!(stripped.metadata.annotations, None);
        let containers = stripped.spec.as_ref().map(|s| &s.containers).unwrap();
        assert_eq!(
            containers.iter().map(|c| (c.name.as_str(), c.image.as_deref())).collect::<Vec<_>>(),
            [("c", Some("img:1"))],
            "which release the pod belongs to"
        );
        assert_eq!(containers[0].env, None);
        assert_eq!(stripped.spec.as_ref().unwrap().volumes, None);
        let status = stripped.status.unwrap();
        assert_eq!(status.pod_ip, None);
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        assert_eq!(status.container_statuses.unwrap()[0].image, "");
    }
}
