//! A sequence of arbitrary messages (raw or as signed bodies) and ticks fed
//! to a device machine and a server machine: nothing panics, and the device
//! never asks to apply anything but a batch at its applied seq.
#![no_main]

use std::collections::VecDeque;
use std::sync::LazyLock;

use facegate_protocol::sync::device::{DeviceAction, DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo};
use facegate_protocol::sync::server::{ServerConfig, ServerInput, ServerSync};
use facegate_protocol::{DeviceId, DeviceSigningKey, Kind, ShardId, ShardProgress, SigningKey, TrustedKeys, seal_unchecked, topics};
use libfuzzer_sys::fuzz_target;

mod common;

static KEY: LazyLock<(SigningKey, TrustedKeys)> = LazyLock::new(|| (common::key(), common::keys()));

fuzz_target!(|data: &[u8]| {
    let (key, keys) = &*KEY;
    let device = DeviceId::new("kiosk-1").unwrap();
    let shard = ShardId::new("lobby").unwrap();
    let state = DeviceState { shards: vec![ShardProgress { shard: shard.clone(), seq: 0 }], epoch: 1, ..DeviceState::default() };
    let status = StatusInfo { model_id: None, version: "0".into(), health: "ok".into() };
    let signer = DeviceSigningKey::from_pkcs8(&DeviceSigningKey::generate_pkcs8().unwrap()).unwrap();
    let public = common::DEVICE.public_key();
    let mut kiosk = DeviceSync::new(device.clone(), keys.clone(), signer, DeviceConfig::default(), state, status, 0);
    let mut server = ServerSync::new(common::key(), ServerConfig::default(), 0);
    kiosk.handle(0, DeviceInput::Connected);
    let topics = [
        topics::shard_delta(&shard),
        topics::device_down(&device),
        topics::device_up(&device),
        topics::device_status(&device),
    ];
    let mut applied = 0u64;
    let mut now = 0i64;
    // Messages are separated by 0xf0; a header byte picks topic, form and time step.
    for part in data.split(|&b| b == 0xf0).take(64) {
        let Some((&header, rest)) = part.split_first() else { continue };
        now += i64::from(header & 0x0f) * 1_000;
        let topic = &topics[usize::from(header >> 4) % 4];
        let kind = Kind::ALL[usize::from(header >> 4) % 4];
        let payload = if header & 0x80 != 0 {
            match seal_unchecked(kind, rest, common::seal_key(kind, key)) {
                Ok(bytes) => bytes,
                Err(_) => continue,
            }
        } else {
            rest.to_vec()
        };
        let mut actions: VecDeque<DeviceAction> =
            kiosk.handle(now, DeviceInput::Received { topic, payload: &payload }).into();
        actions.extend(kiosk.handle(now, DeviceInput::Tick));
        while let Some(action) = actions.pop_front() {
            match action {
                DeviceAction::ApplyDelta(batch) => {
                    assert_eq!(batch.base_seq, applied);
                    applied = batch.seq;
                    actions.extend(kiosk.handle(now, DeviceInput::Applied { shard: batch.shard, seq: batch.seq }));
                }
                DeviceAction::ApplySnapshot { shard, seq, .. } => {
                    assert!(seq > applied);
                    applied = seq;
                    actions.extend(kiosk.handle(now, DeviceInput::Applied { shard, seq }));
                }
                _ => {}
            }
        }
        server.handle(now, ServerInput::Received { topic, payload: &payload, key: &public });
    }
});
