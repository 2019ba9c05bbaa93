//! Does a live object hold what the operator wants in it? Pure functions over the JSON form
//! of the live and the desired object, so that a hand edit is put back and steady state
//! writes nothing.
//!
//! The comparison covers the fields the operator sets, as server-side apply owns them:
//! every field of the desired object is compared; fields only the live object has
//! (defaults the API server filled in, `status`, other managers' labels and annotations)
//! are left alone. The lists the operator builds (containers, env, ports, volumes) are the
//! operator's whole: an entry a hand edit added is drift too, and is removed. Entries are
//! matched by `name` (by `uid` for owner references, where other owners' entries stay);
//! lists without unique names are compared position by position. A few maps are owned
//! whole as well (a Service selector with one extra key selects nothing).
//!
//! Quantities (`resources`) compare by value: "0.5" and "500m" are the same CPU.
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Map, Value};

/// The live object with the desired fields put back, and where they differed.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Paths of the fields that differed, e.g. `spec.replicas`,
    /// `spec.template.spec.containers[bee].env[FOO]` (names only, never values).
    pub fields: Vec<String>,
    /// The live object with every desired field in place.
    pub merged: Value,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Maps owned whole for an object of `kind`: keys only the live object has are drift.
pub fn exact_maps(kind: &str) -> &'static [&'static str] {
    match kind {
        "Service" => &["spec.selector"],
        _ => &[],
    }
}

/// Compares `live` with `desired` (see the module documentation).
pub fn compare(live: &Value, desired: &Value, exact_maps: &[&str]) -> Drift {
    let mut merged = live.clone();
    let mut fields = Vec::new();
    overlay(&mut merged, desired, "", exact_maps, &mut fields);
    Drift { fields, merged }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_string() } else { format!("{path}.{key}") }
}

fn overlay(live: &mut Value, desired: &Value, path: &str, exact: &[&str], drift: &mut Vec<String>) {
    match desired {
        Value::Object(want) => {
            let Value::Object(have) = live else {
                *live = desired.clone();
                drift.push(path.to_string());
                return;
            };
            if exact.contains(&path) {
                let extra: Vec<String> = have.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
                for k in extra {
                    have.remove(&k);
                    drift.push(join(path, &k));
                }
            }
            for (k, dv) in want {
                // Unset and empty are the same to the API server (it drops empty values).
                if is_empty(dv) {
                    continue;
                }
                let child = join(path, k);
                match have.get_mut(k) {
                    Some(lv) => overlay(lv, dv, &child, exact, drift),
                    None => {
                        have.insert(k.clone(), dv.clone());
                        drift.push(child);
                    }
                }
            }
        }
        Value::Array(want) => {
            let Value::Array(have) = live else {
                *live = desired.clone();
                drift.push(path.to_string());
                return;
            };
            match list_key(path, want) {
                Some(key) => overlay_keyed(have, want, key, path, exact, drift),
                None if have.len() == want.len() => {
                    for (i, (lv, dv)) in have.iter_mut().zip(want).enumerate() {
                        overlay(lv, dv, &format!("{path}[{i}]"), exact, drift);
                    }
                }
                None => {
                    *have = want.clone();
                    drift.push(path.to_string());
                }
            }
        }
        scalar => {
            if !same_scalar(live, scalar, path) {
                *live = scalar.clone();
                drift.push(path.to_string());
            }
        }
    }
}

/// The field that names the entries of a desired list, when every entry has a distinct one.
fn list_key(path: &str, want: &[Value]) -> Option<&'static str> {
    let key = if path == "metadata.ownerReferences" { "uid" } else { "name" };
    let mut seen = std::collections::BTreeSet::new();
    let all_named = want.iter().all(|v| v.get(key).and_then(Value::as_str).is_some_and(|k| seen.insert(k)));
    (all_named && !want.is_empty()).then_some(key)
}

