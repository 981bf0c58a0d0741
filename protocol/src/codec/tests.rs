//! Literal bytes, forgeries and limits of the envelope. Round trips and
//! mutated corpora live in `protocol/tests/`.

use super::*;
use crate::ids::{DeviceId, IdentityId, ShardId};
use crate::messages::{Command, DeviceStatus, IdentityRecord, ShardProgress};
use crate::signing::{DevicePublicKey, DeviceSigningKey, PublicKey};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32]).unwrap()
}

fn device_key() -> DeviceSigningKey {
    DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap()
}

fn trusting(key: &SigningKey) -> TrustedKeys {
    TrustedKeys::new([key.public_key()])
}

fn shard() -> ShardId {
    ShardId::new("lobby").unwrap()
}

fn device() -> DeviceId {
    DeviceId::new("kiosk-1").unwrap()
}

fn hex_of(bytes: &[u8]) -> String {
    hex(bytes)
}

fn unhex(text: &str) -> Vec<u8> {
    let text: String = text.split_whitespace().collect();
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

fn remove_batch(base_seq: u64, seq: u64) -> DeltaBatch {
    DeltaBatch {
        shard: shard(),
        epoch: 9,
        base_seq,
        seq,
        ops: vec![DeltaOp::Remove { identity: IdentityId::new("p-1").unwrap() }],
    }
}

fn resync_request() -> UpMessage {
    UpMessage { device: device(), sent_at: 1_700_000_000_000, body: Up::ResyncRequest { shard: shard(), have_seq: 7 } }
}

/// An envelope with every field under the test's control.
fn raw_envelope(v: u64, kind: &str, body: &[u8], sig: Option<&[u8]>, key: Option<&[u8]>) -> Vec<u8> {
    let envelope = Envelope {
        v,
        kind: kind.to_string(),
        body: body.to_vec(),
        sig: sig.map(<[u8]>::to_vec),
        key: key.map(<[u8]>::to_vec),
    };
    let mut out = Vec::new();
    ciborium::into_writer(&envelope, &mut out).unwrap();
    out
}

fn parts(bytes: &[u8]) -> Envelope {
    ciborium::from_reader(bytes).unwrap()
}

// Envelope map(5): "v" 1, "kind" "up", "body" bytes(77) of
// map(3): "device" "kiosk-1", "sent_at" 1700000000000,
//         "body" map(1): "resync_request" map(2): "shard" "lobby", "have_seq" 7
// then "sig" (ECDSA P-256, ASN.1, randomized) and "key" bytes(8).
const GOLDEN_RESYNC_REQUEST: &str = "
    a5 61 76 01 64 6b 69 6e 64 62 75 70 64 62 6f 64 79 58 4d
    a3 66 64 65 76 69 63 65 67 6b 69 6f 73 6b 2d 31
       67 73 65 6e 74 5f 61 74 1b 00 00 01 8b cf e5 68 00
       64 62 6f 64 79 a1 6e 72 65 73 79 6e 63 5f 72 65 71 75 65 73 74
          a2 65 73 68 61 72 64 65 6c 6f 62 62 79 68 68 61 76 65 5f 73 65 71 07";

#[test]
fn resync_request_has_these_exact_bytes() {
    let key = device_key();
    let bytes = encode_device_signed(&resync_request(), &key).unwrap();
    let golden = unhex(GOLDEN_RESYNC_REQUEST);
    assert_eq!(hex_of(&bytes[..golden.len()]), hex_of(&golden));
    let envelope = parts(&bytes);
    assert_eq!(envelope.key.as_deref(), Some(&key.key_id().0[..]));
    assert_eq!(decode_device_verified::<UpMessage>(&bytes, &key.public_key()).unwrap(), resync_request());
}

// Envelope map(5): "v" 1, "kind" "delta", "body" bytes of
// map(5) (62 bytes): "shard" "lobby", "epoch" 9, "base_seq" 3, "seq" 4,
//                    "ops" [ {"remove": {"identity": "p-1"}} ],
// "sig" bytes(64) (Ed25519 of domain ‖ "delta\0" ‖ body under seed [7; 32]),
// "key" bytes(8) (first 8 bytes of SHA-256 of the public key).
const GOLDEN_SIGNED_DELTA: &str = "
    a5 61 76 01 64 6b 69 6e 64 65 64 65 6c 74 61 64 62 6f 64 79 58 3e
    a5 65 73 68 61 72 64 65 6c 6f 62 62 79 65 65 70 6f 63 68 09
       68 62 61 73 65 5f 73 65 71 03
       63 73 65 71 04 63 6f 70 73 81 a1 66 72 65 6d 6f 76 65 a1
       68 69 64 65 6e 74 69 74 79 63 70 2d 31
    63 73 69 67 58 40 SIG
    63 6b 65 79 48 KEYID";

#[test]
fn signed_delta_has_these_exact_bytes() {
    let key = key(7);
    let bytes = encode_signed(&remove_batch(3, 4), &key).unwrap();
    let envelope = parts(&bytes);
    let expected = GOLDEN_SIGNED_DELTA
        .replace("SIG", &hex_of(envelope.sig.as_deref().unwrap()))
        .replace("KEYID", &hex_of(&key.key_id().0));
    assert_eq!(hex_of(&bytes), hex_of(&unhex(&expected)));
    // The signature and key id are pinned too: Ed25519 is deterministic.
    assert_eq!(hex_of(&key.key_id().0), GOLDEN_KEY_ID);
    assert_eq!(hex_of(envelope.sig.as_deref().unwrap()), GOLDEN_SIGNATURE);
}

const GOLDEN_KEY_ID: &str = "fe812c12f3ab4ce6";
const GOLDEN_SIGNATURE: &str = "93ea52c6cba46951a7f5bac4ec59766a368f7685addf0c22fd94fe9d86e44b0f\
     cca5a5a16c50a5cbca490584020467e2b960d3486458673d771b61418502120a";

#[test]
fn every_kind_refuses_an_envelope_over_its_limit_before_parsing() {
    for kind in Kind::ALL {
        let bytes = vec![0xff; kind.max_bytes() + 1];
        let expected =
            ProtocolError::TooLarge { kind: kind.as_str(), size: kind.max_bytes() + 1, max: kind.max_bytes() };
        let result = match kind {
            Kind::Delta => decode_verified::<DeltaBatch>(&bytes, &TrustedKeys::default()).map(drop),
            Kind::Down => decode_verified::<DownMessage>(&bytes, &TrustedKeys::default()).map(drop),
            Kind::Up => decode_device_verified::<UpMessage>(&bytes, &device_key().public_key()).map(drop),
            Kind::Status => decode_device_verified::<DeviceStatus>(&bytes, &device_key().public_key()).map(drop),
        };
        assert_eq!(result, Err(expected), "{kind:?}");
    }
}

#[test]
fn encoding_refuses_a_message_over_its_limit() {
    let status = DeviceStatus {
        device: device(),
        online: true,
        at: 0,
        shards: (0..250).map(|i| ShardProgress { shard: ShardId::new(format!("{i:0>60}")).unwrap(), seq: 1 }).collect(),
        model_id: None,
        version: "1".into(),
        health: "ok".into(),
        outbox_depth: 0,
        last_command: 0,
        stale: false,
        assignment: 0,
        trusted_key: None,
    };
    assert!(matches!(
        encode_device_signed(&status, &device_key()),
        Err(ProtocolError::TooLarge { kind: "status", max: 16384, .. })
    ));
}

#[test]
fn a_body_just_under_the_limit_passes_and_one_byte_more_does_not() {
    let overhead = seal_unchecked(Kind::Status, &[], None).unwrap().len();
    // A byte string's length prefix grows with its length: probe for the largest body that fits.
    let fits =
        (0..Kind::Status.max_bytes()).rev().find(|&n| seal_unchecked(Kind::Status, &vec![0; n], None).is_ok()).unwrap();
    assert!(fits + overhead + 2 >= Kind::Status.max_bytes(), "{fits} + {overhead}");
    let bytes = seal_unchecked(Kind::Status, &vec![0; fits], None).unwrap();
    assert_eq!(bytes.len(), Kind::Status.max_bytes());
    assert!(matches!(decode_unverified::<DeviceStatus>(&bytes), Err(ProtocolError::Malformed { what: "status", .. })));
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(decode_unverified::<DeviceStatus>(&longer), Err(ProtocolError::TooLarge { .. })));
}

