//! How GitOps tools read the operator's status, for tests that check that status never lies:
//! Flux's kstatus rules, and the Argo CD health scripts shipped in
//! `examples/gitops/argocd/argocd-cm-health.yaml`, run as they are by a real Lua interpreter
//! (mlua, with Lua 5.4 built from source: no system package needed).
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::Value;

use crate::repo_root;

/// kstatus's verdict (sigs.k8s.io/cli-utils/pkg/kstatus), as Flux's health checks use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KStatus {
    InProgress,
    Failed,
    Current,
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

/// kstatus over a live object (as JSON): InProgress while the status describes an older
/// generation or `Reconciling=True`, Failed if `Stalled=True`, Current if `Ready=True`;
/// anything else is still in progress.
pub fn kstatus(obj: &Value) -> KStatus {
    let generation = obj["metadata"]["generation"].as_i64();
    let observed = obj["status"]["observedGeneration"].as_i64();
    if generation.is_some() && observed.is_none_or(|o| Some(o) < generation) {
        return KStatus::InProgress;
    }
    if is_true(obj, "Reconciling") {
        return KStatus::InProgress;
    }
    if is_true(obj, "Stalled") {
        return KStatus::Failed;
    }
    if is_true(obj, "Ready") { KStatus::Current } else { KStatus::InProgress }
}

/// The shipped health script of `kind`.
pub fn argocd_script(kind: &str) -> String {
    let path = repo_root().join("examples/gitops/argocd/argocd-cm-health.yaml");
    let text = std::fs::read_to_string(&path).expect("read the Argo CD health checks");
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).expect("parse the Argo CD health checks");
    let key = format!("resource.customizations.health.colony.zyeute.io_{kind}");
    cm["data"][key.as_str()].as_str().unwrap_or_else(|| panic!("no health check {key}")).to_string()
}

/// Argo CD's health of a live object: (status, message), from the shipped script run with
/// `obj` set as Argo CD sets it (JSON nulls are nil).
pub fn argocd_health(kind: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    let options = mlua::serde::SerializeOptions::new().serialize_none_to_null(false).serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options).expect("the object as a Lua table");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua.load(argocd_script(kind)).eval().unwrap_or_else(|e| panic!("{kind} health script: {e}"));
    (hs.get("status").unwrap_or_default(), hs.get("message").unwrap_or_default())
}

/// Both readings of one object, for messages.
pub fn readings(kind: &str, obj: &Value) -> (KStatus, (String, String)) {
    (kstatus(obj), argocd_health(kind, obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(conditions: Value) -> Value {
        json!({"metadata": {"generation": 2}, "spec": {}, "status": {"observedGeneration": 2, "conditions": conditions}})
    }

    #[test]
    fn kstatus_rules() {
        let stale = json!({"metadata": {"generation": 3}, "status": {"observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(kstatus(&stale), KStatus::InProgress);
        assert_eq!(kstatus(&with(json!([{"type": "Ready", "status": "True"}]))), KStatus::Current);
        assert_eq!(
            kstatus(&with(json!([{"type": "Ready", "status": "False"}, {"type": "Stalled", "status": "True"}]))),
            KStatus::Failed
        );
        assert_eq!(
            kstatus(&with(json!([{"type": "Reconciling", "status": "True"}, {"type": "Stalled", "status": "True"}]))),
            KStatus::InProgress
        );
    }

    #[test]
    fn the_shipped_scripts_run() {
        let obj =
            with(json!([{"type": "Ready", "status": "True", "reason": "Available", "message": "1/1 replicas ready"}]));
        assert_eq!(argocd_health("FinanceBee", &obj), ("Healthy".into(), "1/1 replicas ready".into()));
        let rolled = with(json!([
            {"type": "Ready", "status": "True", "reason": "Available", "message": "1/1 replicas ready"},
            {"type": "RolledBack", "status": "True", "reason": "RolledBack", "message": "bee:2 failed"}
        ]));
        assert_eq!(argocd_health("FinanceBee", &rolled).0, "Degraded");
        assert_eq!(argocd_health("ColonyServer", &rolled).0, "Degraded");
        let null_status = json!({"metadata": {"generation": 1}, "spec": {}, "status": null});
        assert_eq!(argocd_health("KeyRotation", &null_status).0, "Progressing");
    }
}
