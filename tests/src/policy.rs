//! Admission that refuses or fails some writes in one test namespace, as a quota, Kyverno,
//! Gatekeeper or a webhook that is down would: cluster-scoped objects bound to the namespace,
//! removed when the guard is dropped.
use std::time::Duration;

use serde_json::{Value, json};

/// Admission objects in force for one namespace until dropped (also on a panic: a namespace
/// whose pod deletions are refused could not be deleted).
pub struct Admission {
    /// (kind, name) of each cluster-scoped object, deleted in this order.
    objects: Vec<(&'static str, String)>,
}

impl Admission {
    /// A ValidatingAdmissionPolicy and its binding: refuses `operations` (`CREATE`, `UPDATE`,
    /// `DELETE`) on `resource` of API `group` ("" for the core group; any version) in
    /// namespace `ns` wherever the CEL expression `allowed` is false (`object` for creates and
    /// updates, `oldObject` for deletes), with `message` (a 4xx refusal). Waits until
    /// `refused` (a server-side dry run, say) sees it in force.
    pub async fn deny<F, Fut>(
        ns: &str,
        (group, resource, operations): (&str, &str, &[&str]),
        allowed: &str,
        message: &str,
        refused: F,
    ) -> Self
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let name = format!("{ns}-{resource}-deny");
        let policy = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [rule(group, resource, operations)]},
                "validations": [{"expression": allowed, "message": message}],
            },
        });
        let binding = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": ["Deny"], "matchResources": {"namespaceSelector": only(ns)}},
        });
        let guard = Admission {
            objects: vec![("validatingadmissionpolicybinding", name.clone()), ("validatingadmissionpolicy", name)],
        };
        guard.apply(&[policy, binding], refused).await;
        guard
    }

    /// A validating webhook with `failurePolicy: Fail` whose endpoint is down (nothing listens
    /// at its URL): every matching write in namespace `ns` fails with a server error (500,
    /// "failed calling webhook") for as long as it is there. Waits as [`Admission::deny`].
    pub async fn webhook_down<F, Fut>(
        ns: &str,
        (group, resource, operations): (&str, &str, &[&str]),
        refused: F,
    ) -> Self
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let name = format!("{ns}-{resource}-down");
        let webhook = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "down.e2e.colony.zyeute.io",
                "clientConfig": {"url": format!("https://127.0.0.1:{}/validate", crate::free_port())},
                "rules": [rule(group, resource, operations)],
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 2,
                "namespaceSelector": only(ns),
            }],
        });
        let guard = Admission { objects: vec![("validatingwebhookconfiguration", name)] };
        guard.apply(&[webhook], refused).await;
        guard
    }

    async fn apply<F, Fut>(&self, objects: &[Value], mut refused: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for object in objects {
            let out = crate::kubectl(&["apply", "-f", "-"], Some(&object.to_string())).await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        crate::wait_for("the admission objects in force", crate::DEADLINE, || {
            let fut = refused();
            async move { if fut.await { Ok(()) } else { Err("not refused yet".to_string()) } }
        })
        .await;
    }
}

fn rule(group: &str, resource: &str, operations: &[&str]) -> Value {
    json!({"apiGroups": [group], "apiVersions": ["*"], "operations": operations, "resources": [resource]})
}

/// A namespace selector that matches namespace `ns` only.
fn only(ns: &str) -> Value {
    json!({"matchLabels": {"kubernetes.io/metadata.name": ns}})
}

impl Drop for Admission {
    fn drop(&mut self) {
        for (kind, name) in &self.objects {
            let _ = std::process::Command::new("kubectl").args(["delete", kind, name, "--ignore-not-found"]).output();
        }
        // The API server drops them from its informers shortly after.
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a server-side dry run of `kubectl ARGS` fails with a message holding `needle`.
pub async fn dry_run_refused(args: &[&str], stdin: Option<&str>, needle: &str) -> bool {
    let mut all = args.to_vec();
    all.push("--dry-run=server");
    match crate::kubectl(&all, stdin).await {
        Ok(out) => !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(needle),
        Err(_) => false,
    }
}
