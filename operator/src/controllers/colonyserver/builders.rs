//! Desired objects of a ColonyServer, as pure functions of the resource and the inputs the
//! reconciler gathered.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, PodSecurityContext, Probe,
    SeccompProfile, SecretKeySelector as K8sSecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::api::{ColonyServer, SecretKeySelector};
use crate::runtime::Result;
#[cfg(test)]
use crate::runtime::owned::CONFIG_HASH_ANNOTATION;
use crate::runtime::owned::{self, WorkloadParts, labels, owner_ref, workload_deployment};

pub const APP_LABEL: &str = "colony-server";
/// `app.kubernetes.io/name` of a server's fallback ConfigMap.
pub const FALLBACK_APP_LABEL: &str = "colony-fallback";
pub const CONTAINER: &str = "colonies";
const TLS_DIR: &str = "/etc/colonies/tls";

/// What the reconciler resolved before building: the image to run (spec.image, or the last
/// known good one after a rollback), the server ID derived from its key, and the hash of the
/// referenced Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInputs {
    pub image: String,
    pub server_id: Option<String>,
    pub config_hash: String,
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

fn env_secret(name: &str, sel: &SecretKeySelector) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(K8sSecretKeySelector {
                name: sel.name.clone(),
                key: sel.key.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The environment colonies-server reads (internal/cli in colonyos/colonies), then the
/// user's extra `env`, which may override any of it.
pub fn server_env(cs: &ColonyServer, inputs: &ServerInputs) -> Vec<EnvVar> {
    let spec = &cs.spec;
    let mut out = vec![
        env("TZ", "UTC"),
        env("COLONIES_SERVER_PORT", spec.port.to_string()),
        env("COLONIES_SERVER_HTTP_PORT", spec.port.to_string()),
        env("COLONIES_TLS", if spec.tls.enabled { "true" } else { "false" }),
    ];
    if spec.tls.enabled {
        out.push(env("COLONIES_TLSCERT", format!("{TLS_DIR}/tls.crt")));
        out.push(env("COLONIES_TLSKEY", format!("{TLS_DIR}/tls.key")));
    }
    if let Some(db) = &spec.database {
        out.push(env("COLONIES_DB_HOST", db.host.clone()));
        out.push(env("COLONIES_DB_PORT", db.port.to_string()));
        out.push(env_secret("COLONIES_DB_USER", &db.user));
        out.push(env_secret("COLONIES_DB_PASSWORD", &db.password));
        out.push(env("COLONIES_DB_TIMESCALEDB", if db.timescaledb { "true" } else { "false" }));
    }
    if let Some(key) = &spec.server_key_secret_ref {
        out.push(env_secret("COLONIES_SERVER_PRVKEY", key));
    }
    if let Some(id) = &inputs.server_id {
        out.push(env("COLONIES_SERVER_ID", id.clone()));
    }
    for extra in &spec.env {
        out.retain(|e| e.name != extra.name);
        out.push(extra.clone());
    }
    out
}

fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..Default::default()
    }
}

fn http_probe(path: &str, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: None,
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Default::default()
    }
}

pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    owned::selector_labels(APP_LABEL, name)
}

pub fn deployment(cs: &ColonyServer, inputs: &ServerInputs) -> Result<Deployment> {
    let name = cs.name_any();
    let spec = &cs.spec;
    let mut container = Container {
        name: CONTAINER.into(),
        image: Some(inputs.image.clone()),
        args: Some(vec!["server".into(), "start".into()]),
        env: Some(server_env(cs, inputs)),
        ports: Some(vec![ContainerPort { name: Some("http".into()), container_port: spec.port, ..Default::default() }]),
        readiness_probe: Some(http_probe(&spec.health.path, 10, 3)),
        liveness_probe: Some(http_probe(&spec.health.path, 20, 6)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_container_security()),
        ..Default::default()
    };
    let mut volumes = None;
    if spec.tls.enabled {
        let secret_name = spec.tls.secret_name.clone().unwrap_or_else(|| format!("{name}-tls"));
        container.volume_mounts = Some(vec![VolumeMount {
            name: "tls".into(),
            mount_path: TLS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        }]);
        volumes = Some(vec![Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret_name), ..Default::default() }),
            ..Default::default()
        }]);
    }
    workload_deployment(
        cs,
        WorkloadParts {
            app_label: APP_LABEL,
            replicas: spec.replicas,
            container,
            volumes,
            config_hash: inputs.config_hash.clone(),
            overrides: spec.pod_template.clone().unwrap_or_default(),
            pod_security: PodSecurityContext::default(),
            progress_deadline_seconds: Some(spec.rollback.progress_deadline.get().as_secs().min(i32::MAX as u64) as i32),
        },
    )
}

