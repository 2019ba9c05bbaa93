//! Registration of a new key with the ColonyOS server before it becomes current. The server
//! replaces the identity's ID in place and the old key stops working at once, so the new key
//! is first staged in the Secret (`pending.*`): after a crash, or a change-ID reply lost on
//! the way back, the next attempt asks the server (a signed read the identity may make) which
//! of the two keys it accepts.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::decide::SecretRecord;
use super::{keys, secret};
use crate::api::{ColonyOsRegistration, ColonyServer, Identity, KeyRotation};
use crate::colonyos::rpc;
use crate::runtime::Context;

fn kind(identity: Identity) -> rpc::IdentityKind {
    match identity {
        Identity::Executor => rpc::IdentityKind::Executor,
        Identity::User => rpc::IdentityKind::User,
        Identity::Colony => rpc::IdentityKind::Colony,
        Identity::Server => rpc::IdentityKind::Server,
    }
}

/// Registers `key` (staging it first unless it is staged already). `record` is what the
/// Secret records now (staging changes no revision). Returns the Secret as written.
#[allow(clippy::too_many_arguments)]
pub async fn register(
    ctx: &Context,
    kr: &KeyRotation,
    reg: &ColonyOsRegistration,
    secrets: &Api<Secret>,
    current: Secret,
    data: &BTreeMap<String, Vec<u8>>,
    key: &keys::GeneratedKey,
    old_private: &[u8],
    record: &SecretRecord,
) -> Result<Secret, String> {
    let ns = kr.namespace().unwrap_or_default();
    let server = ctx
        .api::<ColonyServer>(&ns)
        .get_opt(&reg.colony_server_ref.name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("ColonyServer {:?} not found", reg.colony_server_ref.name))?;
    let ca = match &server.spec.tls.ca_ref {
        Some(r) => Some(crate::runtime::http::ca_bundle(&ctx.client, &ns, r).await.map_err(|e| e.to_string())?),
        None => None,
    };
    let client = rpc::Client::for_endpoint(&server.spec.effective_endpoint(&server.name_any(), &ns), ca.as_deref())
        .map_err(|e| e.to_string())?;
    let old = rpc::Identity::from_private_hex(&String::from_utf8_lossy(old_private))
        .map_err(|e| format!("current key: {e}"))?;
    let new_hex = key.fields.get("prvkey").map(|v| String::from_utf8_lossy(v).to_string()).unwrap_or_default();
    let new = rpc::Identity::from_private_hex(&new_hex).map_err(|e| format!("new key: {e}"))?;
    let kind = kind(reg.identity);
    let colony = reg.colony_name.clone().unwrap_or_default();
    let probe = rpc::probe_message(kind, &colony);

    let mut written = current;
    if keys::pending_key(data).is_none() {
        let mut staged = data.clone();
        for (k, v) in &key.fields {
            staged.insert(format!("{}{k}", keys::PENDING_PREFIX), v.clone());
        }
        written = secret::write(secrets, kr, Some(written), staged, record).await.map_err(|e| e.to_string())?;
    } else if client.probe(&probe, &new).await.is_ok() {
        // The server switched to the staged key before the interruption.
        return Ok(written);
    }
    match client.call(&rpc::change_id_message(kind, &colony, &new.id), &old).await {
        Ok(_) => Ok(written),
        // The change may have happened with its reply lost: ask with the new key.
        Err(e) => match client.probe(&probe, &new).await {
            Ok(_) => Ok(written),
            Err(_) => Err(format!("registering the new key with ColonyServer {:?} failed: {e}", server.name_any())),
        },
    }
}
