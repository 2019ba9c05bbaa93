//! The ColonyOS RPC wire format (colonyos/colonies v1.9.x): every call is `POST /api` with
//! `{"payloadtype", "payload", "signature"}`, where `payload` is the standard base64 of the
//! message JSON and `signature` the lowercase hex of the 65-byte `r || s || v` secp256k1
//! signature (low-s) over SHA3-256 of the base64 text. Replies are
//! `{"payloadtype", "payload", "error"}`.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use sha3::{Digest, Sha3_256};

use super::crypto::{KeyError, id_from_secret};
use crate::runtime::http;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("ColonyOS server unreachable ({0})")]
    Transport(&'static str),
    #[error("ColonyOS server answered HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    #[error("ColonyOS server sent an empty, oversized or undecodable reply")]
    BadReply,
    #[error("not sent: this replica is not the leader")]
    NotLeader,
}

/// A private key able to sign ColonyOS messages. Debug shows only its ID.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
    pub id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("id", &self.id).finish()
    }
}

impl Identity {
    pub fn from_private_hex(hex_key: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| KeyError::InvalidPrivateKey)?;
        let secret = k256::SecretKey::from_slice(&bytes).map_err(|_| KeyError::InvalidPrivateKey)?;
        Ok(Self { id: id_from_secret(&secret), key: SigningKey::from(secret) })
    }

    /// The 130-hex-character signature of `payload_b64`.
    pub fn sign(&self, payload_b64: &str) -> String {
        let digest = Sha3_256::digest(payload_b64.as_bytes());
        let (sig, recid) = self.key.sign_prehash_recoverable(&digest).expect("signing a 32-byte digest");
        // The server rejects high-s signatures; normalising flips the recovery id.
        let (sig, recid) = match sig.normalize_s() {
            Some(low) => (low, RecoveryId::new(!recid.is_y_odd(), recid.is_x_reduced())),
            None => (sig, recid),
        };
        let mut out = sig.to_bytes().to_vec();
        out.push(recid.to_byte());
        hex::encode(out)
    }
}

/// The ID of the key that signed `payload_b64` (what the server does to authenticate).
pub fn signer_id(payload_b64: &str, signature_hex: &str) -> Option<String> {
    let bytes = hex::decode(signature_hex).ok()?;
    if bytes.len() != 65 {
        return None;
    }
    let sig = Signature::from_slice(&bytes[..64]).ok()?;
    if sig.normalize_s().is_some() {
        return None;
    }
    let recid = RecoveryId::from_byte(bytes[64])?;
    let digest = Sha3_256::digest(payload_b64.as_bytes());
    let vk = VerifyingKey::recover_from_prehash(&digest, &sig, recid).ok()?;
    let public_hex = hex::encode(vk.to_encoded_point(false).as_bytes());
    Some(hex::encode(Sha3_256::digest(public_hex.as_bytes())))
}

/// The request envelope for `message` (which must carry its `msgtype`).
pub fn envelope(message: &Value, signer: &Identity) -> Value {
    let msgtype = message["msgtype"].as_str().unwrap_or_default().to_string();
    let payload = STANDARD.encode(serde_json::to_vec(message).expect("JSON"));
    json!({ "payloadtype": msgtype, "payload": payload, "signature": signer.sign(&payload) })
}

/// Which identity a key belongs to, and the change-ID message that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    Executor,
    User,
    Colony,
    Server,
}

pub fn change_id_message(kind: IdentityKind, colony: &str, new_id: &str) -> Value {
    match kind {
        IdentityKind::Executor => {
            json!({ "msgtype": "changeexecutoridmsg", "colonyname": colony, "executorid": new_id })
        }
        IdentityKind::User => json!({ "msgtype": "changeuseridmsg", "colonyname": colony, "userid": new_id }),
        IdentityKind::Colony => json!({ "msgtype": "changecolonyidmsg", "colonyname": colony, "colonyid": new_id }),
        IdentityKind::Server => json!({ "msgtype": "changeserveridmsg", "serverid": new_id }),
    }
}

