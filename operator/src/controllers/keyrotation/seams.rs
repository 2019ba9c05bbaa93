//! The reconcile's IO against a mocked API server: which requests it makes, in which order,
//! with which content and field manager, and what it does with the answers.
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Duration as TimeDelta, Utc};
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::controller::Action;
use serde_json::Value;

use super::reconcile::reconcile;
use super::{REVISION_ANNOTATION, keys, secret};
use crate::api::{
    KeyRotation, KeyRotationSpec, KeyRotationStatus, KeyType, MONTHLY_SCHEDULE, ROTATE_NOW_ANNOTATION,
    SecretDeletionPolicy,
};
use crate::runtime::Error;
use crate::runtime::testing::{self, ApiServer, Reply, Seen};

const ROTATION: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/keyrotations/bee-key";
const STATUS: &str = "/apis/colony.zyeute.io/v1alpha1/namespaces/colony/keyrotations/bee-key/status";
const SECRETS: &str = "/api/v1/namespaces/colony/secrets";
const SECRET: &str = "/api/v1/namespaces/colony/secrets/bee-secret";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/colony/events";
const MANAGER: &str = "colony-operator/keyrotation";

fn rotation(status: Option<KeyRotationStatus>) -> KeyRotation {
    let spec = KeyRotationSpec {
        schedule: Some(MONTHLY_SCHEDULE.into()),
        secret_name: "bee-secret".into(),
        key_type: KeyType::Secp256k1,
        keep_previous: 1,
        ..Default::default()
    };
    let mut kr = KeyRotation::new("bee-key", spec);
    kr.metadata.namespace = Some("colony".into());
    kr.metadata.uid = Some("kr-uid".into());
    kr.metadata.resource_version = Some("7".into());
    kr.status = status;
    kr
}

/// A key Secret holding `key` at `revision`, as the API server returns it.
fn key_secret(key: &keys::GeneratedKey, revision: i64) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("bee-secret".into()),
            namespace: Some("colony".into()),
            resource_version: Some("41".into()),
            annotations: Some(BTreeMap::from([(REVISION_ANNOTATION.to_string(), revision.to_string())])),
            ..Default::default()
        },
        data: Some(key.fields.iter().map(|(k, v)| (k.clone(), ByteString(v.clone()))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A rotation rotated a day ago on a 30-day interval, with `status` otherwise: not due,
/// whatever the date. (Under the fixture's monthly schedule, "a day ago" is due for a day after
/// each 1st of the month at 03:00.)
fn rotated_a_day_ago(status: KeyRotationStatus) -> KeyRotation {
    let mut kr =
        rotation(Some(KeyRotationStatus { last_rotation_time: Some(Utc::now() - TimeDelta::days(1)), ..status }));
    kr.spec.schedule = None;
    kr.spec.interval = Some("720h".into());
    kr
}

/// A rotation at revision 1 holding `old`, rotated a day ago, asked to rotate now ("r1").
fn rotate_now_requested(old: &keys::GeneratedKey) -> KeyRotation {
    let mut kr = rotated_a_day_ago(KeyRotationStatus {
        revision: 1,
        current_key_id: Some(old.id.clone()),
        ..Default::default()
    });
    kr.metadata.annotations = Some(BTreeMap::from([(ROTATE_NOW_ANNOTATION.to_string(), "r1".to_string())]));
    kr
}

/// A requested rotation ([`rotate_now_requested`] of the key `old`) reconciled up to its
/// Secret write, which is answered with `reply`.
struct Requested {
    old: keys::GeneratedKey,
    kr: KeyRotation,
    api: ApiServer,
    run: tokio::task::JoinHandle<crate::runtime::Result<Action>>,
    /// The Secret write.
    put: Seen,
}

async fn requested_until_the_secret_write(reply: Reply) -> Requested {
    let (ctx, mut api) = testing::context();
    let old = fixed_key(7);
    let kr = rotate_now_requested(&old);
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::ok(&key_secret(&old, 1))).await;
    let put = api.expect(Method::PUT, SECRET, reply).await;
    Requested { old, kr, api, run, put }
}

fn fixed_key(byte: u8) -> keys::GeneratedKey {
    keys::generate(KeyType::Secp256k1, 32, &mut |b: &mut [u8]| b.fill(byte))
}

fn status_after(kr: &KeyRotation, seen: &Seen) -> KeyRotation {
    let mut written = kr.clone();
    written.status = Some(serde_json::from_value(seen.body["status"].clone()).expect("a KeyRotationStatus"));
    written
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()
}

/// Runs one reconcile against `api` until the status write, which it answers; returns the
/// created Secret, the status patch and the reconcile's result.
async fn first_rotation(
    kr: &KeyRotation,
    api: &mut ApiServer,
    run: tokio::task::JoinHandle<crate::runtime::Result<Action>>,
) -> (Seen, Seen, Seen, Action) {
    api.expect(Method::GET, ROTATION, Reply::ok(kr)).await;
    api.expect(Method::GET, SECRET, Reply::not_found()).await;
    let create = api.expect(Method::POST, SECRETS, Reply::Echo).await;
    let event = api.expect(Method::POST, EVENTS, Reply::Echo).await;
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(kr, &patch)));
    let action = api.finish(run).await.expect("the reconcile succeeds");
    (create, event, patch, action)
}

