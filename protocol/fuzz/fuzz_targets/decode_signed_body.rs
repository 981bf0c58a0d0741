//! Arbitrary bytes as the *body* of a correctly signed envelope (the first
//! byte picks the kind), so the message parsers behind the signature check
//! are reached: a typed error or a message that re-encodes to itself.
#![no_main]

use std::sync::LazyLock;

use facegate_protocol::{Kind, SigningKey, TrustedKeys, seal_unchecked};
use libfuzzer_sys::fuzz_target;

mod common;

static KEY: LazyLock<(SigningKey, TrustedKeys)> = LazyLock::new(|| (common::key(), common::keys()));

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let kind = Kind::ALL[usize::from(selector) % Kind::ALL.len()];
    let (key, keys) = &*KEY;
    if let Ok(bytes) = seal_unchecked(kind, body, common::seal_key(kind, key)) {
        common::check(kind, &bytes, keys, key);
    }
});