fn overlay_keyed(
    have: &mut Vec<Value>,
    want: &[Value],
    key: &str,
    path: &str,
    exact: &[&str],
    drift: &mut Vec<String>,
) {
    let name_of = |v: &Value| v.get(key).and_then(Value::as_str).map(str::to_string);
    // Other owners' references stay; every other list is the operator's whole.
    let keep_extra = path == "metadata.ownerReferences";
    let mut out = Vec::with_capacity(want.len());
    for dv in want {
        let name = name_of(dv).unwrap_or_default();
        let child = format!("{path}[{name}]");
        match have.iter().position(|lv| name_of(lv).as_deref() == Some(name.as_str())) {
            Some(i) => {
                let mut lv = have[i].clone();
                overlay(&mut lv, dv, &child, exact, drift);
                out.push(lv);
            }
            None => {
                out.push(dv.clone());
                drift.push(child);
            }
        }
    }
    let wanted: Vec<Option<String>> = want.iter().map(name_of).collect();
    for lv in have.iter() {
        if !wanted.contains(&name_of(lv)) {
            if keep_extra {
                out.push(lv.clone());
            } else {
                drift.push(format!("{path}[{}]", name_of(lv).unwrap_or_default()));
            }
        }
    }
    // Same entries in another order: the order is the operator's too (env may refer to
    // earlier entries).
    let live_order: Vec<Option<String>> = have.iter().map(name_of).filter(|n| wanted.contains(n)).collect();
    let want_order: Vec<Option<String>> = wanted.iter().filter(|n| live_order.contains(n)).cloned().collect();
    if !keep_extra && live_order != want_order {
        drift.push(format!("{path} (order)"));
    }
    *have = out;
}

fn same_scalar(live: &Value, desired: &Value, path: &str) -> bool {
    if live == desired {
        return true;
    }
    if path.contains("resources.")
        && let (Some(l), Some(d)) = (live.as_str().and_then(quantity), desired.as_str().and_then(quantity))
    {
        return (l - d).abs() <= f64::EPSILON * l.abs().max(d.abs()).max(1.0);
    }
    false
}

/// The value of a Kubernetes quantity ("500m", "0.5", "1Gi", "1e3"), or None.
pub fn quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().ok().filter(|n| n.is_finite()).map(|n| n * factor);
        }
    }
    s.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// The JSON merge patch (RFC 7386) that turns `live` into `merged`: changed keys, removed
/// keys as null, changed lists whole.
pub fn merge_patch(live: &Value, merged: &Value) -> Value {
    diff(live, merged).unwrap_or_else(|| Value::Object(Map::new()))
}