/// No key yet: the Secret is created holding the new key, labelled and recorded, with the
/// operator's field manager; status and the Event carry its ID, never the private key, and
/// neither do the logs.
#[tokio::test]
async fn the_first_key_is_created_in_its_secret_and_only_its_id_goes_further() {
    let (logs, _guard) = testing::capture_logs();
    let (ctx, mut api) = testing::context();
    let kr = rotation(None);
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    let (create, event, patch, _) = first_rotation(&kr, &mut api, run).await;
    api.done().await;

    assert_eq!(create.param("fieldManager").as_deref(), Some(MANAGER));
    let created: Secret = serde_json::from_value(create.body.clone()).unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("bee-secret"));
    assert_eq!(created.metadata.namespace.as_deref(), Some("colony"));
    assert_eq!(created.metadata.labels.clone().unwrap()["app.kubernetes.io/managed-by"], "colony-operator");
    assert_eq!(created.metadata.annotations.clone().unwrap()[REVISION_ANNOTATION], "1");
    assert_eq!(created.metadata.owner_references, None, "Retain: the Secret outlives the KeyRotation");
    let data = secret::data_of(Some(&created));
    let prvkey = String::from_utf8(data["prvkey"].clone()).unwrap();
    assert_eq!(prvkey.len(), 64, "a secp256k1 key in hex");
    let id = keys::stored_key_id(KeyType::Secp256k1, &data, "").unwrap();
    assert_eq!(data["id"], id.as_bytes(), "the stored id is the key's own");

    assert_eq!(patch.param("fieldManager").as_deref(), Some(MANAGER));
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    let status = &patch.body["status"];
    assert_eq!(
        (&status["revision"], &status["currentKeyId"], &status["phase"]),
        (&1.into(), &id.clone().into(), &"Idle".into())
    );
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(event.body["reason"], "KeyRotated");
    assert!(event.body["note"].as_str().unwrap().contains(&id));

    let logged = logs.text();
    assert!(logged.contains("rotated key"), "the capture works: {logged}");
    for (what, text) in [("status", &patch.raw), ("event", &event.raw), ("logs", &logged)] {
        assert!(!text.contains(&prvkey), "the private key leaked into the {what}");
    }
}

/// A due rotation replaces the Secret in one write guarded by the resourceVersion read: the
/// new key is current, the old one is kept as `previous.*`, the record advances.
#[tokio::test]
async fn a_requested_rotation_replaces_the_secret_guarded_by_its_resource_version() {
    let Requested { old, kr, mut api, run, put: replace } = requested_until_the_secret_write(Reply::Echo).await;
    api.expect(Method::POST, EVENTS, Reply::Echo).await;
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(&kr, &patch)));
    api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;

    assert_eq!(replace.param("fieldManager").as_deref(), Some(MANAGER));
    let written: Secret = serde_json::from_value(replace.body.clone()).unwrap();
    assert_eq!(written.metadata.resource_version.as_deref(), Some("41"), "the write is guarded");
    let annotations = written.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[REVISION_ANNOTATION], "2");
    assert_eq!(annotations[secret::HANDLED_ROTATE_NOW_ANNOTATION], "r1");
    let data = secret::data_of(Some(&written));
    assert_eq!(data["previous.prvkey"], old.fields["prvkey"], "the old key is kept");
    assert_ne!(data["prvkey"], old.fields["prvkey"], "a new key is current");
    let new_id = keys::stored_key_id(KeyType::Secp256k1, &data, "").unwrap();
    let status = &patch.body["status"];
    assert_eq!(status["revision"], 2);
    assert_eq!((&status["currentKeyId"], &status["previousKeyId"]), (&new_id.into(), &old.id.into()));
    assert_eq!(status["handledRotateNow"], "r1");
}