#[test]
fn unknown_versions_are_refused_as_such() {
    let body = {
        let mut out = Vec::new();
        ciborium::into_writer(&resync_request(), &mut out).unwrap();
        out
    };
    for v in [0, 2, 255, u64::from(u16::MAX) + 1, u64::MAX] {
        let bytes = raw_envelope(v, "up", &body, None, None);
        assert_eq!(decode_unverified::<UpMessage>(&bytes), Err(ProtocolError::Version { found: v }));
    }
}

#[test]
fn a_future_envelope_with_new_fields_is_a_version_error_not_garbage() {
    #[derive(Serialize)]
    struct Future<'a> {
        v: u64,
        kind: &'a str,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
        compression: &'a str,
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(&Future { v: 2, kind: "up", payload: b"x", compression: "zstd" }, &mut bytes).unwrap();
    assert_eq!(decode_unverified::<UpMessage>(&bytes), Err(ProtocolError::Version { found: 2 }));
}

#[test]
fn unknown_and_mismatched_kinds_are_refused() {
    let bytes = raw_envelope(1, "snapshot", b"\xa0", None, None);
    assert_eq!(decode_unverified::<UpMessage>(&bytes), Err(ProtocolError::UnknownKind { found: "snapshot".into() }));
    let long = "k".repeat(500);
    let bytes = raw_envelope(1, &long, b"\xa0", None, None);
    assert_eq!(decode_unverified::<UpMessage>(&bytes), Err(ProtocolError::UnknownKind { found: "k".repeat(64) }));

    let status = encode_device_signed(
        &DeviceStatus {
            device: device(),
            online: false,
            at: 1,
            shards: vec![],
            model_id: None,
            version: "0.1.0".into(),
            health: "ok".into(),
            outbox_depth: 0,
            last_command: 0,
            stale: false,
            assignment: 0,
            trusted_key: None,
        },
        &device_key(),
    )
    .unwrap();
    assert_eq!(
        decode_unverified::<UpMessage>(&status),
        Err(ProtocolError::WrongKind { expected: "up", found: "status" })
    );
}

