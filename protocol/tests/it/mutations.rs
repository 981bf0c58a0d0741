//! Mutated valid messages through every decoder and both state machines:
//! the stable-Rust twin of the `cargo fuzz` targets (protocol/fuzz), so CI
//! exercises the same paths. Whatever the bytes, the result is a typed error
//! or a message that survives re-encoding; nothing panics.

use facegate_protocol::sync::device::{DeviceConfig, DeviceInput, DeviceState, DeviceSync, StatusInfo};
use facegate_protocol::sync::server::{ServerConfig, ServerInput, ServerSync};
use facegate_protocol::{
    DeltaBatch, DeviceId, DeviceSigningKey, DeviceStatus, DownMessage, Kind, SealKey, ShardId, ShardProgress, Signer,
    SigningKey, TrustedKeys, UpMessage, decode_verified, encode_signed, seal_unchecked, topics,
};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use crate::strategies::{
    central_key, decode_up, delta_batch, device_key, device_status, down_message, encode_up, up_message,
};

/// The key that signs `kind` (mutated bodies are re-signed so they reach
/// the body decoders).
fn seal_key<'a>(kind: Kind, central: &'a SigningKey, device: &'a DeviceSigningKey) -> Option<SealKey<'a>> {
    Some(match kind.signer() {
        Signer::Central => SealKey::Central(central),
        Signer::Device => SealKey::Device(device),
    })
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn keys() -> TrustedKeys {
    TrustedKeys::new([central_key().public_key()])
}

#[derive(Default, Debug)]
struct Tally {
    inputs: usize,
    accepted: usize,
}

/// Every decoder on `bytes`; an accepted message must re-encode to itself.
fn decode_all(bytes: &[u8], tally: &mut Tally) {
    let keys = keys();
    tally.inputs += 1;
    if let Ok(m) = decode_verified::<DeltaBatch>(bytes, &keys) {
        tally.accepted += 1;
        let again = encode_signed(&m, &central_key()).unwrap();
        assert_eq!(decode_verified::<DeltaBatch>(&again, &keys).unwrap(), m);
    }
    if let Ok(m) = decode_verified::<DownMessage>(bytes, &keys) {
        tally.accepted += 1;
        let again = encode_signed(&m, &central_key()).unwrap();
        assert_eq!(decode_verified::<DownMessage>(&again, &keys).unwrap(), m);
    }
    if let Ok(m) = decode_up::<UpMessage>(bytes) {
        tally.accepted += 1;
        assert_eq!(decode_up::<UpMessage>(&encode_up(&m).unwrap()).unwrap(), m);
    }
    if let Ok(m) = decode_up::<DeviceStatus>(bytes) {
        tally.accepted += 1;
        assert_eq!(decode_up::<DeviceStatus>(&encode_up(&m).unwrap()).unwrap(), m);
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = [0x00, 0xff, 0x7f, 0x80, 0x1b, 0x5b, 0x9f, 0xbf][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                bytes.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                bytes.remove(rng.below(len));
            }
            4 => bytes.truncate(rng.below(len + 1)),
            5 if len > 0 => {
                let start = rng.below(len);
                let end = (start + 1 + rng.below(16)).min(len);
                let chunk = bytes[start..end].to_vec();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, chunk);
            }
            _ if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                bytes.truncate(cut);
                bytes.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    bytes
}

fn sample<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy.new_tree(runner).unwrap().current()
}

/// Valid messages of every kind, encoded, with their kind and CBOR body.
fn corpus() -> Vec<(Kind, Vec<u8>, Vec<u8>)> {
    let mut runner = TestRunner::deterministic();
    let key = central_key();
    let body = |value: &dyn erased::Encode| value.body();
    let mut out = Vec::new();
    for _ in 0..12 {
        let m = sample(&mut runner, &delta_batch());
        out.push((Kind::Delta, encode_signed(&m, &key).unwrap(), body(&m)));
        let m = sample(&mut runner, &down_message());
        out.push((Kind::Down, encode_signed(&m, &key).unwrap(), body(&m)));
        let m = sample(&mut runner, &up_message());
        out.push((Kind::Up, encode_up(&m).unwrap(), body(&m)));
        let m = sample(&mut runner, &device_status());
        out.push((Kind::Status, encode_up(&m).unwrap(), body(&m)));
    }
    out
}

mod erased {
    pub(crate) trait Encode {
        fn body(&self) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn body(&self) -> Vec<u8> {
            let mut out = Vec::new();
            ciborium::into_writer(self, &mut out).unwrap();
            out
        }
    }
}

