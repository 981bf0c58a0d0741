//! Arbitrary bytes as a `down` message: a typed error or a message that
//! re-encodes to itself; never a panic.
#![no_main]

use std::sync::LazyLock;

use facegate_protocol::{Kind, SigningKey, TrustedKeys};
use libfuzzer_sys::fuzz_target;

mod common;

static KEY: LazyLock<(SigningKey, TrustedKeys)> = LazyLock::new(|| (common::key(), common::keys()));

fuzz_target!(|data: &[u8]| {
    common::check(Kind::Down, data, &KEY.1, &KEY.0);
});
