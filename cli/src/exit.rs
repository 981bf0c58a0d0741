//! Process exit statuses (sysexits.h), the same in every facegate binary, so
//! systemd units and scripts read them alike.

/// Bad command line.
pub const USAGE: u8 = 64;
/// Input data was unusable (an image with no face, a corrupt file).
pub const DATA: u8 = 65;
/// An input file does not exist or cannot be read.
pub const NO_INPUT: u8 = 66;
/// A required service or resource (MongoDB, the models) is unavailable.
pub const UNAVAILABLE: u8 = 69;
/// An internal error: a bug, or a model that misbehaves.
pub const SOFTWARE: u8 = 70;
/// An operating-system resource (a listening port, a thread) could not be had.
pub const OS_ERROR: u8 = 71;
/// A file, directory or database could not be created or opened (the state
/// directory, the sync PKI, generated configuration).
pub const CANT_CREATE: u8 = 73;
/// Reading, writing or creating a file failed (a full disk, failing storage).
pub const IO_ERROR: u8 = 74;
/// The remote side answered something unusable.
pub const PROTOCOL: u8 = 76;
/// The remote side refused (a used or unknown provisioning token).
pub const NO_PERMISSION: u8 = 77;
/// Bad configuration; systemd must not restart us (`RestartPreventExitStatus=78`).
pub const CONFIG: u8 = 78;