#[test]
fn an_unknown_envelope_field_is_refused() {
    #[derive(Serialize)]
    struct Extra<'a> {
        v: u64,
        kind: &'a str,
        #[serde(with = "serde_bytes")]
        body: &'a [u8],
        extra: u8,
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(&Extra { v: 1, kind: "up", body: b"\xa0", extra: 1 }, &mut bytes).unwrap();
    let err = decode_unverified::<UpMessage>(&bytes).unwrap_err();
    assert!(
        matches!(&err, ProtocolError::Malformed { what: "envelope", message } if message.contains("extra")),
        "{err}"
    );
}

#[test]
fn every_truncation_of_a_valid_message_is_a_typed_error() {
    let key = key(1);
    let keys = trusting(&key);
    let delta = encode_signed(&remove_batch(0, 1), &key).unwrap();
    let device = device_key();
    let up = encode_device_signed(&resync_request(), &device).unwrap();
    for cut in 0..delta.len() {
        assert!(
            matches!(decode_verified::<DeltaBatch>(&delta[..cut], &keys), Err(ProtocolError::Malformed { .. })),
            "{cut}"
        );
    }
    for cut in 0..up.len() {
        assert!(
            matches!(
                decode_device_verified::<UpMessage>(&up[..cut], &device.public_key()),
                Err(ProtocolError::Malformed { .. })
            ),
            "{cut}"
        );
    }
}

#[test]
fn trailing_garbage_after_the_envelope_or_the_body_is_refused() {
    let key = key(1);
    let keys = trusting(&key);
    let mut bytes = encode_signed(&remove_batch(0, 1), &key).unwrap();
    bytes.push(0x00);
    let err = decode_verified::<DeltaBatch>(&bytes, &keys).unwrap_err();
    assert_eq!(err, ProtocolError::Malformed { what: "envelope", message: "1 trailing bytes".into() });

    let mut body = Vec::new();
    ciborium::into_writer(&remove_batch(0, 1), &mut body).unwrap();
    body.extend_from_slice(b"\x01\x02");
    let bytes = seal_unchecked(Kind::Delta, &body, Some(SealKey::Central(&key))).unwrap();
    let err = decode_verified::<DeltaBatch>(&bytes, &keys).unwrap_err();
    assert_eq!(err, ProtocolError::Malformed { what: "delta", message: "2 trailing bytes".into() });
}

