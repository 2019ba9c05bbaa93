//! A stand-in for the ColonyOS server's RPC endpoint (`POST /api`) with the semantics of
//! colonyos/colonies v1.9.12 that key rotation depends on: signatures are checked by
//! recovering the signer's ID, each change-ID message is authorized like the real handler
//! (pkg/server/handlers/security) and replaces the ID in place (the old key stops working at
//! once), and the reads the operator may probe with are authorized like theirs:
//! - `getexecutorsmsg`, `getusersmsg`: colony membership, approval not required (403 otherwise);
//! - `getblueprintdefinitionsmsg`: an approved member or the colony owner (403 otherwise);
//! - `getcolonystatsmsg`: an approved member; anyone else gets an empty body, no error;
//! - `getstatisticsmsg`: the server owner (403 otherwise).
//!
//! Faults: `refuse_changes` (500 on change-ID), `drop_replies` (apply the change, then close
//! the connection without replying).
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use colony_operator::colonyos::rpc::signer_id;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct State {
    pub colony: String,
    pub colony_id: String,
    pub server_id: String,
    pub executor_id: String,
    pub executor_approved: bool,
    pub user_id: String,
    pub refuse_changes: bool,
    /// The next this many change-ID calls are applied and then left without a reply.
    pub drop_replies: usize,
    /// Every ID a change-ID call installed, in order.
    pub changes: Vec<String>,
    /// Replies dropped so far.
    pub dropped: usize,
}

impl State {
    /// A colony `zyeute` whose identities all have IDs no key signs for; set the ones a test
    /// uses.
    pub fn new() -> Self {
        let nobody = |n: u8| format!("{n:02x}").repeat(32);
        Self {
            colony: "zyeute".into(),
            colony_id: nobody(1),
            server_id: nobody(2),
            executor_id: nobody(3),
            executor_approved: true,
            user_id: nobody(4),
            refuse_changes: false,
            drop_replies: 0,
            changes: Vec::new(),
            dropped: 0,
        }
    }

    fn member(&self, signer: &str, colony: &str, approved: bool) -> bool {
        colony == self.colony
            && ((signer == self.executor_id && (self.executor_approved || !approved)) || signer == self.user_id)
    }
}

pub async fn start(state: State) -> (u16, Arc<Mutex<State>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(state));
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                // None: the change was applied and the reply is lost (connection dropped).
                let Some((status, text)) = handle(&s, &body) else { return };
                let _ = stream
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                            text.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (port, state)
}

fn reply(payloadtype: &str, payload: Value) -> String {
    json!({ "payloadtype": payloadtype, "payload": STANDARD.encode(payload.to_string()), "error": false }).to_string()
}

fn error(status: u16, message: &str) -> String {
    json!({
        "payloadtype": "error",
        "payload": STANDARD.encode(json!({ "status": status, "message": message }).to_string()),
        "error": true
    })
    .to_string()
}

const FORBIDDEN: &str = "403 Forbidden";
const BAD: &str = "400 Bad Request";

fn handle(state: &Mutex<State>, body: &[u8]) -> Option<(&'static str, String)> {
    let Ok(env) = serde_json::from_slice::<Value>(body) else {
        return Some((BAD, error(400, "bad json")));
    };
    let payload = env["payload"].as_str().unwrap_or_default();
    let Some(signer) = signer_id(payload, env["signature"].as_str().unwrap_or_default()) else {
        return Some((FORBIDDEN, error(403, "bad signature")));
    };
    let msg: Value = STANDARD.decode(payload).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    if msg["msgtype"] != env["payloadtype"] {
        return Some((BAD, error(400, "msgtype mismatch")));
    }
    let msgtype = msg["msgtype"].as_str().unwrap_or_default().to_string();
    let colony = msg["colonyname"].as_str().unwrap_or_default().to_string();
    let mut s = state.lock().unwrap();
    let denied = || Some((FORBIDDEN, error(403, "Access denied")));
    let ok = |payload: Value| Some(("200 OK", reply(&msgtype, payload)));
    match msgtype.as_str() {
        "changeexecutoridmsg" | "changeuseridmsg" | "changecolonyidmsg" | "changeserveridmsg" => {
            if s.refuse_changes {
                return Some(("500 Internal Server Error", error(500, "database unavailable")));
            }
            let field = match msgtype.as_str() {
                "changeexecutoridmsg" => "executorid",
                "changeuseridmsg" => "userid",
                "changecolonyidmsg" => "colonyid",
                _ => "serverid",
            };
            let new = msg[field].as_str().unwrap_or_default().to_string();
            let authorized = match field {
                "executorid" => s.member(&signer, &colony, false) && signer == s.executor_id,
                "userid" => s.member(&signer, &colony, false) && signer == s.user_id,
                "colonyid" => colony == s.colony && signer == s.colony_id,
                _ => signer == s.server_id,
            };
            if !authorized {
                return denied();
            }
            if new.len() != 64 {
                return Some((BAD, error(400, "new Id is not 64 characters")));
            }
            match field {
                "executorid" => s.executor_id = new.clone(),
                "userid" => s.user_id = new.clone(),
                "colonyid" => s.colony_id = new.clone(),
                _ => s.server_id = new.clone(),
            }
            s.changes.push(new);
            if s.drop_replies > 0 {
                s.drop_replies -= 1;
                s.dropped += 1;
                return None;
            }
            ok(msg.clone())
        }
        "getexecutorsmsg" if s.member(&signer, &colony, false) => {
            ok(json!([{ "executorid": s.executor_id, "colonyname": s.colony }]))
        }
        "getusersmsg" if s.member(&signer, &colony, false) => {
            ok(json!([{ "userid": s.user_id, "colonyname": s.colony }]))
        }
        "getblueprintdefinitionsmsg"
            if s.member(&signer, &colony, true) || (colony == s.colony && signer == s.colony_id) =>
        {
            ok(json!([]))
        }
        "getexecutorsmsg" | "getusersmsg" | "getblueprintdefinitionsmsg" => denied(),
        "getcolonystatsmsg" if s.member(&signer, &colony, true) => {
            ok(json!({ "waitingprocesses": 0, "successfulprocesses": 1 }))
        }
        // The real handler returns without writing anything when membership fails.
        "getcolonystatsmsg" => Some(("200 OK", String::new())),
        "getstatisticsmsg" if signer == s.server_id => ok(json!({ "colonies": 1 })),
        "getstatisticsmsg" => denied(),
        _ => Some((BAD, error(400, "unsupported"))),
    }
}
