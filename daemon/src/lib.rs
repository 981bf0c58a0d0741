//! The facegate kiosk daemon: camera frames in, door decisions out.
#![forbid(unsafe_code)]

pub mod bench;
pub mod evaluation;
pub mod exit;
pub mod inspect;