#[test]
fn a_flipped_bit_anywhere_in_the_body_breaks_the_signature() {
    let key = key(1);
    let keys = trusting(&key);
    let good = encode_signed(&remove_batch(3, 4), &key).unwrap();
    let envelope = parts(&good);
    for i in 0..envelope.body.len() {
        for bit in [0x01, 0x80] {
            let mut body = envelope.body.clone();
            body[i] ^= bit;
            let forged = raw_envelope(1, "delta", &body, envelope.sig.as_deref(), envelope.key.as_deref());
            assert_eq!(
                decode_verified::<DeltaBatch>(&forged, &keys),
                Err(ProtocolError::BadSignature { kind: "delta" }),
                "byte {i}"
            );
        }
    }
}

#[test]
fn changed_sequence_numbers_break_the_signature() {
    let key = key(1);
    let keys = trusting(&key);
    let good = parts(&encode_signed(&remove_batch(3, 4), &key).unwrap());
    for (base, seq) in [(4, 5), (0, 4), (3, 9)] {
        let mut body = Vec::new();
        ciborium::into_writer(&remove_batch(base, seq), &mut body).unwrap();
        let replayed = raw_envelope(1, "delta", &body, good.sig.as_deref(), good.key.as_deref());
        assert_eq!(decode_verified::<DeltaBatch>(&replayed, &keys), Err(ProtocolError::BadSignature { kind: "delta" }));
    }
}

#[test]
fn a_flipped_bit_in_the_signature_is_refused() {
    let key = key(1);
    let keys = trusting(&key);
    let good = parts(&encode_signed(&remove_batch(3, 4), &key).unwrap());
    let sig = good.sig.clone().unwrap();
    for i in 0..sig.len() {
        let mut bad = sig.clone();
        bad[i] ^= 0x04;
        let forged = raw_envelope(1, "delta", &good.body, Some(&bad), good.key.as_deref());
        assert_eq!(decode_verified::<DeltaBatch>(&forged, &keys), Err(ProtocolError::BadSignature { kind: "delta" }));
    }
    for len in [0, 63, 65, 128] {
        let forged = raw_envelope(1, "delta", &good.body, Some(&vec![0; len]), good.key.as_deref());
        assert_eq!(decode_verified::<DeltaBatch>(&forged, &keys), Err(ProtocolError::BadSignature { kind: "delta" }));
    }
}

#[test]
fn a_message_signed_by_another_key_is_refused() {
    let central = key(1);
    let attacker = key(2);
    let keys = trusting(&central);
    // The attacker names its own key: unknown to the device.
    let forged = encode_signed(&remove_batch(3, 4), &attacker).unwrap();
    assert_eq!(
        decode_verified::<DeltaBatch>(&forged, &keys),
        Err(ProtocolError::UnknownKey { kind: "delta", key: attacker.key_id().to_string() })
    );
    // The attacker names the pinned key but signs with its own.
    let envelope = parts(&forged);
    let forged = raw_envelope(1, "delta", &envelope.body, envelope.sig.as_deref(), Some(&central.key_id().0));
    assert_eq!(decode_verified::<DeltaBatch>(&forged, &keys), Err(ProtocolError::BadSignature { kind: "delta" }));
    // A key id of the wrong length.
    let forged = raw_envelope(1, "delta", &envelope.body, envelope.sig.as_deref(), Some(b"abc"));
    assert_eq!(
        decode_verified::<DeltaBatch>(&forged, &keys),
        Err(ProtocolError::UnknownKey { kind: "delta", key: "616263".into() })
    );
    // No keys pinned at all.
    let good = encode_signed(&remove_batch(3, 4), &central).unwrap();
    assert!(matches!(
        decode_verified::<DeltaBatch>(&good, &TrustedKeys::default()),
        Err(ProtocolError::UnknownKey { .. })
    ));
}