/// Someone changed the Secret between the read and the write: the 409 fails the reconcile
/// (it retries from fresh state); nothing claims a rotation: no Event, no status write.
#[tokio::test]
async fn a_conflict_on_the_secret_write_fails_the_reconcile_and_announces_nothing() {
    let Requested { mut api, run, .. } = requested_until_the_secret_write(Reply::Error(409, "Conflict")).await;
    let result = api.finish(run).await;
    api.done().await;
    match result {
        Err(Error::Kube(kube::Error::Api(s))) => assert!(s.is_conflict(), "{s:?}"),
        other => panic!("a conflict must fail the reconcile, got {other:?}"),
    }
}

/// The key vanished from the Secret behind the operator's back: no fresh key is written;
/// the KeyRotation is Stalled (KeyMissing) with a Warning Event.
#[tokio::test]
async fn a_vanished_key_stalls_instead_of_being_replaced() {
    let (ctx, mut api) = testing::context();
    let kr =
        rotated_a_day_ago(KeyRotationStatus { revision: 2, current_key_id: Some("abc".into()), ..Default::default() });
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::not_found()).await;
    // Were a Secret written here, the next request would be a POST to the Secrets.
    let event = api.expect(Method::POST, EVENTS, Reply::Echo).await;
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(&kr, &patch)));
    let action = api.finish(run).await.expect("a stall is not an error");
    api.done().await;

    assert_eq!((&event.body["type"], &event.body["reason"]), (&"Warning".into(), &"KeyMissing".into()));
    let status = &patch.body["status"];
    assert_eq!((&status["phase"], &status["revision"]), (&"Failed".into(), &2.into()));
    let stalled = condition(status, "Stalled");
    assert_eq!((&stalled["status"], &stalled["reason"]), (&"True".into(), &"KeyMissing".into()));
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(30)));
}

/// After a rotation the next reconcile of the same state (its status, its Secret) writes
/// nothing: two reads, no Secret write, no status patch, no Event.
#[tokio::test]
async fn a_reconcile_of_the_state_it_left_writes_nothing() {
    let (ctx, mut api) = testing::context();
    let kr = rotation(None);
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    let (create, _, patch, _) = first_rotation(&kr, &mut api, run).await;
    api.done().await;

    let (ctx, mut api) = testing::context();
    let kr = status_after(&kr, &patch);
    let mut stored: Secret = serde_json::from_value(create.body).unwrap();
    stored.metadata.resource_version = Some("42".into());
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::ok(&stored)).await;
    let action = api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;
    assert_ne!(action, Action::await_change(), "it comes back for the next rotation");
}

/// `secretDeletionPolicy: Delete` on a Secret without an owner: one replace adds the
/// KeyRotation as owner and leaves the key as it is.
#[tokio::test]
async fn the_delete_policy_owns_the_secret_without_touching_its_key() {
    let (ctx, mut api) = testing::context();
    let old = fixed_key(7);
    let mut kr = rotated_a_day_ago(KeyRotationStatus {
        revision: 1,
        current_key_id: Some(old.id.clone()),
        ..Default::default()
    });
    kr.spec.secret_deletion_policy = SecretDeletionPolicy::Delete;
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::ok(&key_secret(&old, 1))).await;
    let replace = api.expect(Method::PUT, SECRET, Reply::Echo).await;
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(&kr, &patch)));
    api.finish(run).await.expect("the reconcile succeeds");
    api.done().await;

    assert_eq!(replace.param("fieldManager").as_deref(), Some(MANAGER));
    let written: Secret = serde_json::from_value(replace.body).unwrap();
    let owners = written.metadata.owner_references.unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!((owners[0].kind.as_str(), owners[0].uid.as_str()), ("KeyRotation", "kr-uid"));
    assert_eq!(written.data, key_secret(&old, 1).data, "the key is not rotated");
    assert_eq!(patch.body["status"]["revision"], 1);
}

