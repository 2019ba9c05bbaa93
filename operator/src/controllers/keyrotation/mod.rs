//! The KeyRotation controller: generates a new key on schedule (or on demand), stores it in
//! the Secret in one atomic update with the previous keys kept, and rolls the targets.
//!
//! Safety rules: the key Secret outlives the KeyRotation unless `secretDeletionPolicy:
//! Delete`; a Secret whose key vanished or changed behind the operator's back stalls the
//! KeyRotation instead of being "fixed" with a fresh key; every rotation is recorded on the
//! Secret in the write that makes it current, so a crash before the status write is adopted,
//! never rotated again; a staged key (`pending.*`) is always finished.
//!
//! Pipeline (`reconcile`): gather (the KeyRotation, its Secret via `secret`) → check and
//! decide (pure, `decide`) → register with ColonyOS (`register`) → write the Secret
//! (`secret`) → roll the targets → status (written only on change).
pub mod decide;
pub mod keys;
mod reconcile;
mod register;
#[cfg(test)]
mod seams;
pub mod secret;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::api::KeyRotation;
use crate::runtime::Context;
use crate::runtime::Shutdown;
use crate::runtime::controller::{CONCURRENT_RECONCILES, Spawned, primary_forgetting, spawn_controller};

pub use decide::{Due, due, next_rotation};
pub use secret::REVISION_ANNOTATION;

pub const NAME: &str = "keyrotation";
/// On a target Deployment's pod template: when the last rotation rolled it.
pub const ROTATED_AT_ANNOTATION: &str = "colony.zyeute.io/key-rotated-at";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let for_hook = ctx.clone();
    let (controller, synced) =
        primary_forgetting(ctx.scoped_api::<KeyRotation>(), ctx.watch_config(), NAME, move |kr| {
            let ns = kr.namespace().unwrap_or_default();
            for_hook.metrics.key_rotation_scheduled(&ns, &kr.name_any(), None);
            for_hook.forget(NAME, &ns, &kr.name_any())
        });
    let rotations = controller.store();
    let waiting = rotations.clone();
    // A key Secret changed or deleted by someone else is looked at at once (metadata only:
    // the key stays out of the watch); the KeyRotations using it come from the cache.
    let controller = controller.watches(
        ctx.scoped_api::<PartialObjectMeta<Secret>>(),
        ctx.watch_config(),
        move |s: PartialObjectMeta<Secret>| {
            let (ns, name) = (s.namespace(), s.name_any());
            rotations
                .state()
                .iter()
                .filter(|kr| kr.namespace() == ns && kr.spec.secret_name == name)
                .map(|kr| ObjectRef::from_obj(kr.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    // A rotation held for its maintenance window runs when the window opens.
    let controller = controller.reconcile_on(ctx.windows.triggers(move |mw| {
        waiting
            .state()
            .iter()
            .filter(|kr| {
                kr.namespace() == mw.namespace()
                    && kr.spec.maintenance_window_ref.as_ref().is_some_and(|r| r.name == mw.name_any())
            })
            .map(|kr| ObjectRef::from_obj(kr.as_ref()))
            .collect()
    }));
    spawn_controller(NAME, CONCURRENT_RECONCILES, controller, synced, reconcile::reconcile, ctx, shutdown)
}