#[test]
fn either_of_two_pinned_keys_verifies_during_rotation() {
    let old = key(1);
    let new = key(2);
    let keys = TrustedKeys::new([old.public_key(), new.public_key()]);
    for key in [&old, &new] {
        let bytes = encode_signed(&remove_batch(3, 4), key).unwrap();
        assert_eq!(decode_verified::<DeltaBatch>(&bytes, &keys).unwrap(), remove_batch(3, 4));
    }
}

#[test]
fn a_signature_made_for_another_kind_does_not_verify() {
    let key = key(1);
    let keys = trusting(&key);
    let down = DownMessage { device: device(), sent_at: 5, body: Down::AuditAck { epoch: 3, up_to_seq: 1_000 } };
    let mut body = Vec::new();
    ciborium::into_writer(&down, &mut body).unwrap();
    // A valid down body, signed as if it were a delta, relabelled as down.
    let as_delta = parts(&seal_unchecked(Kind::Delta, &body, Some(SealKey::Central(&key))).unwrap());
    let relabelled = raw_envelope(1, "down", &as_delta.body, as_delta.sig.as_deref(), as_delta.key.as_deref());
    assert_eq!(decode_verified::<DownMessage>(&relabelled, &keys), Err(ProtocolError::BadSignature { kind: "down" }));
    // The same body signed as down passes.
    let proper = seal_unchecked(Kind::Down, &body, Some(SealKey::Central(&key))).unwrap();
    assert_eq!(decode_verified::<DownMessage>(&proper, &keys).unwrap(), down);
}

#[test]
fn a_down_message_for_one_device_cannot_be_readdressed() {
    let key = key(1);
    let keys = trusting(&key);
    let down = DownMessage { device: device(), sent_at: 5, body: Down::Command { id: 9, command: Command::Wipe } };
    let good = parts(&encode_signed(&down, &key).unwrap());
    let other = DownMessage { device: DeviceId::new("kiosk-2").unwrap(), ..down };
    let mut body = Vec::new();
    ciborium::into_writer(&other, &mut body).unwrap();
    let forged = raw_envelope(1, "down", &body, good.sig.as_deref(), good.key.as_deref());
    assert_eq!(decode_verified::<DownMessage>(&forged, &keys), Err(ProtocolError::BadSignature { kind: "down" }));
}

#[test]
fn every_kind_needs_a_signature_by_its_own_signer() {
    let key = key(1);
    let keys = trusting(&key);
    let mut body = Vec::new();
    ciborium::into_writer(&remove_batch(0, 1), &mut body).unwrap();
    let unsigned = seal_unchecked(Kind::Delta, &body, None).unwrap();
    assert_eq!(decode_verified::<DeltaBatch>(&unsigned, &keys), Err(ProtocolError::Unsigned { kind: "delta" }));
    let half = raw_envelope(1, "delta", &body, Some(&[0; 64]), None);
    assert_eq!(decode_verified::<DeltaBatch>(&half, &keys), Err(ProtocolError::Unsigned { kind: "delta" }));

    let device = device_key();
    let public = device.public_key();
    let mut body = Vec::new();
    ciborium::into_writer(&resync_request(), &mut body).unwrap();
    let unsigned_up = seal_unchecked(Kind::Up, &body, None).unwrap();
    assert_eq!(decode_device_verified::<UpMessage>(&unsigned_up, &public), Err(ProtocolError::Unsigned { kind: "up" }));
    // Signed by the central key, or by another device: not this device's word.
    let central_up = seal_unchecked(Kind::Up, &body, Some(SealKey::Central(&key))).unwrap();
    assert!(matches!(
        decode_device_verified::<UpMessage>(&central_up, &public),
        Err(ProtocolError::UnknownKey { kind: "up", .. })
    ));
    let other = device_key();
    let other_up = encode_device_signed(&resync_request(), &other).unwrap();
    assert!(matches!(
        decode_device_verified::<UpMessage>(&other_up, &public),
        Err(ProtocolError::UnknownKey { kind: "up", .. })
    ));
    // Another device's signature under this device's key id.
    let forged = parts(&other_up);
    let forged = raw_envelope(1, "up", &forged.body, forged.sig.as_deref(), Some(&device.key_id().0));
    assert_eq!(decode_device_verified::<UpMessage>(&forged, &public), Err(ProtocolError::BadSignature { kind: "up" }));
    // A flipped bit in the body.
    let good = parts(&encode_device_signed(&resync_request(), &device).unwrap());
    let mut body = good.body.clone();
    let last = body.len() - 1;
    body[last] ^= 0x01;
    let flipped = raw_envelope(1, "up", &body, good.sig.as_deref(), good.key.as_deref());
    assert_eq!(decode_device_verified::<UpMessage>(&flipped, &public), Err(ProtocolError::BadSignature { kind: "up" }));

    assert!(matches!(encode_device_signed(&remove_batch(0, 1), &device), Err(ProtocolError::WrongSigner { .. })));
    assert!(matches!(encode_signed(&resync_request(), &key), Err(ProtocolError::WrongSigner { .. })));
    assert!(matches!(decode_verified::<UpMessage>(&other_up, &keys), Err(ProtocolError::WrongSigner { .. })));
}

