//! Who may do what on the embedded broker: the same rules as the mosquitto
//! ACL ([`crate::sync::mosquitto::render_acl`]), decided per packet against
//! the devices in the database.
//!
//! - The sync server ([`SERVER_IDENTITY`]) may publish, subscribe and read
//!   anything under `facegate/`, shared subscriptions (`$share/{group}/…`)
//!   included.
//! - An active device may publish only on its own `up` and `status` topics,
//!   subscribe only to its own `down` topic and to the `delta` topics of the
//!   shards it is assigned *now* (exact topics: no wildcard, no shared
//!   subscription), and is delivered nothing else.
//! - A pending, revoked or unknown device may do nothing (not even connect).

use std::collections::{BTreeSet, HashMap};

use facegate_protocol::topics::ROOT;

use crate::store::{DeviceDoc, DeviceState};
use crate::sync::pki::SERVER_IDENTITY;

/// Who is at the other end of a connection, from its certificate's CN.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The sync server's own certificate (every replica's).
    Server,
    /// A device: its certificate's CN is its id.
    Device(String),
}

impl Identity {
    pub fn from_common_name(common_name: &str) -> Self {
        if common_name == SERVER_IDENTITY { Self::Server } else { Self::Device(common_name.to_string()) }
    }

    /// The certificate's CN.
    pub fn name(&self) -> &str {
        match self {
            Self::Server => SERVER_IDENTITY,
            Self::Device(id) => id,
        }
    }
}

/// One device's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAccess {
    /// Provisioned and not revoked.
    pub active: bool,
    /// The groups (shards) the device serves.
    pub shards: BTreeSet<String>,
}

/// The devices and their shards, as last read from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    devices: HashMap<String, DeviceAccess>,
}

impl Acl {
    pub fn from_devices(devices: &[DeviceDoc]) -> Self {
        let devices = devices
            .iter()
            .map(|d| {
                let access =
                    DeviceAccess { active: d.state == DeviceState::Active, shards: d.groups.iter().cloned().collect() };
                (d.id.clone(), access)
            })
            .collect();
        Self { devices }
    }

    /// This ACL with `device`'s entry replaced by what the database says now.
    pub fn with_device(&self, device: &DeviceDoc) -> Self {
        let mut acl = self.clone();
        let single = Self::from_devices(std::slice::from_ref(device));
        acl.devices.extend(single.devices);
        acl
    }

    /// An ACL of the given devices (tests).
    pub fn of(devices: impl IntoIterator<Item = (String, DeviceAccess)>) -> Self {
        Self { devices: devices.into_iter().collect() }
    }

    fn active_device<'a>(&'a self, identity: &'a Identity) -> Option<(&'a str, &'a DeviceAccess)> {
        match identity {
            Identity::Server => None,
            Identity::Device(id) => self.devices.get(id).filter(|d| d.active).map(|d| (id.as_str(), d)),
        }
    }

    /// Whether `identity` may hold a connection at all.
    pub fn may_connect(&self, identity: &Identity) -> bool {
        matches!(identity, Identity::Server) || self.active_device(identity).is_some()
    }

    /// Whether `identity` may publish on `topic` (a topic name, not a filter).
    pub fn may_publish(&self, identity: &Identity, topic: &str) -> bool {
        if topic.contains(['+', '#']) {
            return false;
        }
        match identity {
            Identity::Server => under_root(topic),
            Identity::Device(_) => self.active_device(identity).is_some_and(|(id, _)| {
                topic == format!("{ROOT}/device/{id}/up") || topic == format!("{ROOT}/device/{id}/status")
            }),
        }
    }

    /// Whether `identity` may subscribe to `filter`.
    pub fn may_subscribe(&self, identity: &Identity, filter: &str) -> bool {
        match identity {
            Identity::Server => {
                let filter = match filter.strip_prefix("$share/") {
                    Some(shared) => match shared.split_once('/') {
                        Some((group, rest)) if !group.is_empty() && !group.contains(['+', '#']) => rest,
                        _ => return false,
                    },
                    None => filter,
                };
                under_root(filter)
            }
            Identity::Device(_) => !filter.contains(['+', '#']) && self.may_read(identity, filter),
        }
    }

    /// Whether a message on `topic` may be delivered to `identity` now.
    pub fn may_read(&self, identity: &Identity, topic: &str) -> bool {
        match identity {
            Identity::Server => under_root(topic),
            Identity::Device(_) => self.active_device(identity).is_some_and(|(id, access)| {
                if topic == format!("{ROOT}/device/{id}/down") {
                    return true;
                }
                topic
                    .strip_prefix(ROOT)
                    .and_then(|t| t.strip_prefix("/shard/"))
                    .and_then(|t| t.strip_suffix("/delta"))
                    .is_some_and(|shard| access.shards.contains(shard))
            }),
        }
    }
}