/// A read the identity is allowed to make, used to find out which key the server accepts.
/// Chosen from the v1.9.12 handlers' authorization (pkg/server/handlers): `getexecutorsmsg`
/// and `getusersmsg` need colony membership without approval (the very check of
/// `changeexecutoridmsg`/`changeuseridmsg`; the identity itself is in the list, so the reply
/// is never empty), `getblueprintdefinitionsmsg` admits the colony owner (a colony key is no
/// member, so `getcolonystatsmsg` answers it with an empty body), `getstatisticsmsg` the
/// server owner. Each refuses any other key with 403.
pub fn probe_message(kind: IdentityKind, colony: &str) -> Value {
    match kind {
        IdentityKind::Executor => json!({ "msgtype": "getexecutorsmsg", "colonyname": colony }),
        IdentityKind::User => json!({ "msgtype": "getusersmsg", "colonyname": colony }),
        IdentityKind::Colony => json!({ "msgtype": "getblueprintdefinitionsmsg", "colonyname": colony }),
        IdentityKind::Server => json!({ "msgtype": "getstatisticsmsg" }),
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// `http` should come from `runtime::http` (purpose Rpc: no redirects, 10 s, no proxy).
    pub fn new(http: reqwest::Client, endpoint: &str) -> Self {
        Self { http, base: endpoint.trim_end_matches('/').to_string() }
    }

    /// The RPC client of a server, trusting `ca_pem` (its private CA) if given.
    pub fn for_endpoint(endpoint: &str, ca_pem: Option<&[u8]>) -> Result<Self, RpcError> {
        let http = http::client(http::Purpose::Rpc, ca_pem).map_err(|_| RpcError::Transport("invalid CA bundle"))?;
        Ok(Self::new(http, endpoint))
    }

    /// Sends `message` signed by `signer`; returns the decoded reply payload.
    pub async fn call(&self, message: &Value, signer: &Identity) -> Result<Value, RpcError> {
        http::allowed().map_err(|_| RpcError::NotLeader)?;
        let body = envelope(message, signer);
        let resp = self
            .http
            .post(format!("{}/api", self.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Transport(if e.is_timeout() { "timeout" } else { "connection failed" }))?;
        let status = resp.status().as_u16();
        if resp.status().is_redirection() {
            // Never followed: the signed message is not re-sent to another place.
            return Err(RpcError::Rejected { status, message: "redirect refused".into() });
        }
        let text = http::read_capped(resp, http::RPC_BODY_CAP).await.map_err(|_| RpcError::BadReply)?;
        let reply: Value = serde_json::from_slice(&text).map_err(|_| RpcError::BadReply)?;
        let payload = reply["payload"]
            .as_str()
            .and_then(|p| STANDARD.decode(p).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if reply["error"].as_bool() == Some(true) || status >= 400 {
            let message =
                payload.as_ref().and_then(|p| p["message"].as_str()).unwrap_or("error").chars().take(200).collect();
            return Err(RpcError::Rejected { status, message });
        }
        Ok(payload.unwrap_or(Value::Null))
    }

    /// A signed read that must return data: a caller without rights gets an empty body
    /// rather than an error, so empty counts as refused.
    pub async fn probe(&self, message: &Value, signer: &Identity) -> Result<Value, RpcError> {
        match self.call(message, signer).await? {
            v if v.is_null() || v == json!({}) => Err(RpcError::BadReply),
            v => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: u8) -> Identity {
        Identity::from_private_hex(&format!("{:02x}", n).repeat(32)).unwrap()
    }

    #[test]
    fn signatures_recover_to_the_signers_id_and_are_low_s() {
        for n in 1..40 {
            let id = identity(n);
            let payload = STANDARD.encode(format!("{{\"msgtype\":\"getcolonystatsmsg\",\"colonyname\":\"c{n}\"}}"));
            let sig = id.sign(&payload);
            assert_eq!(sig.len(), 130);
            assert_eq!(signer_id(&payload, &sig).as_deref(), Some(id.id.as_str()), "key {n}");
            assert_ne!(
                signer_id(&format!("{payload}x"), &sig).as_deref(),
                Some(id.id.as_str()),
                "a changed payload does not verify"
            );
        }
    }

    #[test]
    fn envelope_carries_payload_type_and_base64_json() {
        let id = identity(7);
        let msg = change_id_message(IdentityKind::Executor, "zyeute", &"ab".repeat(32));
        let env = envelope(&msg, &id);
        assert_eq!(env["payloadtype"], "changeexecutoridmsg");
        let decoded: Value =
            serde_json::from_slice(&STANDARD.decode(env["payload"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(decoded, msg);
        assert_eq!(
            signer_id(env["payload"].as_str().unwrap(), env["signature"].as_str().unwrap()),
            Some(id.id.clone())
        );
    }

    #[test]
    fn change_messages_match_the_server() {
        let new = "cd".repeat(32);
        assert_eq!(change_id_message(IdentityKind::User, "z", &new)["userid"], new);
        assert_eq!(change_id_message(IdentityKind::Colony, "z", &new)["msgtype"], "changecolonyidmsg");
        assert_eq!(
            change_id_message(IdentityKind::Server, "z", &new),
            json!({"msgtype": "changeserveridmsg", "serverid": new})
        );
        assert_eq!(probe_message(IdentityKind::Server, "z")["msgtype"], "getstatisticsmsg");
    }

    #[test]
    fn each_identity_probes_with_a_read_it_may_make() {
        // Who may call what, as the v1.9.12 handlers check it.
        let allowed = |kind: IdentityKind, msgtype: &str| match msgtype {
            // RequireMembership(approved=false): executors and users of the colony.
            "getexecutorsmsg" | "getusersmsg" => matches!(kind, IdentityKind::Executor | IdentityKind::User),
            // RequireMembership(approved=true), else RequireColonyOwner.
            "getblueprintdefinitionsmsg" => kind != IdentityKind::Server,
            // RequireMembership(approved=true) only (an unapproved executor or the colony
            // owner gets an empty body).
            "getcolonystatsmsg" => kind == IdentityKind::User,
            "getstatisticsmsg" => kind == IdentityKind::Server,
            _ => false,
        };
        for kind in [IdentityKind::Executor, IdentityKind::User, IdentityKind::Colony, IdentityKind::Server] {
            let msg = probe_message(kind, "zyeute");
            let msgtype = msg["msgtype"].as_str().unwrap();
            assert!(allowed(kind, msgtype), "{kind:?} may not call {msgtype}");
            if kind != IdentityKind::Server {
                assert_eq!(msg["colonyname"], "zyeute", "{kind:?}");
            }
        }
        assert_ne!(
            probe_message(IdentityKind::Colony, "z")["msgtype"],
            "getcolonystatsmsg",
            "the colony owner is no member"
        );
    }

    #[test]
    fn identity_debug_hides_the_key() {
        let id = identity(9);
        assert!(!format!("{id:?}").contains(&"09".repeat(32)));
    }
}
