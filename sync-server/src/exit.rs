//! Process exit statuses (sysexits.h).

/// Bad command line.
pub const USAGE: u8 = 64;
/// Input data was unusable.
pub const DATA: u8 = 65;
/// An input file does not exist or cannot be read.
pub const NO_INPUT: u8 = 66;
/// A required service (MongoDB, the models) is unavailable.
pub const UNAVAILABLE: u8 = 69;
/// An internal error.
pub const SOFTWARE: u8 = 70;
/// An OS resource (a listening port, a thread) could not be had.
pub const OS_ERROR: u8 = 71;
/// A file could not be created (the sync PKI, generated configuration).
pub const CANT_CREATE: u8 = 73;
/// Bad configuration; systemd must not restart us (`RestartPreventExitStatus=78`).
pub const CONFIG: u8 = 78;