#[test]
fn a_device_public_key_must_be_an_uncompressed_p256_point() {
    assert!(DevicePublicKey::from_point(&[4; 64]).is_err());
    assert!(DevicePublicKey::from_point(&[2; 65]).is_err());
    let key = device_key();
    let public = DevicePublicKey::from_point(key.public_key().as_bytes()).unwrap();
    assert_eq!(public.key_id(), key.key_id());
}

#[test]
fn a_signed_but_invalid_message_is_refused_after_verification() {
    let key = key(1);
    let keys = trusting(&key);
    for (base, seq, ops) in [(4, 4, 1), (5, 4, 1), (0, 1, 0)] {
        let batch =
            DeltaBatch { ops: remove_batch(0, 1).ops.into_iter().take(ops).collect(), ..remove_batch(base, seq) };
        let mut body = Vec::new();
        ciborium::into_writer(&batch, &mut body).unwrap();
        let bytes = seal_unchecked(Kind::Delta, &body, Some(SealKey::Central(&key))).unwrap();
        assert!(
            matches!(decode_verified::<DeltaBatch>(&bytes, &keys), Err(ProtocolError::Invalid { kind: "delta", .. })),
            "{base} {seq} {ops}"
        );
        assert!(matches!(encode_signed(&batch, &key), Err(ProtocolError::Invalid { kind: "delta", .. })));
    }
}

#[test]
fn semantic_limits_are_enforced() {
    let record = |name: &str, from, until| IdentityRecord {
        id: IdentityId::new("p-1").unwrap(),
        name: name.into(),
        valid_from: from,
        valid_until: until,
        version: 1,
        offline_access: false,
    };
    let template = |model: &str, len| TemplateRecord { model_id: model.into(), vector: vec![0; len] };
    let upsert =
        |identity, templates| DeltaBatch { ops: vec![DeltaOp::Upsert { identity, templates }], ..remove_batch(0, 1) };
    let good = upsert(record("Ada", Some(1), Some(2)), vec![template("m", 512)]);
    assert_eq!(good.validate(), Ok(()));
    for bad in [
        upsert(record(&"n".repeat(MAX_NAME_BYTES + 1), None, None), vec![]),
        upsert(record("Ada", Some(2), Some(2)), vec![]),
        upsert(record("Ada", None, None), vec![template("", 4)]),
        upsert(record("Ada", None, None), vec![template(&"m".repeat(65), 4)]),
        upsert(record("Ada", None, None), vec![template("m", 0)]),
        upsert(record("Ada", None, None), vec![template("m", 6)]),
        upsert(record("Ada", None, None), vec![template("m", MAX_TEMPLATE_BYTES + 4)]),
        upsert(record("Ada", None, None), vec![template("m", 4); MAX_TEMPLATES_PER_IDENTITY + 1]),
        DeltaBatch { ops: vec![remove_batch(0, 1).ops[0].clone(); MAX_DELTA_OPS + 1], ..remove_batch(0, 1) },
        DeltaBatch { epoch: 0, ..remove_batch(0, 1) },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn a_public_key_of_the_wrong_length_is_refused() {
    assert_eq!(PublicKey::from_bytes(&[0; 31]), Err(crate::signing::KeyError::BadPublicKey(31)));
    let key = key(3);
    let public = PublicKey::from_bytes(key.public_key().as_bytes()).unwrap();
    assert_eq!(public.key_id(), key.key_id());
}
