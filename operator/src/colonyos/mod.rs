//! ColonyOS identities: secp256k1 keys and the IDs the server derives from them.
pub mod crypto;
pub mod rpc;
