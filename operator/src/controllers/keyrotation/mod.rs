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
pub mod secret;

use std::sync::Arc;

use kube::runtime::watcher;

use crate::api::KeyRotation;
use crate::controllers::{Spawned, primary, spawn_controller};
use crate::operator::Shutdown;
use crate::runtime::Context;

pub use decide::{Due, due, next_rotation};
pub use secret::REVISION_ANNOTATION;

pub const NAME: &str = "keyrotation";
/// On a target Deployment's pod template: when the last rotation rolled it.
pub const ROTATED_AT_ANNOTATION: &str = "colony.zyeute.io/key-rotated-at";

pub fn start(ctx: Arc<Context>, shutdown: Shutdown) -> Spawned {
    let (controller, synced) = primary(ctx.scoped_api::<KeyRotation>(), watcher::Config::default(), NAME);
    spawn_controller(NAME, controller, synced, reconcile::reconcile, ctx, shutdown)
}
