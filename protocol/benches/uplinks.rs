//! Guards the centre's cost of authenticated uplinks and freshness proofs:
//! verifying a device-signed (ECDSA P-256) freshness request and status, and
//! signing a proof (Ed25519), per message.
#![allow(clippy::unwrap_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use facegate_protocol::{
    Assignment, DeviceId, DeviceSigningKey, DeviceStatus, Down, DownMessage, FreshnessProof, ShardId, ShardProgress,
    SigningKey, Up, UpMessage, decode_device_verified, encode_device_signed, encode_signed,
};

fn uplinks(c: &mut Criterion) {
    let device_key = DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = device_key.public_key();
    let device = DeviceId::new("door-0001").unwrap();
    let shards: Vec<ShardId> = ["lobby", "lab"].iter().map(|s| ShardId::new(*s).unwrap()).collect();
    let request = encode_device_signed(
        &UpMessage { device: device.clone(), sent_at: 1_700_000_000_000, body: Up::FreshnessRequest { nonce: 7 } },
        &device_key,
    )
    .unwrap();
    let status = encode_device_signed(
        &DeviceStatus {
            device: device.clone(),
            online: true,
            at: 1_700_000_000_000,
            shards: shards.iter().map(|s| ShardProgress { shard: s.clone(), seq: 1_234 }).collect(),
            model_id: Some("dlib-resnet29-v1".into()),
            version: "0.1.0".into(),
            health: "ok".into(),
            outbox_depth: 0,
            last_command: 3,
            stale: false,
            assignment: 2,
            trusted_key: Some("fe812c12f3ab4ce6".into()),
        },
        &device_key,
    )
    .unwrap();
    let central = SigningKey::from_seed(&[3; 32]).unwrap();
    let proof = DownMessage {
        device,
        sent_at: 1_700_000_000_000,
        body: Down::Freshness(FreshnessProof {
            nonce: 7,
            epoch: 11,
            assignment: Assignment { version: 2, shards: shards.clone() },
            heads: shards.iter().map(|s| ShardProgress { shard: s.clone(), seq: 1_234 }).collect(),
        }),
    };
    let signed_proof = encode_signed(&proof, &central).unwrap();
    println!(
        "sizes: freshness request {} B, status {} B, proof (two shards) {} B",
        request.len(),
        status.len(),
        signed_proof.len()
    );
    c.bench_function("verify_freshness_request", |b| {
        b.iter(|| decode_device_verified::<UpMessage>(&request, &public).unwrap())
    });
    c.bench_function("verify_status", |b| b.iter(|| decode_device_verified::<DeviceStatus>(&status, &public).unwrap()));
    c.bench_function("sign_freshness_proof", |b| b.iter(|| encode_signed(&proof, &central).unwrap()));
}

criterion_group!(benches, uplinks);
criterion_main!(benches);
