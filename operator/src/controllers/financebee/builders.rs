//! The bee's Deployment as a pure function of the FinanceBee and resolved inputs.
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PodSecurityContext, SeccompProfile,
    SecretKeySelector as K8sSecretKeySelector, SecurityContext,
};
use kube::ResourceExt;

use crate::api::FinanceBee;
use crate::runtime::Result;
#[cfg(test)]
use crate::runtime::owned::CONFIG_HASH_ANNOTATION;
use crate::runtime::owned::{self, WorkloadParts, workload_deployment};

pub const APP_LABEL: &str = "finance-bee";
pub const CONTAINER: &str = "bee";

/// What the reconciler resolved: where the server is, how many replicas to run now, and the
/// hash of every Secret and ConfigMap the pod reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeeInputs {
    /// spec.image, or the last known good image after a rollback.
    pub image: String,
    pub server_host: String,
    pub server_port: u16,
    pub server_tls: bool,
    pub replicas: i32,
    pub config_hash: String,
}

/// Host and port of a server URL such as `http://prod.colony.svc:50080`.
pub fn host_port(url: &str) -> Option<(String, u16, bool)> {
    let (scheme, rest) = url.split_once("://")?;
    let tls = scheme.eq_ignore_ascii_case("https");
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h.to_string(), p.parse().ok()?),
        _ => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    (!host.is_empty()).then_some((host, port, tls))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), value_from: None }
}

pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    owned::selector_labels(APP_LABEL, name)
}

/// The environment the bee (a pycolonies executor) reads, then the user's `env`.
pub fn bee_env(fb: &FinanceBee, inputs: &BeeInputs) -> Vec<EnvVar> {
    let spec = &fb.spec;
    let name = fb.name_any();
    let key = EnvVarSource {
        secret_key_ref: Some(K8sSecretKeySelector {
            name: spec.executor_key_secret_ref.name.clone(),
            key: spec.executor_key_secret_ref.key.clone(),
            optional: Some(false),
        }),
        ..Default::default()
    };
    let poll_secs = spec.poll_timeout.get().as_secs().max(1);
    let executor_name = spec.effective_executor_name(&name);
    let mut out = vec![
        env("COLONIES_SERVER_HOST", inputs.server_host.clone()),
        env("COLONIES_SERVER_PORT", inputs.server_port.to_string()),
        env("COLONIES_TLS", if inputs.server_tls { "true" } else { "false" }),
        env("COLONIES_COLONY_NAME", spec.colony_name.clone()),
        EnvVar { name: "COLONIES_EXECUTOR_PRVKEY".into(), value: None, value_from: Some(key.clone()) },
        EnvVar { name: "COLONIES_PRVKEY".into(), value: None, value_from: Some(key) },
        env("COLONIES_EXECUTOR_NAME", executor_name.clone()),
        env("EXECUTOR_NAME", executor_name),
        env("COLONIES_EXECUTOR_TYPE", spec.executor_type.clone()),
        env("EXECUTOR_TYPE", spec.executor_type.clone()),
        env("POLL_TIMEOUT", poll_secs.to_string()),
    ];
    for extra in &spec.env {
        out.retain(|e| e.name != extra.name);
        out.push(extra.clone());
    }
    out
}

pub fn deployment(fb: &FinanceBee, inputs: &BeeInputs) -> Result<Deployment> {
    let spec = &fb.spec;
    let container = Container {
        name: CONTAINER.into(),
        image: Some(inputs.image.clone()),
        env: Some(bee_env(fb, inputs)),
        env_from: (!spec.env_from.is_empty()).then(|| spec.env_from.clone()),
        resources: Some(spec.effective_resources()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    workload_deployment(
        fb,
        WorkloadParts {
            app_label: APP_LABEL,
            replicas: inputs.replicas,
            container,
            volumes: None,
            config_hash: inputs.config_hash.clone(),
            overrides: spec.pod_template.clone().unwrap_or_default(),
            pod_security: PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(10001),
                ..Default::default()
            },
            progress_deadline_seconds: Some(spec.rollback.progress_deadline.get().as_secs().min(i32::MAX as u64) as i32),
        },
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::{FinanceBeeSpec, LocalObjectReference, SecretKeySelector};

    /// A bee `finance` in `colony` of server `prod`, its key in Secret `bee-key`.
    pub(in crate::controllers::financebee) fn bee() -> FinanceBee {
        let mut fb = FinanceBee::new(
            "finance",
            FinanceBeeSpec {
                image: "zyeute/finance-bee:1.0".into(),
                colony_server_ref: LocalObjectReference::new("prod"),
                colony_name: "zyeute".into(),
                executor_key_secret_ref: SecretKeySelector::new("bee-key", "prvkey"),
                ..Default::default()
            },
        );
        fb.metadata.namespace = Some("colony".into());
        fb.metadata.uid = Some("uid".into());
        fb
    }

    fn inputs() -> BeeInputs {
        BeeInputs {
            image: "zyeute/finance-bee:1.0".into(),
            server_host: "prod.colony.svc".into(),
            server_port: 50080,
            server_tls: false,
            replicas: 1,
            config_hash: "h".into(),
        }
    }

    #[test]
    fn parses_server_urls() {
        assert_eq!(host_port("http://prod.colony.svc:50080"), Some(("prod.colony.svc".into(), 50080, false)));
        assert_eq!(host_port("https://colonies.example.com/"), Some(("colonies.example.com".into(), 443, true)));
        assert_eq!(host_port("http://user:pw@h:1/x"), Some(("h".into(), 1, false)));
        assert_eq!(host_port("not a url"), None);
        assert_eq!(host_port("http://"), None);
    }

    #[test]
    fn environment_and_defaults() {
        let d = deployment(&bee(), &inputs()).unwrap();
        let c = &d.spec.template.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = c.env.clone().unwrap().into_iter().map(|e| (e.name.clone(), e)).collect();
        assert_eq!(env["COLONIES_SERVER_HOST"].value.as_deref(), Some("prod.colony.svc"));
        assert_eq!(env["COLONIES_SERVER_PORT"].value.as_deref(), Some("50080"));
        assert_eq!(env["COLONIES_COLONY_NAME"].value.as_deref(), Some("zyeute"));
        assert_eq!(
            env["EXECUTOR_NAME"].value.as_deref(),
            Some("finance"),
            "executor name defaults to the resource name"
        );
        assert_eq!(env["EXECUTOR_TYPE"].value.as_deref(), Some("finance-worker"));
        assert_eq!(env["POLL_TIMEOUT"].value.as_deref(), Some("10"));
        assert!(env["COLONIES_EXECUTOR_PRVKEY"].value.is_none());
        let limits = c.resources.clone().unwrap().limits.unwrap();
        assert_eq!(limits["cpu"].0, "500m");
        assert_eq!(limits["memory"].0, "512Mi");
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn replicas_and_hash_come_from_inputs() {
        let mut i = inputs();
        i.replicas = 0;
        i.config_hash = "other".into();
        let d = deployment(&bee(), &i).unwrap();
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(0));
        assert_eq!(spec.template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION], "other");
    }
}
