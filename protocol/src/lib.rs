//! The facegate sync protocol: message types, MQTT topics, the CBOR wire
//! format with size limits and Ed25519 signatures, and the sync state
//! machines. Pure: no sockets, no async runtime, no clock of its own.
#![forbid(unsafe_code)]

pub mod codec;
pub mod ids;
pub mod messages;
pub mod signing;
pub mod sync;
pub mod topics;

pub use codec::{
    Kind, Message, PROTOCOL_VERSION, ProtocolError, SealKey, Signer, decode_device_verified, decode_unverified,
    decode_verified, decode_verified_with_key, encode_device_signed, encode_signed, seal_unchecked,
};
pub use ids::{DeviceId, IdentityId, InvalidId, ShardId};
pub use messages::*;
pub use signing::{DevicePublicKey, DeviceSigningKey, KeyError, KeyId, PublicKey, SigningKey, TrustedKeys};