pub fn service(cs: &ColonyServer) -> Result<Service> {
    let name = cs.name_any();
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: cs.namespace(),
            labels: Some(labels(APP_LABEL, &name)),
            owner_references: Some(vec![owner_ref(cs)?]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: cs.spec.port,
                target_port: Some(IntOrString::String("http".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}

/// The fallback ConfigMap: `USE_COLONY_OS` (or the configured key) = "false" while the
/// fallback is active, "true" otherwise.
pub fn fallback_config_map(cs: &ColonyServer, active: bool) -> Result<ConfigMap> {
    let name = cs.name_any();
    let spec = &cs.spec.fallback;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(spec.effective_config_map_name(&name)),
            namespace: cs.namespace(),
            labels: Some(labels(FALLBACK_APP_LABEL, &name)),
            owner_references: Some(vec![owner_ref(cs)?]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(spec.key.clone(), super::fallback::configmap_value(active).to_string())])),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ColonyServerSpec, DatabaseSpec};

    fn server(spec: ColonyServerSpec) -> ColonyServer {
        let mut cs = ColonyServer::new("prod", spec);
        cs.metadata.namespace = Some("colony".into());
        cs.metadata.uid = Some("uid-1".into());
        cs
    }

    fn inputs() -> ServerInputs {
        ServerInputs {
            image: "colonyos/colonies:v1.9.12".into(),
            server_id: Some("abc".into()),
            config_hash: "h1".into(),
        }
    }

    fn managed() -> ColonyServerSpec {
        ColonyServerSpec {
            image: Some("colonyos/colonies:v1.9.12".into()),
            database: Some(DatabaseSpec {
                host: "postgres".into(),
                port: 5432,
                user: SecretKeySelector::new("db", "user"),
                password: SecretKeySelector::new("db", "password"),
                timescaledb: false,
            }),
            server_key_secret_ref: Some(SecretKeySelector::new("server-key", "prvkey")),
            ..Default::default()
        }
    }

    fn env_map(d: &Deployment) -> BTreeMap<String, EnvVar> {
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        c.env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect()
    }

    #[test]
    fn deployment_runs_server_start_with_the_servers_environment() {
        let d = deployment(&server(managed()), &inputs()).unwrap();
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.image.as_deref(), Some("colonyos/colonies:v1.9.12"));
        assert_eq!(c.args.clone().unwrap(), ["server", "start"]);
        let env = env_map(&d);
        assert_eq!(env["COLONIES_SERVER_PORT"].value.as_deref(), Some("50080"));
        assert_eq!(env["COLONIES_TLS"].value.as_deref(), Some("false"));
        assert_eq!(env["COLONIES_DB_HOST"].value.as_deref(), Some("postgres"));
        assert_eq!(env["COLONIES_DB_TIMESCALEDB"].value.as_deref(), Some("false"));
        assert_eq!(env["COLONIES_SERVER_ID"].value.as_deref(), Some("abc"));
        assert_eq!(env["TZ"].value.as_deref(), Some("UTC"));
        // Secrets are referenced, never copied into the spec.
        for key in ["COLONIES_DB_USER", "COLONIES_DB_PASSWORD", "COLONIES_SERVER_PRVKEY"] {
            assert!(env[key].value.is_none(), "{key} must come from a secretKeyRef");
            assert!(env[key].value_from.as_ref().unwrap().secret_key_ref.is_some());
        }
    }

    #[test]
    fn probes_use_the_health_path_and_port() {
        let mut spec = managed();
        spec.health.path = "/api/v1/health".into();
        spec.port = 8080;
        let d = deployment(&server(spec), &inputs()).unwrap();
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let p = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(p.path.as_deref(), Some("/api/v1/health"));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert!(c.liveness_probe.is_some());
        assert_eq!(env_map(&d)["COLONIES_SERVER_HTTP_PORT"].value.as_deref(), Some("8080"));
    }

    #[test]
    fn pod_template_carries_the_config_hash_and_owner() {
        let d = deployment(&server(managed()), &inputs()).unwrap();
        let ann = d.spec.template.metadata.as_ref().unwrap().annotations.clone().unwrap();
        assert_eq!(ann[CONFIG_HASH_ANNOTATION], "h1");
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ColonyServer");
        assert_eq!(owner.controller, Some(true));
        let mut other = inputs();
        other.config_hash = "h2".into();
        assert_ne!(d, deployment(&server(managed()), &other).unwrap(), "a new hash changes the template");
    }

    #[test]
    fn extra_env_overrides_generated_env() {
        let mut spec = managed();
        spec.env = vec![EnvVar { name: "COLONIES_TLS".into(), value: Some("true".into()), value_from: None }];
        let env = env_map(&deployment(&server(spec), &inputs()).unwrap());
        assert_eq!(env["COLONIES_TLS"].value.as_deref(), Some("true"));
    }

    #[test]
    fn tls_mounts_the_certificate_secret() {
        let mut spec = managed();
        spec.tls.enabled = true;
        let d = deployment(&server(spec), &inputs()).unwrap();
        let env = env_map(&d);
        assert_eq!(env["COLONIES_TLS"].value.as_deref(), Some("true"));
        assert_eq!(env["COLONIES_TLSCERT"].value.as_deref(), Some("/etc/colonies/tls/tls.crt"));
        let pod = d.spec.template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap()[0].secret.as_ref().unwrap().secret_name.as_deref(), Some("prod-tls"));
    }

    #[test]
    fn service_selects_the_server_pods() {
        let cs = server(managed());
        let s = service(&cs).unwrap();
        let d = deployment(&cs, &inputs()).unwrap();
        let pod_labels = d.spec.template.metadata.unwrap().labels.unwrap();
        for (k, v) in s.spec.unwrap().selector.unwrap() {
            assert_eq!(pod_labels.get(&k), Some(&v));
        }
    }

    #[test]
    fn fallback_config_map_value() {
        let cs = server(managed());
        let on = fallback_config_map(&cs, true).unwrap();
        assert_eq!(on.metadata.name.as_deref(), Some("prod-fallback"));
        assert_eq!(on.data.unwrap()["USE_COLONY_OS"], "false");
        let off = fallback_config_map(&cs, false).unwrap();
        assert_eq!(off.data.unwrap()["USE_COLONY_OS"], "true");
    }
}
