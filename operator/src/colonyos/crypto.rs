//! Keys as the ColonyOS server sees them: a private key is 64 lowercase hex characters (32
//! bytes, big-endian); its ID is the lowercase hex SHA3-256 of the ASCII lowercase hex of the
//! 65-byte uncompressed public key (0x04 || X || Y).
use k256::SecretKey;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use sha3::{Digest, Sha3_256};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Deliberately does not echo the input: it is a private key.
    #[error("not a secp256k1 private key: expected 64 hex characters encoding a valid scalar")]
    InvalidPrivateKey,
}

/// The ColonyOS ID of a private key given in hex.
pub fn id_from_private_hex(private_hex: &str) -> Result<String, KeyError> {
    let trimmed = private_hex.trim();
    if trimmed.len() != 64 {
        return Err(KeyError::InvalidPrivateKey);
    }
    let bytes = hex::decode(trimmed).map_err(|_| KeyError::InvalidPrivateKey)?;
    let key = SecretKey::from_slice(&bytes).map_err(|_| KeyError::InvalidPrivateKey)?;
    Ok(id_from_secret(&key))
}

pub fn id_from_secret(key: &SecretKey) -> String {
    let point = key.public_key().to_encoded_point(false);
    let public_hex = hex::encode(point.as_bytes());
    hex::encode(Sha3_256::digest(public_hex.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_sha3_of_uncompressed_public_key_hex() {
        // Private key 1: the public key is the generator point G.
        let one = format!("{:064x}", 1);
        let g = "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798\
                 483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8";
        let expected = hex::encode(Sha3_256::digest(g.as_bytes()));
        assert_eq!(id_from_private_hex(&one).unwrap(), expected);
        assert_eq!(expected.len(), 64);
    }

    #[test]
    fn rejects_bad_keys_without_echoing_them() {
        for bad in ["", "abc", &"0".repeat(64), &"g".repeat(64), &"f".repeat(64)] {
            let err = id_from_private_hex(bad).unwrap_err();
            assert!(!err.to_string().contains(bad) || bad.is_empty());
        }
    }
}
