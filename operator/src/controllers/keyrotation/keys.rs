//! Key generation and the Secret layout. The Secret holds the current key and up to
//! `keepPrevious` earlier ones:
//! - secp256k1: `prvkey` (64 hex chars) and `id` (the ColonyOS ID);
//! - ed25519: `prvkey` (hex seed), `pubkey` (hex) and `id` (SHA-256 fingerprint of the public key);
//! - random: `key` (raw bytes) and `id` (SHA-256 fingerprint).
//!
//! Earlier keys move to `previous.<field>`, then `previous-2.<field>`, ... Key material is
//! never logged; only `id` values appear in status and Events.
use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::api::KeyType;
use crate::colonyos::crypto::id_from_secret;

/// One generated key: its Secret fields and its public identifier.
#[derive(Clone, PartialEq, Eq)]
pub struct GeneratedKey {
    pub fields: BTreeMap<String, Vec<u8>>,
    pub id: String,
}

impl std::fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedKey").field("id", &self.id).field("fields", &self.fields.keys()).finish()
    }
}

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..16])
}

/// Generates a key of `key_type` from the bytes `random` provides (an input, so tests are
/// deterministic).
pub fn generate(key_type: KeyType, length: usize, random: &mut dyn FnMut(&mut [u8])) -> GeneratedKey {
    match key_type {
        KeyType::Secp256k1 => loop {
            let mut b = [0u8; 32];
            random(&mut b);
            // Scalars outside [1, n) are rejected; draw again (probability ~2^-128).
            if let Ok(sk) = k256::SecretKey::from_slice(&b) {
                let id = id_from_secret(&sk);
                let fields = BTreeMap::from([
                    ("prvkey".to_string(), hex::encode(b).into_bytes()),
                    ("id".to_string(), id.clone().into_bytes()),
                ]);
                return GeneratedKey { fields, id };
            }
        },
        KeyType::Ed25519 => {
            let mut seed = [0u8; 32];
            random(&mut seed);
            let pk = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
            let id = fingerprint(&pk);
            let fields = BTreeMap::from([
                ("prvkey".to_string(), hex::encode(seed).into_bytes()),
                ("pubkey".to_string(), hex::encode(pk).into_bytes()),
                ("id".to_string(), id.clone().into_bytes()),
            ]);
            GeneratedKey { fields, id }
        }
        KeyType::Random => {
            let mut key = vec![0u8; length.max(1)];
            random(&mut key);
            let id = fingerprint(&key);
            let fields = BTreeMap::from([("key".to_string(), key), ("id".to_string(), id.clone().into_bytes())]);
            GeneratedKey { fields, id }
        }
    }
}

/// Prefix of a key staged in the Secret while it is registered with the ColonyOS server.
pub const PENDING_PREFIX: &str = "pending.";

/// The key staged by an interrupted rotation, if any.
pub fn pending_key(data: &BTreeMap<String, Vec<u8>>) -> Option<GeneratedKey> {
    let fields: BTreeMap<String, Vec<u8>> =
        data.iter().filter_map(|(k, v)| k.strip_prefix(PENDING_PREFIX).map(|f| (f.to_string(), v.clone()))).collect();
    let id = String::from_utf8(fields.get("id")?.clone()).ok()?;
    Some(GeneratedKey { fields, id })
}

