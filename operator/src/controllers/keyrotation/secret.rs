//! The key Secret: how it is read (IDs and the record, for the decisions), written (one
//! atomic replace guarded by the resourceVersion read, with the record annotations), and
//! owned (`spec.secretDeletionPolicy`).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use super::decide::{SecretRecord, SecretView};
use super::{NAME, keys};
use crate::api::{KeyRotation, KeyRotationSpec, SecretDeletionPolicy};
use crate::runtime::owned::{MANAGED_BY, OPERATOR, owner_ref};
use crate::runtime::{Error, Result, field_manager};

/// On the Secret: the rotation revision it holds (crash recovery compares it with status).
pub const REVISION_ANNOTATION: &str = "colony.zyeute.io/rotation-revision";
/// On the Secret: the `rotate-now` value the rotation it holds answered.
pub const HANDLED_ROTATE_NOW_ANNOTATION: &str = "colony.zyeute.io/rotate-now-handled";
/// On the Secret: when the key it holds became current (RFC 3339).
pub const ROTATED_AT_RECORD_ANNOTATION: &str = "colony.zyeute.io/rotated-at";

/// The Secret's data as raw bytes.
pub fn data_of(secret: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    secret.and_then(|s| s.data.clone()).unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// The record annotations of `annotations`.
pub fn record_of(annotations: &BTreeMap<String, String>) -> SecretRecord {
    SecretRecord {
        revision: annotations.get(REVISION_ANNOTATION).and_then(|v| v.parse().ok()).unwrap_or(0),
        handled_rotate_now: annotations.get(HANDLED_ROTATE_NOW_ANNOTATION).cloned(),
        rotated_at: annotations
            .get(ROTATED_AT_RECORD_ANNOTATION)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// What the decisions need to know of the Secret.
pub fn view(spec: &KeyRotationSpec, secret: Option<&Secret>) -> SecretView {
    let data = data_of(secret);
    SecretView {
        key_id: keys::stored_key_id(spec.key_type, &data, ""),
        previous_key_id: keys::stored_key_id(spec.key_type, &data, "previous."),
        pending_id: keys::stored_key_id(spec.key_type, &data, keys::PENDING_PREFIX),
        record: secret.map(|s| record_of(s.annotations())).unwrap_or_default(),
    }
}

fn set_record(annotations: &mut BTreeMap<String, String>, record: &SecretRecord) {
    annotations.insert(REVISION_ANNOTATION.into(), record.revision.to_string());
    match &record.handled_rotate_now {
        Some(v) => annotations.insert(HANDLED_ROTATE_NOW_ANNOTATION.into(), v.clone()),
        None => annotations.remove(HANDLED_ROTATE_NOW_ANNOTATION),
    };
    match record.rotated_at {
        Some(t) => annotations.insert(ROTATED_AT_RECORD_ANNOTATION.into(), t.to_rfc3339()),
        None => annotations.remove(ROTATED_AT_RECORD_ANNOTATION),
    };
}

fn is_key_rotation_ref(r: &OwnerReference) -> bool {
    r.kind == "KeyRotation" && r.api_version.starts_with("colony.zyeute.io/")
}

/// The ownerReferences the Secret should have under `policy`: with `Retain`, none to a
/// KeyRotation (an earlier operator version set one: removing it makes upgrades safe);
/// with `Delete`, one to `own`. Other owners are kept. None when nothing changes.
pub fn desired_owner_refs(
    policy: SecretDeletionPolicy,
    existing: &[OwnerReference],
    own: &OwnerReference,
) -> Option<Vec<OwnerReference>> {
    let mut refs: Vec<OwnerReference> = existing.iter().filter(|r| !is_key_rotation_ref(r)).cloned().collect();
    if policy == SecretDeletionPolicy::Delete {
        refs.push(own.clone());
    }
    (refs != existing).then_some(refs)
}

fn apply_ownership(kr: &KeyRotation, meta: &mut ObjectMeta) -> Result<bool> {
    let existing = meta.owner_references.clone().unwrap_or_default();
    match desired_owner_refs(kr.spec.secret_deletion_policy, &existing, &owner_ref(kr)?) {
        Some(refs) => {
            meta.owner_references = (!refs.is_empty()).then_some(refs);
            Ok(true)
        }
        None => Ok(false),
    }
}

fn params() -> PostParams {
    PostParams { field_manager: Some(field_manager(NAME)), ..Default::default() }
}

/// Brings the Secret's ownerReferences in line with the deletion policy; writes only when
/// they differ. Returns the Secret as it now is.
pub async fn ensure_ownership(api: &Api<Secret>, kr: &KeyRotation, secret: Secret) -> Result<Secret> {
    let mut s = secret;
    if !apply_ownership(kr, &mut s.metadata)? {
        return Ok(s);
    }
    tracing::info!(policy = ?kr.spec.secret_deletion_policy, "updating the key Secret's owner");
    api.replace(&kr.spec.secret_name, &params(), &s).await.map_err(Error::Kube)
}

/// One atomic write: create, or replace with the resourceVersion read (a concurrent change
/// fails the write and the reconcile retries from fresh state). `record` goes into the
/// annotations in the same write.
pub async fn write(
    api: &Api<Secret>,
    kr: &KeyRotation,
    existing: Option<Secret>,
    data: BTreeMap<String, Vec<u8>>,
    record: &SecretRecord,
) -> Result<Secret> {
    let data: BTreeMap<String, ByteString> = data.into_iter().map(|(k, v)| (k, ByteString(v))).collect();
    match existing {
        Some(mut s) => {
            s.data = Some(data);
            s.string_data = None;
            set_record(s.annotations_mut(), record);
            apply_ownership(kr, &mut s.metadata)?;
            Ok(api.replace(&kr.spec.secret_name, &params(), &s).await.map_err(Error::Kube)?)
        }
        None => {
            let mut annotations = BTreeMap::new();
            set_record(&mut annotations, record);
            let mut s = Secret {
                metadata: ObjectMeta {
                    name: Some(kr.spec.secret_name.clone()),
                    namespace: kr.namespace(),
                    labels: Some(BTreeMap::from([(MANAGED_BY.to_string(), OPERATOR.to_string())])),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                data: Some(data),
                type_: Some("Opaque".into()),
                ..Default::default()
            };
            apply_ownership(kr, &mut s.metadata)?;
            Ok(api.create(&params(), &s).await.map_err(Error::Kube)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kr_ref(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "colony.zyeute.io/v1alpha1".into(),
            kind: "KeyRotation".into(),
            name: "bee-key".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn other() -> OwnerReference {
        OwnerReference { api_version: "v1".into(), kind: "ConfigMap".into(), name: "x".into(), ..Default::default() }
    }

    #[test]
    fn retain_removes_key_rotation_owners_and_keeps_others() {
        let own = kr_ref("u1");
        assert_eq!(desired_owner_refs(SecretDeletionPolicy::Retain, &[], &own), None, "nothing to write");
        assert_eq!(desired_owner_refs(SecretDeletionPolicy::Retain, &[other()], &own), None);
        // An upgrade from a version that owned the Secret, also through a previous KeyRotation.
        assert_eq!(desired_owner_refs(SecretDeletionPolicy::Retain, std::slice::from_ref(&own), &own), Some(vec![]));
        assert_eq!(
            desired_owner_refs(SecretDeletionPolicy::Retain, &[kr_ref("old"), other()], &own),
            Some(vec![other()])
        );
    }

    #[test]
    fn delete_owns_the_secret_once() {
        let own = kr_ref("u1");
        assert_eq!(desired_owner_refs(SecretDeletionPolicy::Delete, &[], &own), Some(vec![own.clone()]));
        assert_eq!(desired_owner_refs(SecretDeletionPolicy::Delete, std::slice::from_ref(&own), &own), None);
        assert_eq!(
            desired_owner_refs(SecretDeletionPolicy::Delete, &[kr_ref("old"), other()], &own),
            Some(vec![other(), own])
        );
    }

    #[test]
    fn the_record_round_trips_through_annotations() {
        let t = DateTime::parse_from_rfc3339("2026-11-29T13:00:00Z").unwrap().with_timezone(&Utc);
        let record = SecretRecord { revision: 7, handled_rotate_now: Some("x".into()), rotated_at: Some(t) };
        let mut a = BTreeMap::from([("foreign".to_string(), "kept".to_string())]);
        set_record(&mut a, &record);
        assert_eq!(record_of(&a), record);
        assert_eq!(a["foreign"], "kept");
        set_record(&mut a, &SecretRecord { revision: 8, ..Default::default() });
        assert_eq!(record_of(&a), SecretRecord { revision: 8, ..Default::default() });
        assert_eq!(record_of(&BTreeMap::new()), SecretRecord::default());
    }

    #[test]
    fn the_view_holds_ids_only() {
        let spec = KeyRotationSpec { secret_name: "k".into(), ..Default::default() };
        let k = keys::generate(crate::api::KeyType::Secp256k1, 0, &mut |b: &mut [u8]| b.fill(3));
        let secret = Secret {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(REVISION_ANNOTATION.to_string(), "2".to_string())])),
                ..Default::default()
            },
            data: Some(k.fields.iter().map(|(f, v)| (f.clone(), ByteString(v.clone()))).collect()),
            ..Default::default()
        };
        let v = view(&spec, Some(&secret));
        assert_eq!(v.key_id.as_deref(), Some(k.id.as_str()));
        assert_eq!((&v.previous_key_id, &v.pending_id, v.record.revision), (&None, &None, 2));
        assert!(!format!("{v:?}").contains(&"03".repeat(32)));
        assert_eq!(view(&spec, None), SecretView::default());
    }
}