/// The API server fails the read of the Secret: the reconcile fails before any write.
#[tokio::test]
async fn a_failed_read_of_the_secret_fails_the_reconcile_before_any_write() {
    let (ctx, mut api) = testing::context();
    let kr = rotation(None);
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::Error(500, "InternalError")).await;
    let result = api.finish(run).await;
    api.done().await;
    assert!(matches!(result, Err(Error::Kube(kube::Error::Api(ref s))) if s.code == 500), "{result:?}");
}

/// A KeyRotation deleted since the watch saw it: nothing is read or written after the get.
#[tokio::test]
async fn a_deleted_rotation_is_left_alone() {
    let (ctx, mut api) = testing::context();
    let kr = rotation(None);
    let run = tokio::spawn(reconcile(Arc::new(kr), ctx));
    api.expect(Method::GET, ROTATION, Reply::not_found()).await;
    assert_eq!(api.finish(run).await.unwrap(), Action::await_change());
    api.done().await;
}

/// A schedule that fires every minute, admitted before the schema's hourly rule existed, on a
/// rotation that holds a key: no key is written (the storm it would start), the KeyRotation
/// is Stalled with InvalidSpec naming the schedule, and it waits for a change of its spec.
#[tokio::test]
async fn a_schedule_firing_every_minute_stalls_instead_of_rotating() {
    let (ctx, mut api) = testing::context();
    let old = fixed_key(7);
    let mut kr = rotation(Some(KeyRotationStatus {
        revision: 1,
        current_key_id: Some(old.id.clone()),
        last_rotation_time: Some(Utc::now() - TimeDelta::hours(2)),
        ..Default::default()
    }));
    kr.spec.schedule = Some("* * * * *".into());
    let run = tokio::spawn(reconcile(Arc::new(kr.clone()), ctx));
    api.expect(Method::GET, ROTATION, Reply::ok(&kr)).await;
    api.expect(Method::GET, SECRET, Reply::ok(&key_secret(&old, 1))).await;
    // Were a key written here, the next request would be a PUT of the Secret.
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(&kr, &patch)));
    let action = api.finish(run).await.expect("a stall is not an error");
    api.done().await;

    let status = &patch.body["status"];
    assert_eq!((&status["phase"], &status["revision"]), (&"Failed".into(), &1.into()));
    let stalled = condition(status, "Stalled");
    assert_eq!((&stalled["status"], &stalled["reason"]), (&"True".into(), &"InvalidSpec".into()));
    assert!(stalled["message"].as_str().unwrap().contains("\"* * * * *\" fires more than once an hour"), "{stalled}");
    assert_eq!(action, Action::await_change());
}

/// The API server refuses the key Secret's write (a quota, an immutable Secret, a policy):
/// nothing is rotated or announced, and status says why (Stalled, SecretWriteRefused) instead
/// of keeping Ready=True from the last rotation while the reconcile fails.
#[tokio::test]
async fn a_refused_secret_write_stalls_and_says_why() {
    let Requested { old, kr, mut api, run, .. } =
        requested_until_the_secret_write(Reply::Error(403, "Forbidden")).await;
    // Were the rotation announced, the next request would be a POST of a KeyRotated Event.
    let (patch, pending) = api.receive(Method::PATCH, STATUS).await;
    pending.reply(Reply::ok(&status_after(&kr, &patch)));
    let action = api.finish(run).await.expect("a refusal is reported, not an error");
    api.done().await;

    let status = &patch.body["status"];
    assert_eq!((&status["phase"], &status["revision"]), (&"Failed".into(), &1.into()));
    assert_eq!(status["currentKeyId"], old.id.as_str(), "nothing rotated");
    let stalled = condition(status, "Stalled");
    assert_eq!((&stalled["status"], &stalled["reason"]), (&"True".into(), &"SecretWriteRefused".into()));
    let message = stalled["message"].as_str().unwrap();
    assert!(message.contains("\"bee-secret\"") && message.contains("mocked Forbidden"), "{message}");
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(30)));
}