fn diff(from: &Value, to: &Value) -> Option<Value> {
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => {
            let mut out = Map::new();
            for (k, v) in b {
                match a.get(k) {
                    Some(old) => {
                        if let Some(d) = diff(old, v) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Some(Value::Object(out))
        }
        _ => Some(to.clone()),
    }
}

/// Whether an existing object may be taken as the operator's own: it carries an owner
/// reference to `owner_uid`, or (its owner reference removed by hand) no controller at all
/// and every one of the operator's `labels` for it. Anything else belongs to someone else
/// and is never taken over (the garbage collector would delete it with the owner).
pub fn is_ours(live: &ObjectMeta, owner_uid: &str, labels: &BTreeMap<String, String>) -> bool {
    let refs = live.owner_references.as_deref().unwrap_or_default();
    if refs.iter().any(|r| r.uid == owner_uid) {
        return true;
    }
    let controlled = refs.iter().any(|r| r.controller == Some(true));
    let live_labels = live.labels.clone().unwrap_or_default();
    !controlled && !labels.is_empty() && labels.iter().all(|(k, v)| live_labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    fn deployment(replicas: i64, image: &str, env: Value) -> Value {
        json!({
            "metadata": {"name": "prod", "labels": {"app": "x"}},
            "spec": {
                "replicas": replicas,
                "template": {"spec": {"containers": [{"name": "c", "image": image, "env": env}]}}
            }
        })
    }

    /// What the API server returns for `deployment(...)`: defaults filled in, status, more
    /// metadata.
    fn defaulted(mut v: Value) -> Value {
        v["metadata"]["resourceVersion"] = json!("42");
        v["metadata"]["labels"]["other"] = json!("kept");
        v["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        v["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        v["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        v["status"] = json!({"replicas": 1});
        v
    }

    #[test]
    fn defaults_and_other_fields_are_not_drift() {
        let desired = deployment(1, "img:1", json!([{"name": "A", "value": "1"}]));
        let live = defaulted(desired.clone());
        let d = compare(&live, &desired, &[]);
        assert!(d.is_empty(), "{:?}", d.fields);
        assert_eq!(d.merged, live);
    }

    #[test]
    fn hand_edits_of_managed_fields_are_drift_and_put_back() {
        let desired = deployment(2, "img:1", json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        let live = defaulted(deployment(0, "img:evil", json!([{"name": "A", "value": "changed"}])));
        let d = compare(&live, &desired, &[]);
        assert_eq!(
            d.fields,
            [
                "spec.replicas",
                "spec.template.spec.containers[c].env[A].value",
                "spec.template.spec.containers[c].env[B]",
                "spec.template.spec.containers[c].image",
            ]
        );
        // Put back, keeping what the API server filled in.
        assert!(compare(&d.merged, &desired, &[]).is_empty());
        assert_eq!(d.merged["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d.merged["metadata"]["labels"]["other"], "kept");
    }

    #[test]
    fn entries_added_to_the_operators_lists_are_removed() {
        let desired = deployment(1, "img:1", json!([{"name": "A", "value": "1"}]));
        let live = defaulted(deployment(1, "img:1", json!([{"name": "A", "value": "1"}, {"name": "X", "value": "9"}])));
        let d = compare(&live, &desired, &[]);
        assert_eq!(d.fields, ["spec.template.spec.containers[c].env[X]"]);
        assert_eq!(d.merged["spec"]["template"]["spec"]["containers"][0]["env"], json!([{"name": "A", "value": "1"}]));
    }

    #[test]
    fn reordered_entries_are_drift() {
        let desired = deployment(1, "i", json!([{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)"}]));
        let live = deployment(1, "i", json!([{"name": "B", "value": "$(A)"}, {"name": "A", "value": "1"}]));
        let d = compare(&live, &desired, &[]);
        assert_eq!(d.fields, ["spec.template.spec.containers[c].env (order)"]);
        assert_eq!(d.merged, desired);
    }

    #[test]
    fn a_changed_service_port_is_put_back_whole() {
        let desired = json!({"spec": {"selector": {"app": "x"}, "ports": [{"name": "http", "port": 50080, "targetPort": "http"}]}});
        let live = json!({"spec": {"selector": {"app": "x", "extra": "y"}, "clusterIP": "10.0.0.1",
            "ports": [{"name": "http", "port": 9999, "targetPort": "http", "protocol": "TCP"}]}});
        let d = compare(&live, &desired, exact_maps("Service"));
        assert_eq!(d.fields, ["spec.ports[http].port", "spec.selector.extra"]);
        assert_eq!(
            d.merged["spec"]["ports"][0],
            json!({"name": "http", "port": 50080, "targetPort": "http", "protocol": "TCP"})
        );
        assert_eq!(d.merged["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(d.merged["spec"]["clusterIP"], "10.0.0.1");
        // Without the exact rule, an extra selector key is someone else's business.
        assert_eq!(compare(&live, &desired, &[]).fields, ["spec.ports[http].port"]);
    }

    #[test]
    fn config_map_value_both_ways() {
        let desired = json!({"data": {"USE_COLONY_OS": "false"}});
        let live = json!({"data": {"USE_COLONY_OS": "true", "OTHER": "kept"}});
        let d = compare(&live, &desired, &[]);
        assert_eq!(d.fields, ["data.USE_COLONY_OS"]);
        assert_eq!(d.merged, json!({"data": {"USE_COLONY_OS": "false", "OTHER": "kept"}}));
        let missing = json!({"data": {"OTHER": "kept"}});
        assert_eq!(compare(&missing, &desired, &[]).fields, ["data.USE_COLONY_OS"]);
        let none = json!({"metadata": {}});
        assert_eq!(compare(&none, &desired, &[]).fields, ["data"]);
    }

    #[test]
    fn empty_desired_values_match_absent_ones() {
        let desired = json!({"spec": {"env": [{"name": "E", "value": ""}], "args": [], "nodeSelector": {}, "x": null}});
        let live = json!({"spec": {"env": [{"name": "E"}]}});
        assert!(compare(&live, &desired, &[]).is_empty());
    }

    #[test]
    fn unnamed_lists_compare_by_position() {
        let desired = json!({"args": ["server", "start"], "tolerations": [{"key": "k", "operator": "Exists"}]});
        let live = json!({"args": ["server", "start"], "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]});
        assert!(compare(&live, &desired, &[]).is_empty());
        let edited = json!({"args": ["server"], "tolerations": []});
        assert_eq!(compare(&edited, &desired, &[]).fields, ["args", "tolerations"]);
    }

    #[test]
    fn quantities_compare_by_value() {
        let desired = json!({"resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}}});
        let live = json!({"resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}});
        assert!(compare(&live, &desired, &[]).is_empty());
        let other = json!({"resources": {"limits": {"cpu": "600m", "memory": "1Gi"}}});
        assert_eq!(compare(&other, &desired, &[]).fields, ["resources.limits.cpu"]);
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("2k"), Some(2000.0));
        assert_eq!(quantity("bogus"), None);
        // Outside `resources`, strings compare as strings.
        assert_eq!(compare(&json!({"v": "500m"}), &json!({"v": "0.5"}), &[]).fields, ["v"]);
    }

    #[test]
    fn other_owner_references_stay() {
        let desired = json!({"metadata": {"ownerReferences": [{"uid": "u1", "name": "prod", "kind": "ColonyServer"}]}});
        let live = json!({"metadata": {"ownerReferences": [
            {"uid": "u0", "name": "other", "kind": "Thing"},
            {"uid": "u1", "name": "prod", "kind": "ColonyServer"}]}});
        assert!(compare(&live, &desired, &[]).is_empty());
        let gone = json!({"metadata": {"ownerReferences": [{"uid": "u0", "name": "other", "kind": "Thing"}]}});
        let d = compare(&gone, &desired, &[]);
        assert_eq!(d.fields, ["metadata.ownerReferences[u1]"]);
        assert_eq!(d.merged["metadata"]["ownerReferences"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn merge_patch_sets_changes_and_removes_keys() {
        let live = json!({"metadata": {"resourceVersion": "7", "name": "s"},
            "spec": {"selector": {"a": "1", "extra": "y"}, "ports": [{"port": 1}], "clusterIP": "10.0.0.1"}});
        let desired = json!({"spec": {"selector": {"a": "1"}, "ports": [{"port": 2}]}});
        let d = compare(&live, &desired, &["spec.selector"]);
        let patch = merge_patch(&live, &d.merged);
        assert_eq!(patch, json!({"spec": {"selector": {"extra": null}, "ports": [{"port": 2}]}}));
    }

    fn meta(refs: Vec<OwnerReference>, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(refs),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        }
    }

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference { uid: uid.into(), controller: Some(controller), ..Default::default() }
    }

    #[test]
    fn only_the_operators_objects_are_taken_as_its_own() {
        let ours = BTreeMap::from([("managed-by".to_string(), "op".to_string()), ("instance".into(), "prod".into())]);
        let all = [("managed-by", "op"), ("instance", "prod")];
        assert!(is_ours(&meta(vec![owner("u1", true)], &[]), "u1", &ours), "our owner reference");
        assert!(is_ours(&meta(vec![], &all), "u1", &ours), "owner reference removed by hand, our labels");
        assert!(!is_ours(&meta(vec![], &[]), "u1", &ours), "someone's ConfigMap");
        assert!(!is_ours(&meta(vec![], &[("managed-by", "Helm")]), "u1", &ours), "Helm's");
        assert!(
            !is_ours(&meta(vec![], &[("managed-by", "op"), ("instance", "other")]), "u1", &ours),
            "another server's"
        );
        assert!(!is_ours(&meta(vec![owner("u2", true)], &all), "u1", &ours), "another owner's, even with our labels");
        assert!(
            is_ours(&meta(vec![owner("u2", false)], &all), "u1", &ours),
            "a non-controller reference does not own it"
        );
    }
}