#[test]
fn mutated_envelopes_are_refused_or_sound() {
    let corpus = corpus();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tally = Tally::default();
    for (i, (_, bytes, _)) in corpus.iter().enumerate() {
        decode_all(bytes, &mut tally);
        // Every single-bit flip of the first 64 bytes (the envelope header).
        for position in 0..bytes.len().min(64) {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[position] ^= 1 << bit;
                decode_all(&flipped, &mut tally);
            }
        }
        let other = &corpus[(i + 1) % corpus.len()].1;
        for _ in 0..300 {
            decode_all(&mutate(&mut rng, bytes, other), &mut tally);
        }
    }
    // The originals at least were accepted, each by exactly one decoder.
    assert!(tally.accepted >= corpus.len(), "{tally:?}");
    assert!(tally.inputs > 30_000, "{tally:?}");
}

#[test]
fn mutated_bodies_behind_a_good_signature_are_refused_or_sound() {
    let key = central_key();
    let device = device_key();
    let corpus = corpus();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut tally = Tally::default();
    for (i, (kind, _, body)) in corpus.iter().enumerate() {
        let other = &corpus[(i + 3) % corpus.len()].2;
        for _ in 0..300 {
            let mutated = mutate(&mut rng, body, other);
            let signed = seal_unchecked(*kind, &mutated, seal_key(*kind, &key, &device)).unwrap();
            decode_all(&signed, &mut tally);
        }
    }
    // Some mutations (a changed digit or letter) still make valid messages.
    assert!(tally.accepted > 50, "{tally:?}");
}

#[test]
fn mutated_messages_never_panic_either_state_machine() {
    let key = central_key();
    let signer = device_key();
    let corpus = corpus();
    let device = DeviceId::new("kiosk-1").unwrap();
    let shard = ShardId::new("lobby").unwrap();
    let state = DeviceState { shards: vec![ShardProgress { shard: shard.clone(), seq: 0 }], ..DeviceState::default() };
    let status = StatusInfo { model_id: None, version: "0".into(), health: "ok".into() };
    let mut kiosk = DeviceSync::new(device.clone(), keys(), device_key(), DeviceConfig::default(), state, status, 0);
    kiosk.handle(0, DeviceInput::Connected);
    let mut server = ServerSync::new(central_key(), ServerConfig::default(), 0);
    let device_topics = [topics::shard_delta(&shard), topics::device_down(&device)];
    let server_topics = [topics::device_up(&device), topics::device_status(&device)];
    let mut rng = Rng(42);
    for (i, (kind, bytes, body)) in corpus.iter().enumerate() {
        let other = &corpus[(i + 1) % corpus.len()].1;
        for n in 0..200 {
            let payload = if n % 2 == 0 {
                mutate(&mut rng, bytes, other)
            } else {
                let mutated = mutate(&mut rng, body, other);
                seal_unchecked(*kind, &mutated, seal_key(*kind, &key, &signer)).unwrap()
            };
            let now = (i * 1_000 + n) as i64;
            let topic = &device_topics[n % 2];
            kiosk.handle(now, DeviceInput::Received { topic, payload: &payload });
            let topic = &server_topics[n % 2];
            server.handle(now, ServerInput::Received { topic, payload: &payload, key: &device_key().public_key() });
        }
        kiosk.handle((i * 1_000) as i64, DeviceInput::Tick);
    }
}

/// Seeds for the fuzz targets: `cargo test -p facegate-protocol --test it --
/// --ignored write_fuzz_seeds` writes valid messages of every kind under
/// `protocol/fuzz/seeds/{target}/`.
#[test]
#[ignore = "writes protocol/fuzz/seeds; run by hand when message types change"]
fn write_fuzz_seeds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let write = |target: &str, name: String, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut sync = Vec::new();
    for (i, (kind, bytes, body)) in corpus().into_iter().enumerate() {
        let target = format!("decode_{}", kind.as_str());
        write(&target, format!("{i:02}"), &bytes);
        let selector = Kind::ALL.iter().position(|k| *k == kind).unwrap() as u8;
        write("decode_signed_body", format!("{i:02}"), &[&[selector][..], &body].concat());
        // sync_machines: header (topic index in the high nibble, signed-body
        // form in bit 7 is not used here: raw envelopes), payload, separator.
        sync.push(selector << 4 | 1);
        sync.extend_from_slice(&bytes);
        sync.push(0xf0);
    }
    write("sync_machines", "all".into(), &sync);
}