/// `facegate/` and below (the server's whole tree).
fn under_root(topic: &str) -> bool {
    topic.strip_prefix("facegate/").is_some_and(|rest| !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl() -> Acl {
        let device =
            |active, shards: &[&str]| DeviceAccess { active, shards: shards.iter().map(|s| s.to_string()).collect() };
        Acl::of([
            ("door-1".to_string(), device(true, &["lobby"])),
            ("door-3".to_string(), device(true, &["lab"])),
            ("gone".to_string(), device(false, &["lobby"])),
        ])
    }

    fn door(id: &str) -> Identity {
        Identity::Device(id.into())
    }

    #[test]
    fn a_device_publishes_only_on_its_own_up_and_status_topics() {
        let acl = acl();
        assert!(acl.may_publish(&door("door-1"), "facegate/v1/device/door-1/up"));
        assert!(acl.may_publish(&door("door-1"), "facegate/v1/device/door-1/status"));
        for topic in [
            "facegate/v1/device/door-3/up",
            "facegate/v1/device/door-1/down",
            "facegate/v1/shard/lobby/delta",
            "facegate/v1/device/door-1/up/x",
            "facegate/v1/device/+/up",
        ] {
            assert!(!acl.may_publish(&door("door-1"), topic), "{topic}");
        }
        assert!(!acl.may_publish(&door("gone"), "facegate/v1/device/gone/up"), "a revoked device published");
        assert!(!acl.may_publish(&door("stranger"), "facegate/v1/device/stranger/up"), "an unknown device published");
    }

    #[test]
    fn a_device_subscribes_only_to_its_down_topic_and_its_shards_without_wildcards() {
        let acl = acl();
        let d = door("door-3");
        assert!(acl.may_subscribe(&d, "facegate/v1/device/door-3/down"));
        assert!(acl.may_subscribe(&d, "facegate/v1/shard/lab/delta"));
        for filter in [
            "facegate/v1/#",
            "#",
            "facegate/v1/shard/+/delta",
            "facegate/v1/shard/lobby/delta",
            "facegate/v1/device/door-1/down",
            "facegate/v1/device/+/down",
            "$share/g/facegate/v1/device/door-3/down",
            "facegate/v1/shard/lab/delta/#",
        ] {
            assert!(!acl.may_subscribe(&d, filter), "{filter}");
        }
        assert!(!acl.may_subscribe(&door("gone"), "facegate/v1/device/gone/down"));
    }

    #[test]
    fn deliveries_follow_the_current_assignment() {
        let acl = acl();
        assert!(acl.may_read(&door("door-1"), "facegate/v1/shard/lobby/delta"));
        assert!(!acl.may_read(&door("door-3"), "facegate/v1/shard/lobby/delta"));
        assert!(!acl.may_read(&door("door-3"), "facegate/v1/device/door-1/down"));
        assert!(!acl.may_read(&door("gone"), "facegate/v1/device/gone/down"));
    }

    #[test]
    fn the_server_may_do_anything_under_facegate_but_not_beyond() {
        let acl = acl();
        let s = Identity::from_common_name(SERVER_IDENTITY);
        assert_eq!(s, Identity::Server);
        assert!(acl.may_connect(&s));
        assert!(acl.may_subscribe(&s, "$share/facegate/facegate/v1/device/+/up"));
        assert!(acl.may_subscribe(&s, "facegate/v1/device/+/status"));
        assert!(acl.may_publish(&s, "facegate/v1/shard/lobby/delta"));
        assert!(acl.may_read(&s, "facegate/v1/device/door-1/up"));
        assert!(!acl.may_subscribe(&s, "#"));
        assert!(!acl.may_subscribe(&s, "$share//facegate/#"));
        assert!(!acl.may_publish(&s, "other/topic"));
        assert!(!acl.may_publish(&s, "facegate/v1/device/+/down"));
    }

    #[test]
    fn only_active_devices_and_the_server_connect() {
        let acl = acl();
        assert!(acl.may_connect(&door("door-1")));
        assert!(!acl.may_connect(&door("gone")));
        assert!(!acl.may_connect(&door("stranger")));
        assert!(!Acl::default().may_connect(&door("door-1")));
    }
}
