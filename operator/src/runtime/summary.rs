//! Cache shapes: a Deployment or a pod as a cache keeps it, decoded straight from the watch
//! into a type that has room for nothing else.
//!
//! A cached object stripped of the fields nobody reads still costs the whole Rust struct:
//! k8s-openapi's `Deployment` is 2.4 KB before any of its strings, its `Container` 2.3 KB,
//! a `Pod` 2.4 KB (its `PodSpec` is inline even when it is `None`), a `ContainerStatus` 0.75
//! KB. With a thousand bees that was 5 MB of cache for what a few hundred bytes per object
//! say. A summary is a type of its own (the API server's kind, decoded with serde ignoring
//! the rest), so the cache holds only what the reconcile reads, and the full field is never
//! even decoded. A reconcile turns the summary into the k8s-openapi object it reads
//! (`to_deployment`, `to_pod`): the same object the stripped cache held before, so the
//! decisions read exactly what they read then.
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
    PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;

/// Makes `$summary` (a struct with `metadata: ObjectMeta`) a resource of the same kind as
/// `$full`: the API paths, kind and scope are `$full`'s.
macro_rules! summary_of {
    ($summary:ty, $full:ty) => {
        impl k8s_openapi::Resource for $summary {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str = <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $summary {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A Deployment as the bees' cache keeps it: metadata, replicas, each container's name and
/// image, and status (what the rollout rules and availability read). Whether the rest of the
/// spec is as the operator left it is answered by the generation
/// ([`crate::runtime::owned::converge_summarized`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct DeploymentSummary {
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: DeploymentSpecSummary,
    pub status: Option<DeploymentStatus>,
}
summary_of!(DeploymentSummary, Deployment);

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct DeploymentSpecSummary {
    replicas: Option<i32>,
    #[serde(default)]
    template: TemplateSummary,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct TemplateSummary {
    #[serde(default)]
    spec: PodSpecSummary,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct PodSpecSummary {
    #[serde(default)]
    containers: Vec<ContainerImage>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct ContainerImage {
    name: String,
    image: Option<String>,
}

impl PodSpecSummary {
    /// Each container with only its name and image set.
    fn containers(&self) -> Vec<Container> {
        self.containers
            .iter()
            .map(|c| Container { name: c.name.clone(), image: c.image.clone(), ..Default::default() })
            .collect()
    }
}

impl DeploymentSummary {
    /// The Deployment the summary stands for, with only the summarized fields set.
    pub fn to_deployment(&self) -> Deployment {
        let containers = self.spec.template.spec.containers();
        Deployment {
            metadata: self.metadata.clone(),
            spec: DeploymentSpec {
                replicas: self.spec.replicas,
                template: PodTemplateSpec { metadata: None, spec: Some(PodSpec { containers, ..Default::default() }) },
                ..Default::default()
            },
            status: self.status.clone(),
        }
    }
}

/// A pod as the bees' cache keeps it (what `PodView::from_pod` and the rollout rules read):
/// its name, labels and timestamps; each container's name and image (which release the pod
/// belongs to); its phase and reason, the Ready condition's status and time, and each
/// container's restart count, readiness and waiting reason.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct PodSummary {
    pub metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpecSummary,
    status: Option<PodStatusSummary>,
}
summary_of!(PodSummary, Pod);

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct PodStatusSummary {
    phase: Option<String>,
    reason: Option<String>,
    conditions: Option<Vec<ConditionSummary>>,
    container_statuses: Option<Vec<ContainerStatusSummary>>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ConditionSummary {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    last_transition_time: Option<Time>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct ContainerStatusSummary {
    name: String,
    #[serde(default)]
    ready: bool,
    #[serde(default)]
    restart_count: i32,
    state: Option<StateSummary>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct StateSummary {
    waiting: Option<WaitingSummary>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
struct WaitingSummary {
    reason: Option<String>,
}

impl PodSummary {
    /// Drops what the summary decoded and no reader needs: bookkeeping, annotations, owner
    /// references, finalizers, and every condition but Ready. For the pod watch.
    pub fn strip(&mut self) {
        let m = &mut self.metadata;
        crate::runtime::watch::strip_bookkeeping(m);
        m.annotations = None;
        m.owner_references = None;
        m.finalizers = None;
        if let Some(conditions) = self.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.retain(|c| c.type_ == "Ready");
        }
    }

    /// The pod the summary stands for, with only the summarized fields set.
    pub fn to_pod(&self) -> Pod {
        let status = self.status.as_ref().map(|s| PodStatus {
            phase: s.phase.clone(),
            reason: s.reason.clone(),
            conditions: s.conditions.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| PodCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        last_transition_time: c.last_transition_time.clone(),
                        ..Default::default()
                    })
                    .collect()
            }),
            container_statuses: s.container_statuses.as_ref().map(|cs| {
                cs.iter()
                    .map(|c| ContainerStatus {
                        name: c.name.clone(),
                        ready: c.ready,
                        restart_count: c.restart_count,
                        state: c.state.as_ref().and_then(|s| s.waiting.as_ref()).map(|w| ContainerState {
                            waiting: Some(ContainerStateWaiting { reason: w.reason.clone(), message: None }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        });
        let spec = (!self.spec.containers.is_empty())
            .then(|| PodSpec { containers: self.spec.containers(), ..Default::default() });
        Pod { metadata: self.metadata.clone(), spec, status }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    #[test]
    fn summaries_are_the_kinds_they_summarize() {
        use kube::Resource;
        assert_eq!(DeploymentSummary::kind(&()), "Deployment");
        assert_eq!(DeploymentSummary::api_version(&()), "apps/v1");
        assert_eq!(DeploymentSummary::plural(&()), "deployments");
        assert_eq!(PodSummary::kind(&()), "Pod");
        assert_eq!(PodSummary::api_version(&()), "v1");
        assert_eq!(PodSummary::plural(&()), "pods");
    }

    #[test]
    fn a_summary_is_smaller_than_the_object() {
        // The point of the type: what a cached object costs before its strings.
        assert!(std::mem::size_of::<DeploymentSummary>() * 3 < std::mem::size_of::<Deployment>());
        assert!(std::mem::size_of::<PodSummary>() * 3 < std::mem::size_of::<Pod>());
    }

    #[test]
    fn an_empty_object_decodes() {
        let d: DeploymentSummary = serde_json::from_value(serde_json::json!({"metadata": {"name": "d"}})).unwrap();
        assert_eq!(d.name_any(), "d");
        assert_eq!(d.to_deployment().spec.template.spec.unwrap().containers, vec![]);
        let p: PodSummary = serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}})).unwrap();
        assert_eq!(p.to_pod().status, None);
        assert_eq!(p.to_pod().spec, None);
    }
}