/// The Secret data without a staged key.
pub fn without_pending(data: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    data.iter().filter(|(k, _)| !k.starts_with(PENDING_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The ID of the key stored under `prefix` (`""` for the current key, [`PENDING_PREFIX`] for a
/// staged one), derived from the key material itself so that a key swapped under an
/// unchanged `id` field is still noticed. None when there is no key; a key that cannot be
/// decoded gets an ID that matches nothing the operator generated.
pub fn stored_key_id(key_type: KeyType, data: &BTreeMap<String, Vec<u8>>, prefix: &str) -> Option<String> {
    let field = |f: &str| data.get(&format!("{prefix}{f}"));
    let undecodable = || "undecodable".to_string();
    match key_type {
        KeyType::Secp256k1 => {
            let prv = field("prvkey")?;
            Some(
                crate::colonyos::crypto::id_from_private_hex(&String::from_utf8_lossy(prv))
                    .unwrap_or_else(|_| undecodable()),
            )
        }
        KeyType::Ed25519 => {
            let seed = field("prvkey")?;
            let id = hex::decode(String::from_utf8_lossy(seed).trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .map(|seed| fingerprint(&SigningKey::from_bytes(&seed).verifying_key().to_bytes()));
            Some(id.unwrap_or_else(undecodable))
        }
        KeyType::Random => field("key").map(|k| fingerprint(k)),
    }
}

pub fn os_random(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source");
}

fn prefix(generation: usize) -> String {
    if generation == 1 { "previous.".to_string() } else { format!("previous-{generation}.") }
}

/// The Secret data after a rotation: `new` becomes current, the current key moves to
/// `previous.*`, older ones shift down, anything past `keep_previous` is dropped. Keys that
/// are not part of the layout (added by people) are kept as they are.
pub fn rotate_data(
    existing: &BTreeMap<String, Vec<u8>>,
    new: &GeneratedKey,
    keep_previous: usize,
) -> BTreeMap<String, Vec<u8>> {
    let layout_fields = ["prvkey", "pubkey", "id", "key"];
    let generation_of = |k: &str| -> Option<(usize, String)> {
        if layout_fields.contains(&k) {
            return Some((0, k.to_string()));
        }
        if let Some(f) = k.strip_prefix("previous.") {
            return layout_fields.contains(&f).then(|| (1, f.to_string()));
        }
        let rest = k.strip_prefix("previous-")?;
        let (n, f) = rest.split_once('.')?;
        let n: usize = n.parse().ok()?;
        (n >= 2 && layout_fields.contains(&f)).then(|| (n, f.to_string()))
    };
    let mut out = BTreeMap::new();
    for (k, v) in existing {
        match generation_of(k) {
            Some((g, field)) if g < keep_previous => {
                out.insert(format!("{}{field}", prefix(g + 1)), v.clone());
            }
            Some(_) => {}
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    for (k, v) in &new.fields {
        out.insert(k.clone(), v.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |b: &mut [u8]| {
            n = n.wrapping_add(1);
            b.fill(n);
        }
    }

    #[test]
    fn secp256k1_key_has_colonyos_id() {
        let k = generate(KeyType::Secp256k1, 0, &mut counter());
        let prv = String::from_utf8(k.fields["prvkey"].clone()).unwrap();
        assert_eq!(prv.len(), 64);
        assert_eq!(crate::colonyos::crypto::id_from_private_hex(&prv).unwrap(), k.id);
        assert_eq!(k.fields["id"], k.id.as_bytes());
    }

    #[test]
    fn invalid_scalars_are_redrawn() {
        let mut calls = 0;
        let mut rng = |b: &mut [u8]| {
            calls += 1;
            b.fill(if calls == 1 { 0 } else { 7 });
        };
        let k = generate(KeyType::Secp256k1, 0, &mut rng);
        assert_eq!(String::from_utf8(k.fields["prvkey"].clone()).unwrap(), "07".repeat(32));
    }

    #[test]
    fn ed25519_and_random_keys() {
        let e = generate(KeyType::Ed25519, 0, &mut counter());
        assert_eq!(e.fields["pubkey"].len(), 64);
        let r = generate(KeyType::Random, 48, &mut counter());
        assert_eq!(r.fields["key"].len(), 48);
        assert_ne!(e.id, r.id);
        assert!(!format!("{r:?}").contains("0101"), "Debug shows no key material");
    }

    #[test]
    fn staged_keys_are_found_and_stripped() {
        let k = generate(KeyType::Secp256k1, 0, &mut counter());
        let mut data = BTreeMap::from([("prvkey".to_string(), b"old".to_vec())]);
        assert!(pending_key(&data).is_none());
        for (f, v) in &k.fields {
            data.insert(format!("{PENDING_PREFIX}{f}"), v.clone());
        }
        assert_eq!(pending_key(&data), Some(k));
        assert_eq!(without_pending(&data).keys().collect::<Vec<_>>(), ["prvkey"]);
    }

    #[test]
    fn stored_key_ids_come_from_the_key_material() {
        for kt in [KeyType::Secp256k1, KeyType::Ed25519, KeyType::Random] {
            let k = generate(kt, 16, &mut counter());
            let mut data = k.fields.clone();
            assert_eq!(stored_key_id(kt, &data, "").as_deref(), Some(k.id.as_str()), "{kt:?}");
            assert_eq!(stored_key_id(kt, &data, PENDING_PREFIX), None, "no staged key");
            for (f, v) in &k.fields {
                data.insert(format!("{PENDING_PREFIX}{f}"), v.clone());
            }
            assert_eq!(stored_key_id(kt, &data, PENDING_PREFIX).as_deref(), Some(k.id.as_str()));
            // A key swapped under an unchanged `id` field is a different key.
            let other = generate(kt, 16, &mut |b: &mut [u8]| b.fill(0x42));
            let mut swapped = other.fields.clone();
            swapped.insert("id".into(), k.id.clone().into_bytes());
            assert_eq!(stored_key_id(kt, &swapped, "").as_deref(), Some(other.id.as_str()), "{kt:?}");
        }
        let junk = BTreeMap::from([("prvkey".to_string(), b"not hex".to_vec())]);
        assert_eq!(stored_key_id(KeyType::Secp256k1, &junk, "").as_deref(), Some("undecodable"));
        assert_eq!(stored_key_id(KeyType::Ed25519, &junk, "").as_deref(), Some("undecodable"));
        assert_eq!(stored_key_id(KeyType::Random, &junk, ""), None, "a random key lives in `key`");
    }

    #[test]
    fn rotation_shifts_previous_keys_and_keeps_foreign_fields() {
        let mut rng = counter();
        let k1 = generate(KeyType::Random, 4, &mut rng);
        let k2 = generate(KeyType::Random, 4, &mut rng);
        let k3 = generate(KeyType::Random, 4, &mut rng);
        let mut data = BTreeMap::from([("note".to_string(), b"keep me".to_vec())]);
        data = rotate_data(&data, &k1, 2);
        data = rotate_data(&data, &k2, 2);
        assert_eq!(data["key"], k2.fields["key"]);
        assert_eq!(data["previous.key"], k1.fields["key"]);
        data = rotate_data(&data, &k3, 2);
        assert_eq!(data["previous.key"], k2.fields["key"]);
        assert_eq!(data["previous-2.key"], k1.fields["key"]);
        data = rotate_data(&data, &k1, 1);
        assert!(!data.contains_key("previous-2.key"), "keepPrevious bounds the history");
        assert_eq!(data["note"], b"keep me");
        let none = rotate_data(&data, &k2, 0);
        assert!(none.keys().all(|k| !k.starts_with("previous")));
    }
}
